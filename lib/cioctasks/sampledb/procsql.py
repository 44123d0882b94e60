"""The SQL that stands in for each CIOC stored procedure on the sample (SQLite) database.

Each constant is a tuple of statements run in order on one connection (``db.Database.call``);
``:Name`` takes the argument of that name, and each statement that returns rows is one
result set, with the columns and column order of CIOC's procedure. Every statement follows
the T-SQL of the procedure of the same name in OpenCIOC/onlineresources
(``python/sql/core/Stored Procedures``); where the SQL differs in form (SQLite has no
``FOR XML`` and no table variables) the comment says what it stands for.

Per-culture columns are built as the text SQL Server's ``FOR XML PATH('DESC'),
ROOT('DESCS'), TYPE`` produces: an attribute is left out when its value is NULL, ``&``,
``<``, ``>`` and ``"`` are entity-escaped, carriage return, line feed and tab become
``&#xD;``, ``&#xA;`` and ``&#x9;``, other characters (accents) are kept as they are, and a
query with no rows gives NULL. Both backends decode that XML with ``procs.decode_culture``.
"""

from cioctasks.procs import SCHEDULE_FLAGS

SCHEDULE = ", ".join(f"vo.{flag}" for flag in SCHEDULE_FLAGS)
PROFILE_SCHEDULE = SCHEDULE.replace("vo.", "vp.")

NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now', 'localtime')"
#: CONVERT(DATETIME, FLOOR(CONVERT(FLOAT, GETDATE()))): today at midnight.
TODAY = "strftime('%Y-%m-%d 00:00:00.000', 'now', 'localtime')"


def xml_escape(expression):
    """SQL for ``expression`` escaped as SQL Server escapes an attribute value."""
    for raw, entity in (("'&'", "&amp;"), ("'<'", "&lt;"), ("'>'", "&gt;"),
                        ("'\"'", "&quot;"), ("char(13)", "&#xD;"), ("char(10)", "&#xA;"),
                        ("char(9)", "&#x9;")):
        expression = f"replace({expression}, {raw}, '{entity}')"
    return expression


def xml_attribute(name, expression):
    """SQL for ` name="value"`, or '' when the value is NULL (FOR XML leaves it out)."""
    return f"""COALESCE(' {name}="' || {xml_escape(f"CAST({expression} AS TEXT)")} || '"', '')"""


def xml_descs(attributes, source, order=("1",)):
    """SQL for ``(SELECT <attributes> FROM <source> ORDER BY <order> FOR XML PATH('DESC'),
    ROOT('DESCS'), TYPE)``: ``attributes`` is [(name, expression)] in the procedure's order,
    ``order`` a list of expressions (selected as columns: SQLite lets a subquery in FROM use
    the outer query's columns there, not in its ORDER BY)."""
    element = " || ".join(xml_attribute(name, expression) for name, expression in attributes)
    keys = ", ".join(f"{expression} AS sort_{number}" for number, expression in enumerate(order))
    by = ", ".join(f"sort_{number}" for number in range(len(order)))
    return f"""(SELECT '<DESCS>' || group_concat(element, '') || '</DESCS>'
                FROM (SELECT '<DESC' || {element} || '/>' AS element, {keys}
                      FROM {source} ORDER BY {by}))"""


def smalldatetime(expression):
    """A datetime rounded to the minute, as SQL Server converts it to smalldatetime
    (29.998 seconds round down, 29.999 up)."""
    return f"strftime('%Y-%m-%d %H:%M:00.000', {expression}, '+30.001 seconds')"


def _org_name_full(btd="btd", bt="bt"):
    """dbo.fn_GBL_DisplayFullOrgName_2 over a description and its base table row."""
    levels = " || ".join(f"COALESCE(', ' || {btd}.ORG_LEVEL_{n}, '')" for n in range(2, 6))
    location = (f"CASE WHEN {btd}.LOCATION_NAME = {btd}.ORG_LEVEL_1 OR ({bt}.DISPLAY_LOCATION_NAME = 0"
                f" AND ({btd}.SERVICE_NAME_LEVEL_1 IS NOT NULL OR {bt}.DISPLAY_ORG_NAME = 0))"
                f" THEN '' ELSE COALESCE(', ' || {btd}.LOCATION_NAME, '') END")
    services = " || ".join(
        f"CASE WHEN {btd}.SERVICE_NAME_LEVEL_{n} = {btd}.ORG_LEVEL_1"
        f" OR {btd}.LOCATION_NAME = {btd}.SERVICE_NAME_LEVEL_{n} THEN ''"
        f" ELSE COALESCE(', ' || {btd}.SERVICE_NAME_LEVEL_{n}, '') END" for n in (1, 2))
    return f"(COALESCE({btd}.ORG_LEVEL_1, '') || {levels} || {location} || {services})"


