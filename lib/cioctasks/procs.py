"""The one table of CIOC stored procedures the toolkit calls, for both backends.

For ``mssql`` a procedure is called by name through ODBC. For ``sample`` each entry keeps
the SQL statements that give the same result sets over the sample database
(``cioctasks.sampledb.procsql``); ``:Name`` placeholders take the arguments by parameter
name, and each statement that returns rows adds one result set.

CIOC returns some columns as XML built with ``FOR XML PATH(...), ROOT(...), TYPE``
(``OP_NAME``, ``ORG_NAME`` and ``ViewInfo``: one ``<DESC .../>`` per culture; GetInvolved's
name lists: ``<NAMES><NAME Name="..."/></NAMES>``). The sample builds the same XML text, and
``normalize`` decodes it for both backends with ``decode_xml``, so scripts see one shape: a
list of dicts, one per element.

``requires`` names what a procedure needs in the database (``Table`` or
``Table.Column``): on the sample, a procedure exists where its tables and columns do, as on
a real server a procedure exists in the CIOC versions that have it.
"""

import collections

#: ``xml_columns``: columns holding FOR XML text. ``autocommit``: run with autocommit, so
#: the procedure's own transactions commit (an outer one would swallow them).
#: A namedtuple, not a dataclass: importing dataclasses costs more than the rest of a
#: script's start-up.
Proc = collections.namedtuple(
    "Proc", "name params sample xml_columns requires autocommit",
    defaults=((), (), False))

SCHEDULE_FLAGS = tuple(
    f"SCH_{day}_{time}"
    for day in ("M", "TU", "W", "TH", "F", "ST", "SN")
    for time in ("Morning", "Afternoon", "Evening")
)

#: Which procedures each task calls (``check`` reports per task what can run).
TASK_PROCEDURES = {
    "nightly_db_maintenance": ("sp_STP_Nightly_Tasks",),
    "cic_changes_for_vol": ("sp_VOL_NUMChanged_l",),
    "volnotify": ("sp_VOL_Profile_Notify_Enabled", "sp_VOL_Profile_Notify",
                  "sp_VOL_Profile_Notify_Done"),
    "update_offline_tools_map": ("sp_STP_OfflineTools_Domains",),
    "getinvolvedapi": ("sp_VOL_GetInvolved_Enabled", "sp_VOL_GetInvolved_Sync"),
}

_PROCS = {}


def _table():
    """The procedures, built on first use: the sample SQL is only read when needed."""
    if not _PROCS:
        from cioctasks.sampledb import legacy, procsql

        for proc in (
            Proc("sp_STP_Nightly_Tasks", (), procsql.NIGHTLY_TASKS, autocommit=True,
                 requires=("CIC_Stats_RSN_Accumulator", "VOL_Stats_OPID_Accumulator",
                           "GBL_SharingProfile")),
            Proc("sp_VOL_NUMChanged_l", ("MODIFIED_DATE",), procsql.NUM_CHANGED,
                 requires=("GBL_BaseTable_History", "VOL_Opportunity", "GBL_Agency.UpdateEmailVOL")),
            Proc("sp_VOL_Profile_Notify_Enabled", (), procsql.PROFILE_NOTIFY_ENABLED,
                 requires=("STP_Member.UseVolunteerProfiles",)),
            Proc("sp_VOL_Profile_Notify", ("MemberID",), procsql.PROFILE_NOTIFY,
                 xml_columns=("OP_NAME", "ORG_NAME", "ViewInfo"),
                 requires=("VOL_Profile", "VOL_View.UseProfilesView")),
            Proc("sp_VOL_Profile_Notify_Done", ("MemberID",), procsql.PROFILE_NOTIFY_DONE,
                 requires=("STP_Member.LastVolProfileEmailDate",)),
            Proc("sp_STP_OfflineTools_Domains", (), procsql.OFFLINE_TOOLS_DOMAINS,
                 requires=("GBL_View_DomainMap.SecondaryName",)),
            Proc("sp_VOL_GetInvolved_Enabled", (), legacy.GETINVOLVED_ENABLED,
                 requires=legacy.REQUIRES),
            Proc("sp_VOL_GetInvolved_Sync",
                 ("MemberID", "GetInvolvedUser", "GetInvolvedToken", "GetInvolvedSite"),
                 legacy.GETINVOLVED_SYNC,
                 xml_columns=("COMMUNITIES", "INTERESTS", "SKILLS", "ViewInfo"),
                 requires=legacy.REQUIRES),
        ):
            _PROCS[proc.name] = proc
    return _PROCS


def get(name):
    """Return the Proc of that name; raise KeyError naming it if the toolkit does not know it."""
    try:
        return _table()[name]
    except KeyError:
        raise KeyError(f"unknown stored procedure {name}") from None


def decode_xml(text):
    """Turn FOR XML text (``<DESCS><DESC a="1" .../>...</DESCS>``, or the elements without a
    root) into a list of dicts: each element's attributes and the text of its children, one
    dict per element under the root. Raise ValueError for text that is not XML."""
    import xml.etree.ElementTree as ElementTree

    try:
        root = ElementTree.fromstring(f"<root>{text}</root>")
    except ElementTree.ParseError as error:
        raise ValueError(f"not XML: {error}") from None
    entries = []
    for element in root.iter():
        if element is root or (not element.attrib and len(element)):
            continue
        entry = dict(element.attrib)
        for child in element:
            entry[child.tag] = child.text
        if entry:
            entries.append(entry)
    return entries


def normalize(proc, results):
    """Return the result sets with the XML columns decoded into lists of dicts (an empty
    list for NULL). Raise ValueError naming the procedure and column for text that is not
    XML."""
    for rows in results:
        normalize_rows(proc, rows)
    return results


def normalize_rows(proc, rows):
    """Decode the XML columns of one batch of rows (dicts) in place, as ``normalize``."""
    if not proc.xml_columns:
        return rows
    for row in rows:
        for column in proc.xml_columns:
            value = row.get(column)
            if isinstance(value, bytes):
                value = value.decode("utf-8")
            if isinstance(value, str) and value.strip():
                try:
                    row[column] = decode_xml(value)
                except ValueError as error:
                    raise ValueError(f"{proc.name} returned {column} that is {error}") from None
            elif column in row:
                row[column] = []
    return rows
