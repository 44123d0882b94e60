"""What goes into each member's record download: databases, tables, columns and rows.

Read by downloads/newdownloads.py (``--config`` names another file of the same shape);
``newdownloads.py --plan [-a DB]`` prints what it decides for every table. Nothing is
copied by default. For each table and flavour, the first of these that applies decides:

1. user and credential tables (GBL_Users*, VOL_Profile*, *APICred*, ...) are never copied:
   that list is in newdownloads.py and no setting here changes it;
2. ``other_flavour_tables``: tables of the other flavour's download;
3. ``not_copied``: tables left out, each with the reason --plan prints;
4. a rule that keeps the member's rows: ``conditions`` (SQL with ``{MemberID}``), else a
   member column (``member_columns``; a NULL there is a value shared by every member and
   is kept), else a record or opportunity number (``record_numbers``), else foreign keys
   (CIOC's, from cioc_schema.json, and ``foreign_keys``) to tables kept by a rule;
5. ``shared_tables``: reference tables every member shares, copied whole;
6. anything else is not copied.

Columns whose names look like a password, hash, salt, token, key or login are never copied
(newdownloads.py); ``skip_columns`` leaves out more. Table and column names are fnmatch
patterns (case-sensitive).
"""

import collections

DBInfo = collections.namedtuple("DBInfo", "dbname flavours skip")

#: Databases with their own flavours or skipped; any other database gets default_flavours.
dbinfo = [
    # DBInfo("ciocdemo", ("CIC", "VOL"), False),
]
default_flavours = ("CIC", "VOL")

#: Sites from before per-member download passwords: {dbname: {"CIC": pw, "VOL": pw}}.
old_sites = {}

#: Columns naming the member a row belongs to.
member_columns = ("MemberID", "MemberID_Cache")

#: A record (NUM) or opportunity (VNUM) number keeps the rows of the member's records.
record_numbers = {
    "NUM": "SELECT [NUM] FROM [GBL_BaseTable] WHERE [MemberID] = {MemberID}",
    "VNUM": "SELECT [VNUM] FROM [VOL_Opportunity] WHERE [MemberID] = {MemberID}",
}

#: Row conditions of your own, before every computed rule: {table pattern: SQL over the
#: table's columns using {MemberID}}.
conditions = {}

#: Foreign keys CIOC declares (python/sql/core/Tables at 70b433f) that cioc_schema.json
#: lacks, and ties CIOC keeps by trigger only: (table, columns, parent, parent columns).
foreign_keys = [
    ("VOL_CommunityGroup", ("CommunitySetID",), "VOL_CommunitySet", ("CommunitySetID",)),
    ("GBL_RecordNote", ("VolVNUM", "LangID"), "VOL_Opportunity_Description", ("VNUM", "LangID")),
    ("CIC_BT_VUT_History", ("BT_VUT_ID",), "CIC_BT_VUT", ("BT_VUT_ID",)),
    ("CIC_SecurityLevel_SavedSearch", ("SSRCH_ID",), "GBL_SavedSearch", ("SSRCH_ID",)),
    ("VOL_SecurityLevel_SavedSearch", ("SSRCH_ID",), "GBL_SavedSearch", ("SSRCH_ID",)),
    ("GBL_Admin_Notice", ("AdminAreaID",), "GBL_Admin_Area", ("AdminAreaID",)),
    # tr_GBL_Feedback_Cleanup, not a foreign key, ties GBL_Feedback to its entry.
    ("GBL_Feedback", ("FB_ID",), "GBL_FeedbackEntry", ("FB_ID",)),
]

#: Tables that belong to the other flavour's download.
other_flavour_tables = {
    "CIC": ["VOL_*"],
    "VOL": ["CIC_*", "CCR_*"],
}

_PUBLIC = "submitted by the public, with their names and contact details"
_STATS = "usage statistics: only in the yearly stats download (-s)"

#: Tables left out, with the reason --plan gives.
not_copied = [
    ("*_Stats_*", _STATS),
    ("*_Accumulator", "usage statistics still being gathered"),
    ("*StatsCache", "a cache of usage statistics"),
    ("*_Cache", "a cache, rebuilt by the database"),
    ("*_History", "change history, with the names of the staff who made each change"),
    ("*SharingProfile*", "agreements to share records between members"),
    ("*_Feedback", f"feedback {_PUBLIC}"),
    ("*_Feedback_*", f"feedback {_PUBLIC}"),
    ("*_FeedbackEntry", f"feedback {_PUBLIC}"),
    ("*Referral", f"volunteer referrals {_PUBLIC}"),
    ("*SavedSearch*", "saved searches of staff users"),
    ("*Reminder*", "reminders and notes of staff users"),
    ("GBL_Admin_Notice", "notices between staff users"),
    ("GBL_Display", "display settings of staff users and views"),
    ("*_Display_Fld", "display settings of staff users and views"),
    ("GBL_Banned*", "banned and allowed IP addresses of the whole site"),
    ("CIC_View_Whitelist", "allowed IP addresses"),
    ("*GetInvolved*", "the GetInvolved feature, removed from CIOC in 2022"),
    ("CIC_iCarol*", "iCarol import and export work tables: every member's records"),
    ("TAX_U_*", "taxonomy update work tables"),
    ("GBL_Admin_Area*", "the web app's administration areas"),
]

#: Reference tables every member shares, copied whole (only when no rule above keeps
#: one member's rows: a pattern here never widens a table that has one).
shared_tables = [
    "STP_Language",
    "GBL_Community*", "GBL_ProvinceState*", "GBL_StreetDir*", "GBL_StreetType",
    "GBL_BoxType", "GBL_BillingAddressType*", "GBL_Contact_Honorific", "GBL_Contact_PhoneType",
    "GBL_MappingCategory*", "GBL_MappingSystem*", "GBL_SocialMedia*", "GBL_Schedule*",
    "GBL_SignatureStatus*", "GBL_OrgLocationService*", "GBL_RecordNote_Type*",
    "CIC_Activity_Status*", "CIC_EmployeeRange",
    "NAICS*", "TAX_Facet*", "TAX_RelatedConcept*", "TAX_SeeAlso", "TAX_Source*", "TAX_TM_RC",
    "TAX_Term", "TAX_Term_Description", "TAX_Term_ParentList", "TAX_Unused",
    "THS_Category*", "THS_Source*", "GBL_PrintProfile_Fld_Type*",
    "GBL_PageInfo*", "GBL_Template_Layout_Type", "GBL_ExternalAPI*", "STP_Icon",
    "VOL_Interest", "VOL_Interest_Name", "VOL_InterestGroup*", "VOL_AI_IG", "VOL_Ball",
    "VOL_MinHoursPer*",
]

#: More columns to leave out, besides the secret-looking ones: {flavour: {table: [column]}}.
_columns = {
    "GBL_Agency": ["GetInvolvedUser", "GetInvolvedToken", "GetInvolvedSite", "UpdateEmailVOL"],
}
skip_columns = {"CIC": _columns, "VOL": _columns}

_this_year = "AccessDate >= '{Year}-01-01' AND AccessDate < '{NextYear}-01-01'"

#: The yearly stats download (newdownloads.py -s): {flavour: {table: condition}}.
stats_tables = {
    "CIC": {"CIC_Stats_RSN": "MemberID = {MemberID} AND " + _this_year},
    "VOL": {"VOL_Stats_OPID": "MemberID = {MemberID} AND " + _this_year},
}
