"""What goes into each member's record download: databases, tables, columns and rows.

Read by downloads/newdownloads.py (``--config`` names another file of the same shape).
Table and column names are fnmatch patterns. A row condition is None (every row), an SQL
condition (``{MemberID}``, ``{Year}`` and ``{NextYear}`` are filled in; it may join other
tables), or a function given the copier, every table name and the table, that returns one.
"""

import collections

DBInfo = collections.namedtuple("DBInfo", "dbname flavours skip")

#: Databases with their own flavours or skipped; any other database gets default_flavours.
dbinfo = [
    # DBInfo("ciocdemo", ("CIC", "VOL"), False),
]
default_flavours = ("CIC", "VOL")

#: "zip" (AES-256, what the web app links to) or "7z" (AES-256 with encrypted names).
archive_format = "zip"

#: Sites from before per-member download passwords: {dbname: {"CIC": pw, "VOL": pw}}.
old_sites = {}

daily_skip_tables = [
    "*_Stats_*", "*_Accumulator", "*_Cache", "GBL_BaseTable_History", "GBL_SharingProfile",
    "GBL_BT_SharingProfile", "VOL_GetInvolved_*", "sys*",
]
cic_skip_tables = ["VOL_*"]
# Volunteer profiles hold private data of the public: never in a download.
vol_skip_tables = ["VOL_Profile*", "CIC_*"]

skip_tables = {
    "CIC": daily_skip_tables + cic_skip_tables,
    "VOL": daily_skip_tables + vol_skip_tables,
}

_secret_columns = {
    "STP_Member": ["DownloadPassword*"],
    "GBL_Agency": ["GetInvolvedUser", "GetInvolvedToken", "GetInvolvedSite", "UpdateEmailVOL"],
}
skip_columns = {"CIC": _secret_columns, "VOL": _secret_columns}

#: The tables of the yearly stats download (newdownloads.py -s).
stats_tables = {"CIC": ["CIC_Stats_RSN"], "VOL": ["VOL_Stats_OPID"]}
_this_year = "AccessDate >= '{Year}-01-01' AND AccessDate < '{NextYear}-01-01'"

_RECORDS = "SELECT NUM FROM GBL_BaseTable WHERE MemberID = {MemberID}"
_OPPORTUNITIES = "SELECT VNUM FROM VOL_Opportunity WHERE MemberID = {MemberID}"


def member_rows(copier, tables, table):
    """For tables no rule names: keep the member's rows by MemberID, record or opportunity
    number; a table with none of them is shared by every member and is copied whole."""
    columns = set(copier.columns(table))
    if "MemberID" in columns:
        return "MemberID = {MemberID}"
    if "VNUM" in columns and "VOL_Opportunity" in tables:
        return f"VNUM IN ({_OPPORTUNITIES})"
    if "NUM" in columns and "GBL_BaseTable" in tables:
        return f"NUM IN ({_RECORDS})"
    return None


conditions = [
    ("STP_Language", None),
    ("GBL_Community*", None),
    ("VOL_Interest*", None),
    ("VOL_Skill*", None),
    ("CIC_Stats_RSN", "MemberID = {MemberID} AND " + _this_year),
    ("VOL_Stats_OPID", "MemberID = {MemberID} AND " + _this_year),
    ("GBL_BaseTable_*", f"NUM IN ({_RECORDS})"),
    ("VOL_Opportunity_*", f"VNUM IN ({_OPPORTUNITIES})"),
    ("VOL_OP_*", f"VNUM IN ({_OPPORTUNITIES})"),
    ("*", member_rows),
]