def _move_accumulator(table, key):
    """sp_CIC_Stats_RSN_i_FromAccumulator / sp_VOL_Stats_OPID_i_FromAccumulator: move the
    accumulated rows into the stats table in batches that commit one by one (the
    procedure moves 10,000 rows a transaction; the sample moves them in one)."""
    columns = f"MemberID, AccessDate, IPAddress, {key}, LangID, User_ID, ViewType, API"
    number = "NUM" if key == "RSN" else "VNUM"
    return (
        "BEGIN",
        f"""INSERT INTO {table} ({columns}, {number})
            SELECT {columns}, {number} FROM {table}_Accumulator ORDER BY Log_ID""",
        f"DELETE FROM {table}_Accumulator",
        "COMMIT",
    )


def _usage_cache(cache, stats, key, base, number):
    """sp_CIC_Stats_RSN_u_Cache / sp_VOL_Stats_OPID_u_Cache: the usage count of each record
    per member (all of it, and by signed-in users: _S; the rest public: _P)."""
    counts = f"""SELECT st.MemberID, b.{number}, COUNT(st.{key}) AS CMP_USAGE_COUNT,
                        COUNT(st.User_ID) AS CMP_USAGE_COUNT_S
                 FROM {base} b JOIN {stats} st ON st.{key} = b.{key}
                 GROUP BY st.MemberID, b.{number}"""
    return (
        f"""INSERT INTO {cache} ({number}, MemberID, CMP_USAGE_COUNT_DATE, CMP_USAGE_COUNT,
                                 CMP_USAGE_COUNT_P, CMP_USAGE_COUNT_S)
            SELECT v.{number}, v.MemberID, {smalldatetime(NOW)}, v.CMP_USAGE_COUNT,
                   v.CMP_USAGE_COUNT - v.CMP_USAGE_COUNT_S, v.CMP_USAGE_COUNT_S
            FROM ({counts}) v
            WHERE NOT EXISTS (SELECT 1 FROM {cache} stc
                              WHERE stc.MemberID = v.MemberID AND stc.{number} = v.{number})""",
        f"""UPDATE {cache} SET
                CMP_USAGE_COUNT_DATE = {smalldatetime(NOW)},
                CMP_USAGE_COUNT = (SELECT v.CMP_USAGE_COUNT FROM ({counts}) v
                                   WHERE v.MemberID = {cache}.MemberID
                                     AND v.{number} = {cache}.{number}),
                CMP_USAGE_COUNT_S = (SELECT v.CMP_USAGE_COUNT_S FROM ({counts}) v
                                     WHERE v.MemberID = {cache}.MemberID
                                       AND v.{number} = {cache}.{number})
            WHERE CMP_USAGE_COUNT_DATE <> {smalldatetime(NOW)}
              AND EXISTS (SELECT 1 FROM {stats} st JOIN {base} b ON st.{key} = b.{key}
                          WHERE b.{number} = {cache}.{number}
                            AND st.MemberID = {cache}.MemberID)""",
        f"""UPDATE {cache} SET CMP_USAGE_COUNT_P = CMP_USAGE_COUNT - CMP_USAGE_COUNT_S
            WHERE CMP_USAGE_COUNT_DATE = {smalldatetime(NOW)}""",
    )


