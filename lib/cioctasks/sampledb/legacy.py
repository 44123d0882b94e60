"""CIOC's GetInvolved feature, which current CIOC databases no longer have.

CIOC removed it in commit aff3c04 (2022-10-08, "remove GetInvolved ALL FEATURES"): the
procedures ``sp_VOL_GetInvolved_Enabled`` and ``sp_VOL_GetInvolved_Sync``, the
``GBL_Agency.GetInvolved*`` columns and the ``VOL_GetInvolved_*`` tables. A database from
before that release still has them. This module holds those facts (read from the parent of
aff3c04) and the sample SQL of the two procedures, so a sample site can be built as such a
database (``sampledb create --getinvolved SITE``).
"""

from cioctasks.sampledb.procsql import NOW, _org_name_full, view_info, xml_attribute

#: What sp_VOL_GetInvolved_* need: only databases from before the removal have it.
REQUIRES = ("GBL_Agency.GetInvolvedUser", "VOL_GetInvolved_Interest")

# sp_VOL_GetInvolved_Enabled, as it was.
GETINVOLVED_ENABLED = (
    """SELECT MemberID, GetInvolvedUser, GetInvolvedToken, GetInvolvedSite FROM GBL_Agency
       WHERE GetInvolvedUser IS NOT NULL AND GetInvolvedToken IS NOT NULL
       GROUP BY MemberID, GetInvolvedUser, GetInvolvedToken, GetInvolvedSite""",
)


def _names(select):
    """(SELECT ... AS [@Name] ... FOR XML PATH('NAME'), ROOT('NAMES'), TYPE)."""
    return f"""(SELECT '<NAMES>' || group_concat('<NAME' || {xml_attribute('Name', 'Name')} || '/>', '')
                       || '</NAMES>' FROM ({select}))"""


def _mapped(table, key, name):
    """The GetInvolved names (``table``.``name``, keyed by ``key``) that the position's
    interests and skills map to, through both map tables, as the procedure unions them."""
    return _names(f"""
    SELECT DISTINCT Name FROM (
        SELECT gi.{name} AS Name FROM VOL_OP_AI ai
        JOIN VOL_Interest_GetInvolved_Map map ON ai.AI_ID = map.AI_ID
        JOIN {table} gi ON gi.{key} = map.{key}
        WHERE ai.VNUM = vo.VNUM
        UNION SELECT gi.{name} FROM VOL_OP_SK sk
        JOIN VOL_Skill_GetInvolved_Map map ON sk.SK_ID = map.SK_ID
        JOIN {table} gi ON gi.{key} = map.{key}
        WHERE sk.VNUM = vo.VNUM) ORDER BY Name""")


_INTERESTS = _mapped("VOL_GetInvolved_Interest", "GIInterestID", "GIInterestName")
_SKILLS = _mapped("VOL_GetInvolved_Skill", "GISkillID", "GISkillName")
_COMMUNITIES = _names("""
    SELECT cmn.Name || ', Ontario' AS Name FROM GBL_Community_Name cmn
    JOIN VOL_OP_CM opcm ON cmn.CM_ID = opcm.CM_ID
    WHERE cmn.LangID = 0 AND opcm.VNUM = vo.VNUM ORDER BY opcm.OP_CM_ID LIMIT 4""")
_VIEW_INFO = view_info("mem", no_deleted=True)

