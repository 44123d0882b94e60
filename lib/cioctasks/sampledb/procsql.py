"""The SQL that stands in for each CIOC stored procedure on the sample (SQLite) database.

Each constant is a tuple of statements run in order on one connection and committed
together (``db.Database.call``); ``:Name`` takes the argument of that name, and each
statement that returns rows is one result set, with the columns and column order of
CIOC's procedure. Per-culture columns are JSON arrays (``procs.normalize`` decodes them).
"""

from cioctasks.sampledb.schema import SCHEDULE_COLUMNS

SCHEDULE = ", ".join(f"vo.{c.split()[0]}" for c in SCHEDULE_COLUMNS.strip().split(",\n"))
PROFILE_SCHEDULE = SCHEDULE.replace("vo.", "p.")

TODAY = "datetime(date('now', 'localtime'))"
IN_FIVE_DAYS = "datetime(date('now', 'localtime'), '+5 days')"
NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now', 'localtime')"


def _org_name_full(alias):
    levels = " || ".join(
        f"COALESCE(', ' || {alias}.ORG_LEVEL_{n}, '')" for n in range(2, 6)
    )
    return f"{alias}.ORG_LEVEL_1 || {levels}"


def _move_stats(table, columns, key):
    """What the nightly procedure does with one kind of usage stats: move the accumulated
    rows into ``table``, then rebuild its monthly cache of hits per ``key``."""
    return (
        f"""INSERT INTO {table} (MemberID, AccessDate, IPAddress, {columns}, LangID, User_ID,
                                 ViewType, RobotID)
            SELECT MemberID, AccessDate, IPAddress, {columns}, LangID, User_ID, ViewType, RobotID
            FROM {table}_Accumulator ORDER BY AccessDate""",
        f"DELETE FROM {table}_Accumulator",
        f"DELETE FROM {table}_Cache",
        f"""INSERT INTO {table}_Cache (MemberID, StatYear, StatMonth, {key}, Hits)
            SELECT MemberID, CAST(strftime('%Y', AccessDate) AS INTEGER),
                   CAST(strftime('%m', AccessDate) AS INTEGER), {key}, COUNT(*)
            FROM {table} WHERE RobotID IS NULL
            GROUP BY MemberID, strftime('%Y', AccessDate), strftime('%m', AccessDate), {key}""",
    )


# sp_STP_Nightly_Tasks: stats accumulators into the stats tables, their caches rebuilt,
# then the sharing profiles whose revocation date has come end.
NIGHTLY_TASKS = (
    *_move_stats("CIC_Stats_RSN", "RSN, NUM", "NUM"),
    *_move_stats("VOL_Stats_OPID", "VNUM", "VNUM"),
    f"""DELETE FROM GBL_BT_SharingProfile WHERE ProfileID IN (
           SELECT ProfileID FROM GBL_SharingProfile
           WHERE RevokedDate IS NOT NULL AND RevokedDate <= {NOW})""",
    f"""UPDATE GBL_SharingProfile SET Active = 0
        WHERE Active = 1 AND RevokedDate IS NOT NULL AND RevokedDate <= {NOW}""",
)

# An opportunity is still shown: public, not deleted, not past its display date.
_SHOWN = f"""EXISTS (SELECT 1 FROM VOL_Opportunity_Description vod
                     WHERE vod.VNUM = vo.VNUM AND vod.NON_PUBLIC = 0
                       AND (vod.DELETION_DATE IS NULL OR vod.DELETION_DATE > {NOW}))
             AND (vo.DISPLAY_UNTIL IS NULL OR vo.DISPLAY_UNTIL > {NOW})"""