# sp_STP_Nightly_Tasks, step by step as the procedures it EXECs. On SQL Server those
# procedures commit their own batches; the sample commits each step (db.call runs this
# procedure with autocommit), so a failing later step keeps what the earlier ones did.
NIGHTLY_TASKS = (
    *_move_accumulator("CIC_Stats_RSN", "RSN"),
    *_usage_cache("GBL_BaseTable_StatsCache", "CIC_Stats_RSN", "RSN", "GBL_BaseTable", "NUM"),
    *_move_accumulator("VOL_Stats_OPID", "OP_ID"),
    *_usage_cache("VOL_Opportunity_StatsCache", "VOL_Stats_OPID", "OP_ID", "VOL_Opportunity",
                  "VNUM"),
    # sp_GBL_SharingProfile_Nightly
    f"""UPDATE GBL_SharingProfile SET Active = 0
        WHERE RevokedDate IS NOT NULL AND RevokedDate <= {NOW}""",
    """DELETE FROM GBL_BT_SharingProfile WHERE ProfileID IN (
           SELECT ProfileID FROM GBL_SharingProfile
           WHERE Active = 0 AND RevokedDate IS NOT NULL)""",
    f"""DELETE FROM GBL_BT_SharingProfile WHERE BT_ShareProfile_ID IN (
           SELECT BT_ShareProfile_ID FROM GBL_BT_SharingProfile_Revoked
           WHERE RevokedDate <= {NOW})""",
    # The procedure's WHERE reads "cs.MemberID = sp.ShareMemberID AND (revoked profile)
    # OR EXISTS(a revoked share of the position)": AND binds first, kept as it is.
    f"""DELETE FROM VOL_OP_CommunitySet WHERE OP_CS_ID IN (
           SELECT vo.OP_CS_ID FROM VOL_OP_CommunitySet vo
           JOIN VOL_CommunitySet cs ON vo.CommunitySetID = cs.CommunitySetID
           JOIN VOL_OP_SharingProfile ops ON vo.VNUM = ops.VNUM
           JOIN GBL_SharingProfile sp ON ops.ProfileID = sp.ProfileID
           WHERE cs.MemberID = sp.ShareMemberID AND (sp.Active = 0 AND sp.RevokedDate IS NOT NULL)
              OR EXISTS (SELECT 1 FROM VOL_OP_SharingProfile_Revoked r
                         WHERE r.OP_ShareProfile_ID = ops.OP_ShareProfile_ID
                           AND r.RevokedDate <= {NOW}))""",
    """DELETE FROM VOL_OP_SharingProfile WHERE ProfileID IN (
           SELECT ProfileID FROM GBL_SharingProfile
           WHERE Active = 0 AND RevokedDate IS NOT NULL)""",
    f"""DELETE FROM VOL_OP_SharingProfile WHERE OP_ShareProfile_ID IN (
           SELECT OP_ShareProfile_ID FROM VOL_OP_SharingProfile_Revoked
           WHERE RevokedDate <= {NOW})""",
)

# sp_VOL_NUMChanged_l @MODIFIED_DATE smalldatetime: records with a NON_PUBLIC or
# DELETION_DATE history entry after the date, and the agencies owning their positions.
# The opportunity filter is the procedure's own: deletion date null or already past.
_MODIFIED_DATE = smalldatetime(":MODIFIED_DATE")
NUM_CHANGED = (
    f"""WITH records AS (
            SELECT btd.NUM, btd.LangID, {_org_name_full()} AS ORG_NAME_FULL,
                   btd.NON_PUBLIC, btd.DELETION_DATE, vo.RECORD_OWNER,
                   COUNT(DISTINCT vo.VNUM) AS OpportunityCount
            FROM VOL_Opportunity vo
            JOIN VOL_Opportunity_Description vod
                 ON vo.VNUM = vod.VNUM
                    AND (vod.DELETION_DATE IS NULL OR vod.DELETION_DATE < {NOW})
                    AND (vo.DISPLAY_UNTIL IS NULL OR vo.DISPLAY_UNTIL >= {NOW})
            JOIN GBL_BaseTable bt ON bt.NUM = vo.NUM
            JOIN GBL_BaseTable_Description btd
                 ON btd.NUM = bt.NUM
                    AND btd.LangID = COALESCE(
                        (SELECT x.LangID FROM GBL_BaseTable_Description x
                         WHERE x.NUM = btd.NUM AND x.LangID = vod.LangID),
                        (SELECT MIN(x.LangID) FROM GBL_BaseTable_Description x
                         WHERE x.NUM = btd.NUM))
            WHERE EXISTS (SELECT 1 FROM GBL_BaseTable_History h
                          JOIN GBL_FieldOption fo ON h.FieldID = fo.FieldID
                               AND fo.FieldName IN ('NON_PUBLIC', 'DELETION_DATE')
                          WHERE h.NUM = btd.NUM AND h.LangID = btd.LangID
                            AND h.MODIFIED_DATE > {_MODIFIED_DATE})
            GROUP BY btd.NUM, btd.LangID, btd.NON_PUBLIC, btd.DELETION_DATE, vo.RECORD_OWNER)
        SELECT a.UpdateEmailVOL, m.DefaultEmailVOL, m.DefaultEmailNameVOL, r.NUM, r.LangID,
               r.ORG_NAME_FULL, r.NON_PUBLIC, r.DELETION_DATE, r.RECORD_OWNER,
               r.OpportunityCount
        FROM records r
        JOIN GBL_Agency a ON r.RECORD_OWNER = a.AgencyCode
        JOIN STP_Member m ON m.MemberID = a.MemberID
        WHERE a.UpdateEmailVOL IS NOT NULL
        ORDER BY r.RECORD_OWNER, r.ORG_NAME_FULL, r.NUM, r.LangID""",
)

