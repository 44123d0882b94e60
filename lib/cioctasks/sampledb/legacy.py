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


_INTERESTS = _names("""
    SELECT DISTINCT Name FROM (
        SELECT gii.GIInterestName AS Name FROM VOL_OP_AI ai
        JOIN VOL_Interest_GetInvolved_Map map ON ai.AI_ID = map.AI_ID
        JOIN VOL_GetInvolved_Interest gii ON gii.GIInterestID = map.GIInterestID
        WHERE ai.VNUM = vo.VNUM
        UNION SELECT gii.GIInterestName FROM VOL_OP_SK sk
        JOIN VOL_Skill_GetInvolved_Map map ON sk.SK_ID = map.SK_ID
        JOIN VOL_GetInvolved_Interest gii ON gii.GIInterestID = map.GIInterestID
        WHERE sk.VNUM = vo.VNUM) ORDER BY Name""")
_SKILLS = _names("""
    SELECT DISTINCT Name FROM (
        SELECT gis.GISkillName AS Name FROM VOL_OP_AI ai
        JOIN VOL_Interest_GetInvolved_Map map ON ai.AI_ID = map.AI_ID
        JOIN VOL_GetInvolved_Skill gis ON gis.GISkillID = map.GISkillID
        WHERE ai.VNUM = vo.VNUM
        UNION SELECT gis.GISkillName FROM VOL_OP_SK sk
        JOIN VOL_Skill_GetInvolved_Map map ON sk.SK_ID = map.SK_ID
        JOIN VOL_GetInvolved_Skill gis ON gis.GISkillID = map.GISkillID
        WHERE sk.VNUM = vo.VNUM) ORDER BY Name""")
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


def extra_tables():
    """{table: facts} of what a database from before the removal has besides the current
    schema: GBL_Agency with its GetInvolved columns, and the VOL_GetInvolved_* tables."""
    raise NotImplementedError("written next: legacy GetInvolved facts")


def populate(generator):
    """Fill the GetInvolved tables and columns of a sample database (a Generator that has
    run)."""
    raise NotImplementedError("written next: legacy GetInvolved rows")
