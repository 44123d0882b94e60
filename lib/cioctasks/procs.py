"""The one table of CIOC stored procedures the toolkit calls, for both backends.

For ``mssql`` a procedure is called by name through ODBC. For ``sample`` each entry keeps
the SQL statements that give the same result columns over the sample schema
(``cioctasks.sampledb``); ``:Name`` placeholders take the arguments by parameter name, and
each statement that returns rows adds one result set.

CIOC returns its per-culture columns (``OP_NAME``, ``ORG_NAME``, ``ViewInfo``) as XML; the
sample returns JSON. ``normalize`` turns both into one shape, a list of dicts, one per
culture, so that scripts see the same rows from either backend.
"""

import collections


#: ``culture_columns``: columns holding one entry per culture (XML on SQL Server, JSON in
#: the sample). A namedtuple, not a dataclass: importing dataclasses costs more than the
#: rest of a script's start-up.
Proc = collections.namedtuple("Proc", "name params sample culture_columns", defaults=((),))


SCHEDULE_FLAGS = tuple(
    f"SCH_{day}_{time}"
    for day in ("M", "TU", "W", "TH", "F", "ST", "SN")
    for time in ("Morning", "Afternoon", "Evening")
)

_PROCS = {}


def _table():
    """The procedures, built on first use: the sample SQL is only read when needed."""
    if not _PROCS:
        from cioctasks.sampledb import procsql

        for proc in (
            Proc("sp_STP_Nightly_Tasks", (), procsql.NIGHTLY_TASKS),
            Proc("sp_VOL_NUMChanged_l", ("MODIFIED_DATE",), procsql.NUM_CHANGED),
            Proc("sp_VOL_Profile_Notify_Enabled", (), procsql.PROFILE_NOTIFY_ENABLED),
            Proc("sp_VOL_Profile_Notify", ("MemberID",), procsql.PROFILE_NOTIFY,
                 culture_columns=("OP_NAME", "ORG_NAME", "ViewInfo")),
            Proc("sp_VOL_Profile_Notify_Done", ("MemberID",), procsql.PROFILE_NOTIFY_DONE),
            Proc("sp_STP_OfflineTools_Domains", (), procsql.OFFLINE_TOOLS_DOMAINS),
            Proc("sp_VOL_GetInvolved_Enabled", (), procsql.GETINVOLVED_ENABLED),
            Proc("sp_VOL_GetInvolved_Sync",
                 ("MemberID", "GetInvolvedUser", "GetInvolvedToken", "GetInvolvedSite"),
                 procsql.GETINVOLVED_SYNC, culture_columns=("ViewInfo",)),
        ):
            _PROCS[proc.name] = proc
    return _PROCS


def get(name):
    """Return the Proc of that name; raise KeyError naming it if the toolkit does not know it."""
    try:
        return _table()[name]
    except KeyError:
        raise KeyError(f"unknown stored procedure {name}") from None


def _from_json(text):
    import json

    value = json.loads(text)
    return value if isinstance(value, list) else [value]


def _from_xml(text):
    """Turn CIOC's per-culture XML into a list of dicts: each element's attributes and the
    text of its children, one dict per element under the root."""
    import xml.etree.ElementTree as ElementTree

    root = ElementTree.fromstring(f"<root>{text}</root>")
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


def normalize(proc, backend, results):
    """Return the result sets with per-culture columns decoded into lists of dicts."""
    if not proc.culture_columns:
        return results
    decode = _from_json if backend == "sample" else _from_xml
    for rows in results:
        for row in rows:
            for column in proc.culture_columns:
                value = row.get(column)
                if isinstance(value, str) and value.strip():
                    row[column] = decode(value)
                elif column in row:
                    row[column] = []
    return results