# Every member and whether it uses volunteer profiles (the caller picks).
PROFILE_NOTIFY_ENABLED = ("SELECT MemberID, UseVolunteerProfiles FROM STP_Member",)

# sp_VOL_Profile_Notify @MemberID. The window starts at the member's last notification
# (at least 14 days back, as a date) and ends today at midnight.
_START = """(SELECT CASE WHEN LastVolProfileEmailDate IS NULL
                           OR LastVolProfileEmailDate < date('now', 'localtime', '-14 days')
                      THEN date('now', 'localtime', '-14 days') || ' 00:00:00.000'
                      ELSE LastVolProfileEmailDate END
             FROM STP_Member WHERE MemberID = :MemberID)"""
_MIN_EXPIRY = "date('now', 'localtime', '+5 days') || ' 00:00:00.000'"
_CREATED_IN_WINDOW = f"""(date(vod.CREATED_DATE) || ' 00:00:00.000' >= w.Start
                          AND date(vod.CREATED_DATE) || ' 00:00:00.000' < {TODAY})"""
_UPDATED_IN_WINDOW = f"(vod.UPDATE_DATE >= w.Start AND vod.UPDATE_DATE < {TODAY})"

# dbo.fn_VOL_VNUMToCommSrchList: the position's communities, their children and parents.
_COMMUNITIES = """(SELECT group_concat(CM_ID, ',') FROM (
        SELECT pr.CM_ID FROM VOL_OP_CM pr WHERE pr.VNUM = vo.VNUM
        UNION SELECT cmpl.CM_ID FROM VOL_OP_CM pr
              JOIN GBL_Community_ParentList cmpl ON cmpl.Parent_CM_ID = pr.CM_ID
              WHERE pr.VNUM = vo.VNUM
        UNION SELECT cmpl.Parent_CM_ID FROM VOL_OP_CM pr
              JOIN GBL_Community_ParentList cmpl ON cmpl.CM_ID = pr.CM_ID
              WHERE pr.VNUM = vo.VNUM))"""



def record_in_view(no_deleted):
    """dbo.fn_VOL_RecordInView(vo.VNUM, vwd.ViewType, vwd.LangID, <no_deleted>, GETDATE()):
    its CASE WHEN <any reason to hide> THEN 0 ELSE 1 END, with SQL Server's NULL rules (a
    condition that is NULL does not hide)."""
    deleted = "1 = 1" if no_deleted else "vw.CanSeeDeleted = 0"
    return f"""EXISTS (SELECT 1 FROM VOL_Opportunity_Description vod
                       WHERE vod.VNUM = vo.VNUM AND vod.LangID = vwd.LangID
                         AND CASE WHEN (vod.NON_PUBLIC = 1 AND vw.CanSeeNonPublic = 0)
                                    OR ({deleted} AND vod.DELETION_DATE <= {NOW})
                                    OR (vw.HidePastDueBy IS NOT NULL
                                        AND (vod.UPDATE_SCHEDULE IS NULL
                                             OR julianday({NOW}) - julianday(vod.UPDATE_SCHEDULE)
                                                >= vw.HidePastDueBy))
                                    OR NOT EXISTS (SELECT 1 FROM VOL_OP_CommunitySet cs
                                                   WHERE cs.VNUM = vo.VNUM
                                                     AND cs.CommunitySetID = vw.CommunitySetID)
                                    OR (vo.MemberID <> vw.MemberID AND NOT EXISTS (
                                        SELECT 1 FROM VOL_OP_SharingProfile pr
                                        JOIN GBL_SharingProfile shp ON pr.ProfileID = shp.ProfileID
                                             AND shp.Active = 1
                                             AND (shp.CanUseAnyView = 1 OR EXISTS (
                                                  SELECT 1 FROM GBL_SharingProfile_VOL_View spv
                                                  WHERE spv.ProfileID = shp.ProfileID
                                                    AND spv.ViewType = vw.ViewType))
                                        WHERE pr.VNUM = vo.VNUM
                                          AND pr.ShareMemberID_Cache = vw.MemberID))
                              THEN 0 ELSE 1 END = 1)"""