NUM_CHANGED = (
    f"""SELECT a.UpdateEmailVOL, m.DefaultEmailVOL, m.DefaultEmailNameVOL, bt.NUM, btd.LangID,
               {_org_name_full('btd')} AS ORG_NAME_FULL, btd.NON_PUBLIC, btd.DELETION_DATE,
               vo.RECORD_OWNER, COUNT(DISTINCT vo.VNUM) AS OpportunityCount
        FROM GBL_BaseTable bt
        JOIN GBL_BaseTable_Description btd ON btd.NUM = bt.NUM
        JOIN VOL_Opportunity vo ON vo.NUM = bt.NUM AND {_SHOWN}
        JOIN GBL_Agency a ON a.AgencyCode = vo.RECORD_OWNER AND a.UpdateEmailVOL IS NOT NULL
        JOIN STP_Member m ON m.MemberID = vo.MemberID
        WHERE EXISTS (SELECT 1 FROM GBL_BaseTable_History h
                      JOIN GBL_FieldOption f ON f.FieldID = h.FieldID
                      WHERE h.NUM = bt.NUM AND h.LangID = btd.LangID
                        AND h.MODIFIED_DATE > :MODIFIED_DATE
                        AND f.FieldName IN ('NON_PUBLIC', 'DELETION_DATE'))
        GROUP BY a.UpdateEmailVOL, m.DefaultEmailVOL, m.DefaultEmailNameVOL, bt.NUM, btd.LangID,
                 vo.RECORD_OWNER
        ORDER BY vo.RECORD_OWNER, ORG_NAME_FULL, bt.NUM, btd.LangID""",
)

PROFILE_NOTIFY_ENABLED = (
    """SELECT MemberID, UseVolunteerProfiles FROM STP_Member
       WHERE UseVOL = 1 AND UseVolunteerProfiles = 1 ORDER BY MemberID""",
)

# The member's notification window: from the last notification (at most 14 days back) to
# today at midnight.
_WINDOW = f"""notify_window AS (
    SELECT MAX(COALESCE(LastVolProfileEmailDate, ''),
               datetime(date('now', 'localtime'), '-14 days')) AS Start, {TODAY} AS Finish
    FROM STP_Member WHERE MemberID = :MemberID)"""

_IN_WINDOW = """(d.CREATED_DATE >= w.Start AND d.CREATED_DATE < w.Finish)
                OR (d.UPDATE_DATE >= w.Start AND d.UPDATE_DATE < w.Finish)"""

_COMMUNITIES = """(SELECT group_concat(CM_ID) FROM (
        SELECT c.CM_ID FROM VOL_OP_CM c WHERE c.VNUM = vo.VNUM
        UNION SELECT pl.Parent_CM_ID FROM VOL_OP_CM c
              JOIN GBL_Community_ParentList pl ON pl.CM_ID = c.CM_ID WHERE c.VNUM = vo.VNUM
        UNION SELECT pl.CM_ID FROM VOL_OP_CM c
              JOIN GBL_Community_ParentList pl ON pl.Parent_CM_ID = c.CM_ID WHERE c.VNUM = vo.VNUM
        ORDER BY 1))"""

_VIEW_INFO = """(SELECT json_group_array(json_object(
                    'Culture', l.Culture, 'LangID', l.LangID, 'ViewType', vd.ViewType,
                    'AccessURL', m.BaseURLVOL))
                 FROM VOL_View_Description vd JOIN STP_Language l ON l.LangID = vd.LangID
                 WHERE vd.ViewType = m.DefaultViewVOL)"""

_ORG_NAME = """(SELECT json_group_array(json_object(
                   'Culture', l.Culture, 'LangID', btd.LangID,
                   'ORG_LEVEL_1', btd.ORG_LEVEL_1, 'ORG_LEVEL_2', btd.ORG_LEVEL_2,
                   'ORG_LEVEL_3', btd.ORG_LEVEL_3, 'ORG_LEVEL_4', btd.ORG_LEVEL_4,
                   'ORG_LEVEL_5', btd.ORG_LEVEL_5))
                FROM GBL_BaseTable_Description btd JOIN STP_Language l ON l.LangID = btd.LangID
                WHERE btd.NUM = vo.NUM)"""