# sp_VOL_GetInvolved_Sync, as it was, WHERE clause included: its last line has no
# parentheses, so it also returns every position, of any member or agency, whose
# deletion date is still to come. getinvolvedapi keeps only the agency's own.
GETINVOLVED_SYNC = (
    f"""SELECT * FROM (
        SELECT vo.VNUM, {_COMMUNITIES} AS COMMUNITIES, {_INTERESTS} AS INTERESTS,
               {_SKILLS} AS SKILLS, vod.POSITION_TITLE AS OP_NAME,
               {_org_name_full()} AS ORG_NAME_FULL, vo.DISPLAY_UNTIL, vod.DELETION_DATE,
               vod.DUTIES, {_VIEW_INFO} AS ViewInfo, l.Culture
        FROM VOL_Opportunity vo
        JOIN STP_Member mem ON mem.MemberID = :MemberID
        JOIN GBL_BaseTable bt ON vo.NUM = bt.NUM
        JOIN VOL_Opportunity_Description vod ON vo.VNUM = vod.VNUM AND vod.LangID = 0
        JOIN GBL_BaseTable_Description btd ON btd.NUM = bt.NUM AND btd.LangID IN (0, 2)
        JOIN GBL_Agency a ON a.AgencyCode = vo.RECORD_OWNER
        JOIN STP_Language l ON btd.LangID = l.LangID
        WHERE vo.MemberID = :MemberID AND a.GetInvolvedUser = :GetInvolvedUser
          AND a.GetInvolvedToken = :GetInvolvedToken AND a.GetInvolvedSite = :GetInvolvedSite
          AND EXISTS (SELECT 1 FROM VOL_OP_CommunitySet
                      WHERE VNUM = vo.VNUM AND CommunitySetID = a.GetInvolvedCommunitySet)
          AND vod.DELETION_DATE IS NULL OR vod.DELETION_DATE > {NOW})
        WHERE ViewInfo IS NOT NULL""",
)


#: The GBL_Agency columns the feature had, as aff3c04^ defines them (after NUMSize).
AGENCY_COLUMNS = [
    {"name": "GetInvolvedUser", "type": "nvarchar", "length": "100", "null": True},
    {"name": "GetInvolvedToken", "type": "nvarchar", "length": "100", "null": True},
    {"name": "GetInvolvedCommunitySet", "type": "int", "null": True},
    {"name": "GetInvolvedSite", "type": "nvarchar", "length": "200", "null": True},
]

#: The tables the feature had, as aff3c04^ defines them.
TABLES = {
    "VOL_GetInvolved_Interest": {
        "columns": [
            {"name": "GIInterestID", "type": "int", "null": False, "identity": True},
            {"name": "GIInterestGroup", "type": "nvarchar", "length": "100", "null": False},
            {"name": "GIInterestName", "type": "nvarchar", "length": "100", "null": False},
        ],
        "primary_key": ["GIInterestID"],
    },
    "VOL_GetInvolved_Skill": {
        "columns": [
            {"name": "GISkillID", "type": "int", "null": False, "identity": True},
            {"name": "GISkillName", "type": "nvarchar", "length": "100", "null": False},
        ],
        "primary_key": ["GISkillID"],
    },
    "VOL_Interest_GetInvolved_Map": {
        "columns": [
            {"name": "AI_ID", "type": "int", "null": False},
            {"name": "GISkillID", "type": "int", "null": True},
            {"name": "GIInterestID", "type": "int", "null": True},
        ],
        "foreign_keys": [
            {"columns": ["AI_ID"], "table": "VOL_Interest", "ref": ["AI_ID"]},
            {"columns": ["GIInterestID"], "table": "VOL_GetInvolved_Interest",
             "ref": ["GIInterestID"]},
            {"columns": ["GISkillID"], "table": "VOL_GetInvolved_Skill", "ref": ["GISkillID"]},
        ],
    },
    "VOL_Skill_GetInvolved_Map": {
        "columns": [
            {"name": "SK_ID", "type": "int", "null": False},
            {"name": "GISkillID", "type": "int", "null": True},
            {"name": "GIInterestID", "type": "int", "null": True},
        ],
        "foreign_keys": [
            {"columns": ["GIInterestID"], "table": "VOL_GetInvolved_Interest",
             "ref": ["GIInterestID"]},
            {"columns": ["GISkillID"], "table": "VOL_GetInvolved_Skill", "ref": ["GISkillID"]},
            {"columns": ["SK_ID"], "table": "VOL_Skill", "ref": ["SK_ID"]},
        ],
    },
}