def view_info(member, no_deleted=False):
    """The ViewInfo column: the member's default volunteer view and the profile views it
    can see that show the position, as (ViewType, AccessURL, Culture), default first."""
    return xml_descs(
        [("ViewType", f"CASE WHEN vw.ViewType = {member}.DefaultViewVOL OR mp.DomainName IS NOT NULL "
                      "THEN NULL ELSE vw.ViewType END"),
         ("AccessURL", f"COALESCE(mp.DomainName, {member}.BaseURLVOL) || COALESCE(mp.PathToStart, '')"),
         ("Culture", "lv.Culture")],
        f"""VOL_View vw
            JOIN VOL_View_Description vwd ON vwd.ViewType = vw.ViewType
            JOIN STP_Language lv ON vwd.LangID = lv.LangID
                 AND EXISTS (SELECT 1 FROM VOL_Opportunity_Description x
                             WHERE x.LangID = vwd.LangID)
            LEFT JOIN (SELECT * FROM GBL_View_DomainMap WHERE SecondaryName = 0) mp
                 ON vw.ViewType = mp.VOLViewType
            WHERE vw.UseProfilesView = 1
              AND (EXISTS (SELECT 1 FROM VOL_View_Recurse vr
                           WHERE vr.ViewType = {member}.DefaultViewVOL AND vr.CanSee = vw.ViewType)
                   OR vw.ViewType = {member}.DefaultViewVOL)
              AND {record_in_view(no_deleted)}""",
        [f"CASE WHEN vw.ViewType = {member}.DefaultViewVOL THEN 0 ELSE 1 END", "vw.ViewType",
         "vwd.LangID"])


_OP_NAME = xml_descs(
    [("POSITION_TITLE", "vod.POSITION_TITLE"), ("Culture", "l.Culture"),
     ("NEWLY_CREATED", f"CASE WHEN {_CREATED_IN_WINDOW} THEN 1 ELSE 0 END"),
     ("CHANGED", f"CASE WHEN {_UPDATED_IN_WINDOW} THEN 1 ELSE 0 END")],
    "VOL_Opportunity_Description vod JOIN STP_Language l ON vod.LangID = l.LangID "
    "WHERE vod.VNUM = vo.VNUM", ["vod.LangID"])

_ORG_NAME = xml_descs(
    [*((f"ORG_LEVEL_{n}", f"btd.ORG_LEVEL_{n}") for n in range(1, 6)), ("Culture", "l.Culture")],
    "GBL_BaseTable_Description btd JOIN STP_Language l ON btd.LangID = l.LangID "
    "WHERE btd.NUM = vo.NUM", ["btd.LangID"])

_VIEW_INFO = view_info("mem")

# The @Opportunities table variable of the procedure is a temporary table here, with the
# variable's column types.
_OPPORTUNITY_COLUMNS = ", ".join(
    ["VNUM varchar(10)", "MemberID int", "AccessURL nvarchar(500)"]
    + [f"{flag} bit" for flag in SCHEDULE_FLAGS]
    + ["MIN_AGE numeric(5,2)", "MAX_AGE numeric(5,2)", "COMMUNITIES text", "INTERESTS text",
       "OP_NAME xml", "ORG_NAME xml", "ViewInfo xml", "is_new int", "last_update datetime"])
_RESULT_COLUMNS = ", ".join(["VNUM", "MemberID", "AccessURL", *SCHEDULE_FLAGS, "MIN_AGE",
                             "MAX_AGE", "COMMUNITIES", "INTERESTS", "OP_NAME", "ORG_NAME",
                             "ViewInfo"])