PROFILE_NOTIFY = (
    f"""WITH {_WINDOW}
        SELECT vo.VNUM, vo.MemberID, m.BaseURLVOL AS AccessURL, {SCHEDULE},
               vo.MIN_AGE, vo.MAX_AGE, {_COMMUNITIES} AS COMMUNITIES,
               (SELECT group_concat(AI_ID) FROM (SELECT AI_ID FROM VOL_OP_AI
                                                 WHERE VNUM = vo.VNUM ORDER BY AI_ID)) AS INTERESTS,
               (SELECT json_group_array(json_object(
                    'Culture', l.Culture, 'LangID', d.LangID, 'POSITION_TITLE', d.POSITION_TITLE,
                    'NEW', d.CREATED_DATE >= w.Start,
                    'CHANGED', d.CREATED_DATE < w.Start AND d.UPDATE_DATE >= w.Start))
                FROM VOL_Opportunity_Description d JOIN STP_Language l ON l.LangID = d.LangID
                WHERE d.VNUM = vo.VNUM AND d.NON_PUBLIC = 0 AND ({_IN_WINDOW})) AS OP_NAME,
               {_ORG_NAME} AS ORG_NAME,
               {_VIEW_INFO} AS ViewInfo
        FROM VOL_Opportunity vo
        JOIN STP_Member m ON m.MemberID = vo.MemberID
        CROSS JOIN notify_window w
        WHERE vo.MemberID = :MemberID
          AND (vo.DISPLAY_UNTIL IS NULL OR vo.DISPLAY_UNTIL >= {IN_FIVE_DAYS})
          AND EXISTS (SELECT 1 FROM VOL_OP_CM c WHERE c.VNUM = vo.VNUM)
          AND EXISTS (SELECT 1 FROM VOL_Opportunity_Description d
                      WHERE d.VNUM = vo.VNUM AND d.NON_PUBLIC = 0
                        AND (d.DELETION_DATE IS NULL OR d.DELETION_DATE >= {IN_FIVE_DAYS})
                        AND ({_IN_WINDOW}))
        ORDER BY (SELECT MAX(d.CREATED_DATE >= w.Start) FROM VOL_Opportunity_Description d
                  WHERE d.VNUM = vo.VNUM) DESC, vo.VNUM""",
    f"""SELECT p.MemberID, p.ProfileID, p.FirstName, p.LastName, p.Email, p.NotifyUpdated,
               {PROFILE_SCHEDULE},
               (CAST(strftime('%Y', 'now', 'localtime') AS INTEGER) * 12
                + CAST(strftime('%m', 'now', 'localtime') AS INTEGER)
                - CAST(strftime('%Y', p.BirthDate) AS INTEGER) * 12
                - CAST(strftime('%m', p.BirthDate) AS INTEGER)) / 12.0 AS AGE,
               (SELECT group_concat(CM_ID) FROM (SELECT CM_ID FROM VOL_Profile_CM
                                                 WHERE ProfileID = p.ProfileID ORDER BY CM_ID))
                   AS COMMUNITIES,
               (SELECT group_concat(AI_ID) FROM (SELECT AI_ID FROM VOL_Profile_AI
                                                 WHERE ProfileID = p.ProfileID ORDER BY AI_ID))
                   AS INTERESTS,
               l.Culture, p.UnsubscribeToken, p.NotifyNew
        FROM VOL_Profile p JOIN STP_Language l ON l.LangID = p.LangID
        WHERE p.MemberID = :MemberID AND p.Verified = 1 AND p.Active = 1 AND p.Blocked = 0
          AND (p.NotifyNew = 1 OR p.NotifyUpdated = 1)
        ORDER BY p.ProfileID""",
    """SELECT BaseURLVOL AS BaseURL, DefaultEmailVOL, DefaultEmailNameVOL, DefaultEmailVOLProfile
       FROM STP_Member WHERE MemberID = :MemberID""",
)

PROFILE_NOTIFY_DONE = (
    f"""UPDATE STP_Member SET LastVolProfileEmailDate = {TODAY} || '.000'
        WHERE MemberID = :MemberID""",
)

# Each member's names directly under cioc.ca first, then the rest.
OFFLINE_TOOLS_DOMAINS = (
    """SELECT MemberID, SecondaryName, DomainName FROM GBL_View_DomainMap
       ORDER BY MemberID, SecondaryName,
                CASE WHEN lower(DomainName) LIKE '%.cioc.ca'
                      AND lower(DomainName) NOT LIKE '%.%.cioc.ca' THEN 0 ELSE 1 END,
                DMAP_ID""",
)