#: getinvolved.ca's own categories (GIInterestGroup, GIInterestName) and skills; a few
#: names hold what FOR XML must escape.
GETINVOLVED_INTERESTS = [
    ("Community", "Arts & Culture"), ("Community", "Children & Youth"),
    ("Community", "Seniors"), ("Community", "Environment"), ("Health", "Health & Wellness"),
    ("Community", "Sports & Recreation"), ("Education", "Literacy"),
    ("Community", "Food Security"), ("Community", "Newcomers & Settlement"),
    ("Community", "Animal Welfare"), ("Community", "Housing & Homelessness"),
    ("Community", "Justice & Legal"),
]
GETINVOLVED_SKILLS = [
    "Driving", "Cooking & Food Preparation", "Teaching / Tutoring", "Translation",
    "Accounting & Finance", "First Aid / CPR", "Trades <Carpentry>", "Social Media",
]
#: The site every agency was set up with (the admin page also allowed the production one).
GETINVOLVED_SITE = "https://testapi.getinvolved.ca/rpc"


def extra_tables():
    """{table: facts} of what a database from before the removal has besides the current
    schema: GBL_Agency with its GetInvolved columns, and the VOL_GetInvolved_* tables."""
    import copy

    from cioctasks.sampledb import schema

    agency = copy.deepcopy(schema.tables()["GBL_Agency"])
    names = [c["name"] for c in agency["columns"]]
    at = names.index("NUMSize") + 1 if "NUMSize" in names else len(names)
    agency["columns"][at:at] = copy.deepcopy(AGENCY_COLUMNS)
    agency.setdefault("foreign_keys", []).append(
        {"columns": ["GetInvolvedCommunitySet"], "table": "VOL_CommunitySet",
         "ref": ["CommunitySetID"]})
    tables = {"GBL_Agency": agency}
    tables.update(copy.deepcopy(TABLES))
    return tables


def populate(generator):
    """Fill the GetInvolved tables and columns of a sample database (a Generator that has
    run): getinvolved.ca's interests and skills, CIOC's interests and skills mapped to them
    (some not mapped), and credentials on agencies of every member. The first member's
    first two agencies share one set of credentials (the procedure syncs every agency that
    has them); every other member has one agency set up."""
    database, rng = generator.db, generator.rng
    database.execute("BEGIN")
    for table in TABLES:  # the generic rows of Generator.fill_every_table
        database.execute(f"DELETE FROM {table}")
    generator.insert("VOL_GetInvolved_Interest", [
        dict(GIInterestID=number, GIInterestGroup=group, GIInterestName=name)
        for number, (group, name) in enumerate(GETINVOLVED_INTERESTS, 1)])
    generator.insert("VOL_GetInvolved_Skill", [
        dict(GISkillID=number, GISkillName=name)
        for number, name in enumerate(GETINVOLVED_SKILLS, 1)])
    interests, skills = len(GETINVOLVED_INTERESTS), len(GETINVOLVED_SKILLS)
    interest_map, skill_map = [], []
    for ai_id in range(1, generator.counts["interests"] + 1):
        if rng.random() < 0.1:
            continue  # not mapped: sent with no GetInvolved interest
        interest_map.append(dict(
            AI_ID=ai_id, GIInterestID=(ai_id - 1) % interests + 1,
            GISkillID=rng.randint(1, skills) if rng.random() < 0.3 else None))
    for sk_id in range(1, generator.counts["skills"] + 1):
        if rng.random() < 0.1:
            continue
        skill_map.append(dict(
            SK_ID=sk_id, GISkillID=(sk_id - 1) % skills + 1,
            GIInterestID=rng.randint(1, interests) if rng.random() < 0.2 else None))
    generator.insert("VOL_Interest_GetInvolved_Map", interest_map)
    generator.insert("VOL_Skill_GetInvolved_Map", skill_map)
    for member_id, codes in sorted(generator.agency_codes.items()):
        user = f"{generator.site}-{codes[0].lower()}"
        token = f"{rng.getrandbits(128):032x}"
        for code in codes[:2] if member_id == 1 else codes[:1]:
            database.execute(
                "UPDATE GBL_Agency SET GetInvolvedUser = ?, GetInvolvedToken = ?, "
                "GetInvolvedCommunitySet = ?, GetInvolvedSite = ? WHERE AgencyCode = ?",
                (user, token, _community_set(database, member_id), GETINVOLVED_SITE, code))
    database.execute("COMMIT")


def _community_set(database, member_id):
    return database.execute("SELECT MIN(CommunitySetID) FROM VOL_CommunitySet WHERE MemberID = ?",
                            (member_id,)).fetchone()[0]