PROFILE_NOTIFY = (
    "DROP TABLE IF EXISTS temp.notify_opportunities",
    f"CREATE TEMP TABLE notify_opportunities ({_OPPORTUNITY_COLUMNS})",
    f"""INSERT INTO temp.notify_opportunities
        WITH w AS (SELECT {_START} AS Start)
        SELECT vo.VNUM, vo.MemberID, NULL AS AccessURL, {SCHEDULE},
               vo.MIN_AGE, vo.MAX_AGE, {_COMMUNITIES} AS COMMUNITIES,
               (SELECT group_concat(AI_ID, ',') FROM (SELECT AI_ID FROM VOL_OP_AI
                                                      WHERE VNUM = vo.VNUM ORDER BY AI_ID))
                   AS INTERESTS,
               {_OP_NAME} AS OP_NAME, {_ORG_NAME} AS ORG_NAME, {_VIEW_INFO} AS ViewInfo,
               CASE WHEN EXISTS (SELECT 1 FROM VOL_Opportunity_Description vod
                                 WHERE vod.VNUM = vo.VNUM AND {_CREATED_IN_WINDOW})
                    THEN 1 ELSE 0 END AS is_new,
               (SELECT MAX(UPDATE_DATE) FROM VOL_Opportunity_Description vod
                WHERE vod.VNUM = vo.VNUM) AS last_update
        FROM VOL_Opportunity vo
        CROSS JOIN w
        JOIN GBL_BaseTable bt ON vo.NUM = bt.NUM
        JOIN STP_Member mem ON vo.MemberID = mem.MemberID
        WHERE vo.MemberID = :MemberID
          AND (vo.DISPLAY_UNTIL IS NULL OR vo.DISPLAY_UNTIL >= {_MIN_EXPIRY})
          AND EXISTS (SELECT 1 FROM VOL_Opportunity_Description vod WHERE vod.VNUM = vo.VNUM
                      AND (vod.DELETION_DATE IS NULL OR vod.DELETION_DATE >= {_MIN_EXPIRY}))
          AND EXISTS (SELECT 1 FROM VOL_OP_CM WHERE VNUM = vo.VNUM)
          AND EXISTS (SELECT 1 FROM VOL_Opportunity_Description vod WHERE vod.VNUM = vo.VNUM
                      AND ({_CREATED_IN_WINDOW} OR {_UPDATED_IN_WINDOW}))""",
    "DELETE FROM temp.notify_opportunities WHERE ViewInfo IS NULL",
    f"""SELECT {_RESULT_COLUMNS} FROM temp.notify_opportunities
        ORDER BY is_new DESC, last_update, VNUM""",
    f"""SELECT vp.MemberID, vp.ProfileID, vp.FirstName, vp.LastName, vp.Email, vp.NotifyUpdated,
               {PROFILE_SCHEDULE},
               round(((CAST(strftime('%Y', 'now', 'localtime') AS INTEGER)
                       - CAST(strftime('%Y', vp.BirthDate) AS INTEGER)) * 12
                      + CAST(strftime('%m', 'now', 'localtime') AS INTEGER)
                      - CAST(strftime('%m', vp.BirthDate) AS INTEGER)) / 12.0, 2) AS AGE,
               (SELECT group_concat(CM_ID, ',') FROM (SELECT CM_ID FROM VOL_Profile_CM
                                                      WHERE ProfileID = vp.ProfileID
                                                      ORDER BY CM_ID)) AS COMMUNITIES,
               (SELECT group_concat(AI_ID, ',') FROM (SELECT AI_ID FROM VOL_Profile_AI
                                                      WHERE ProfileID = vp.ProfileID
                                                      ORDER BY AI_ID)) AS INTERESTS,
               (SELECT Culture FROM STP_Language WHERE vp.LangID = LangID) AS Culture,
               vp.UnsubscribeToken
        FROM VOL_Profile vp
        WHERE vp.MemberID = :MemberID AND vp.Verified = 1 AND vp.Active = 1 AND vp.Blocked = 0
          AND (vp.NotifyNew = 1 OR vp.NotifyUpdated = 1)
          AND EXISTS (SELECT 1 FROM temp.notify_opportunities)
        ORDER BY vp.ProfileID""",
    """SELECT BaseURLVOL AS BaseURL, DefaultEmailVOL, DefaultEmailNameVOL, DefaultEmailVOLProfile
       FROM STP_Member WHERE MemberID = :MemberID""",
    "DROP TABLE temp.notify_opportunities",
)

PROFILE_NOTIFY_DONE = (
    f"""UPDATE STP_Member SET LastVolProfileEmailDate = {TODAY}
        WHERE MemberID = :MemberID
          AND (LastVolProfileEmailDate IS NULL OR LastVolProfileEmailDate < {TODAY})""",
)

# Each member's main names first, those directly under cioc.ca before the others; SQL
# Server compares them case-insensitively.
OFFLINE_TOOLS_DOMAINS = (
    """SELECT MemberID, SecondaryName, DomainName FROM GBL_View_DomainMap
       ORDER BY MemberID, SecondaryName,
                CASE WHEN lower(substr(DomainName, -8)) = '.cioc.ca'
                      AND length(DomainName) - length(replace(DomainName, '.', '')) = 2
                     THEN 0 ELSE 1 END,
                DomainName COLLATE NOCASE""",
)