GETINVOLVED_ENABLED = (
    """SELECT a.MemberID, a.GetInvolvedUser, a.GetInvolvedToken, a.GetInvolvedSite
       FROM GBL_Agency a JOIN STP_Member m ON m.MemberID = a.MemberID
       WHERE m.UseVOL = 1 AND a.GetInvolvedUser IS NOT NULL AND a.GetInvolvedToken IS NOT NULL
         AND a.GetInvolvedSite IS NOT NULL
       ORDER BY a.MemberID, a.AgencyCode""",
)

# The original procedure's deletion-date filter read "NON_PUBLIC = 0 AND DELETION_DATE IS
# NULL OR DELETION_DATE > GETDATE()", which lets non-public positions with a future
# deletion date through; the intended rule is parenthesised here.
GETINVOLVED_SYNC = (
    f"""SELECT vo.VNUM,
               (SELECT group_concat(Name, '; ') FROM (
                    SELECT cn.Name || ', Ontario' AS Name
                    FROM VOL_OP_CM c
                    JOIN VOL_CommunitySet_CM s ON s.CM_ID = c.CM_ID
                         AND s.CommunitySetID = a.GetInvolvedCommunitySet
                    JOIN GBL_Community_Name cn ON cn.CM_ID = c.CM_ID AND cn.LangID = 0
                    WHERE c.VNUM = vo.VNUM ORDER BY cn.Name LIMIT 4)) AS COMMUNITIES,
               (SELECT group_concat(GIInterestName, '; ') FROM (
                    SELECT DISTINCT gi.GIInterestName FROM VOL_OP_AI ai
                    JOIN VOL_GetInvolved_Interest gi ON gi.AI_ID = ai.AI_ID
                    WHERE ai.VNUM = vo.VNUM ORDER BY 1)) AS INTERESTS,
               (SELECT group_concat(GISkillName, '; ') FROM (
                    SELECT DISTINCT gs.GISkillName FROM VOL_OP_SK sk
                    JOIN VOL_GetInvolved_Skill gs ON gs.SK_ID = sk.SK_ID
                    WHERE sk.VNUM = vo.VNUM ORDER BY 1)) AS SKILLS,
               d.POSITION_TITLE AS OP_NAME, {_org_name_full('btd')} AS ORG_NAME_FULL,
               vo.DISPLAY_UNTIL, d.DELETION_DATE, d.DUTIES,
               (SELECT json_group_array(json_object(
                    'Culture', l.Culture, 'LangID', l.LangID, 'ViewType', vd.ViewType,
                    'AccessURL', m.BaseURLVOL))
                FROM VOL_View_Description vd
                WHERE vd.ViewType = m.DefaultViewVOL AND vd.LangID = d.LangID) AS ViewInfo,
               l.Culture
        FROM GBL_Agency a
        JOIN STP_Member m ON m.MemberID = a.MemberID
        JOIN VOL_Opportunity vo ON vo.RECORD_OWNER = a.AgencyCode AND vo.MemberID = a.MemberID
        JOIN VOL_Opportunity_Description d ON d.VNUM = vo.VNUM
        JOIN STP_Language l ON l.LangID = d.LangID
        LEFT JOIN GBL_BaseTable_Description btd ON btd.NUM = vo.NUM AND btd.LangID = d.LangID
        WHERE a.MemberID = :MemberID AND a.GetInvolvedUser = :GetInvolvedUser
          AND a.GetInvolvedToken = :GetInvolvedToken AND a.GetInvolvedSite = :GetInvolvedSite
          AND d.NON_PUBLIC = 0
          AND (d.DELETION_DATE IS NULL OR d.DELETION_DATE > {NOW})
          AND (vo.DISPLAY_UNTIL IS NULL OR vo.DISPLAY_UNTIL > {NOW})
          AND EXISTS (SELECT 1 FROM VOL_OP_CM c
                      JOIN VOL_CommunitySet_CM s ON s.CM_ID = c.CM_ID
                      WHERE c.VNUM = vo.VNUM AND s.CommunitySetID = a.GetInvolvedCommunitySet)
        ORDER BY vo.VNUM, d.LangID""",
)
