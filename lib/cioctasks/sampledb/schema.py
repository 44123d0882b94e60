"""The sample CIOC schema: every table of the real CIOC database, created in SQLite.

The facts come from ``cioc_schema.json`` beside this module: CIOC's tables (columns in
order with SQL Server type, length, nullability, identity and default; primary, unique and
foreign keys) and its procedure names, read from OpenCIOC/onlineresources at the commit its
``source`` names. ``tests/test_sampledb.py`` fails when the sample drifts from them.

SQL Server types become SQLite declared types that the SQLite3 ODBC driver reports and
converts the way SQL Server's driver does for pyodbc: ``smalldatetime`` and ``datetime``
come back as datetimes, ``bit`` as bools, ``decimal`` as numbers, text as str. Dates are
stored as ``YYYY-MM-DD HH:MM:SS.fff`` text, the form the driver binds a datetime parameter
in, so comparisons with bound parameters work.

An identity column that is the table's key (or a table without a key) becomes SQLite's
``INTEGER PRIMARY KEY``, which numbers rows the way an identity does. The three tables
whose identity is not their key (``GBL_BaseTable.RSN``, ``VOL_Opportunity.OP_ID``,
``TAX_U_Term.TM_ID``) get their numbers from ``insert``.
"""

import datetime
import functools
import json
import uuid
from pathlib import Path

FACTS = Path(__file__).with_name("cioc_schema.json")

#: SQL Server type -> SQLite declared type (``{length}``, ``{precision}`` filled in).
TYPES = {
    "bigint": "bigint", "int": "int", "smallint": "smallint", "tinyint": "tinyint",
    "bit": "bit", "decimal": "numeric({precision})", "numeric": "numeric({precision})",
    "money": "numeric(19,4)", "float": "float", "real": "real",
    "smalldatetime": "datetime", "datetime": "datetime", "datetime2": "datetime",
    "date": "date", "time": "time",
    "char": "char({length})", "nchar": "nchar({length})",
    "varchar": "varchar({length})", "nvarchar": "nvarchar({length})",
    "text": "text", "ntext": "text", "xml": "xml", "uniqueidentifier": "uniqueidentifier",
    "varbinary": "blob", "binary": "blob", "image": "blob",
}
#: Types whose values are numbers in the sample.
NUMERIC = {"bigint", "int", "smallint", "tinyint", "bit", "decimal", "numeric", "money",
           "float", "real"}
DATES = {"smalldatetime", "datetime", "datetime2", "date"}

#: The procedures that the GetInvolved feature had, and that CIOC removed in commit
#: aff3c04 (2022-10-08, "remove GetInvolved ALL FEATURES").
GETINVOLVED_PROCEDURES = ("sp_VOL_GetInvolved_Enabled", "sp_VOL_GetInvolved_Sync")


@functools.lru_cache(maxsize=None)
def facts():
    """Return the schema facts: {"source", "tables": {name: table}, "procedures": [...]}."""
    return json.loads(FACTS.read_text(encoding="utf-8"))


def tables():
    return facts()["tables"]


def quote(name):
    return '"' + name.replace('"', '""') + '"'


def sqlite_type(column):
    """The SQLite declared type for a column of the facts."""
    kind = column["type"]
    template = TYPES.get(kind, kind)
    length = column.get("length")
    if "{length}" in template:
        if length in (None, "max") or int(length) > 4000:
            return "text" if kind in ("varchar", "nvarchar") else template.replace("({length})", "")
        return template.format(length=length)
    if "{precision}" in template:
        precision = column.get("precision") or column.get("length") or "18,2"
        if str(precision).isdigit():  # the facts keep only one number: allow two decimals
            precision = f"{precision},2"
        return template.format(precision=precision)
    return template


def _default(column):
    """The SQLite DEFAULT clause of a SQL Server default, or '' for none we can express."""
    text = column.get("default")
    if text is None:
        return ""
    bare = text
    while bare.startswith("(") and bare.endswith(")"):
        bare = bare[1:-1]
    lowered = bare.lower()
    if lowered == "getdate()":
        return " DEFAULT (strftime('%Y-%m-%d %H:%M:%S.000', 'now', 'localtime'))"
    if lowered == "newid()":
        return (" DEFAULT ('{' || upper(hex(randomblob(4))) || '-' || upper(hex(randomblob(2)))"
                " || '-4' || substr(upper(hex(randomblob(2))), 2) || '-'"
                " || upper(hex(randomblob(2))) || '-' || upper(hex(randomblob(6))) || '}')")
    if lowered.startswith("convert(") and "crypt_gen_random" in lowered:
        return " DEFAULT (upper(hex(randomblob(3))))"
    if bare.lstrip("-").replace(".", "", 1).isdigit() or bare.startswith("'"):
        return f" DEFAULT {bare}"
    return ""


def varying_default(column):
    text = (column.get("default") or "").lower()
    return any(word in text for word in ("getdate", "newid", "crypt_gen_random"))


def _identity_key(table):
    """The identity column SQLite numbers itself (INTEGER PRIMARY KEY), or None."""
    identity = [c["name"] for c in table["columns"] if c.get("identity")]
    key = table.get("primary_key")
    if len(identity) == 1 and (not key or key == identity):
        return identity[0]
    return None


def create_table(name, table):
    """Return the CREATE TABLE statement of one table of the facts."""
    rowid = _identity_key(table)
    lines = []
    for column in table["columns"]:
        if column["name"] == rowid:
            lines.append(f"{quote(column['name'])} INTEGER PRIMARY KEY")
            continue
        null = "" if column.get("null", True) else " NOT NULL"
        lines.append(f"{quote(column['name'])} {sqlite_type(column)}{null}{_default(column)}")
    key = table.get("primary_key")
    if key and key != [rowid]:
        lines.append(f"PRIMARY KEY ({', '.join(quote(c) for c in key)})")
    for unique in table.get("unique") or ():
        lines.append(f"UNIQUE ({', '.join(quote(c) for c in unique)})")
    return f"CREATE TABLE {quote(name)} (\n    " + ",\n    ".join(lines) + "\n)"


def indexes(name, table):
    """CREATE INDEX statements for the columns of each foreign key (SQL Server's tables
    have such indexes; the sample's procedures join on them)."""
    keys = {tuple(table.get("primary_key") or ())} | {tuple(u) for u in table.get("unique") or ()}
    statements = []
    for number, foreign in enumerate(table.get("foreign_keys") or (), 1):
        columns = tuple(foreign["columns"])
        if any(key[:len(columns)] == columns for key in keys):
            continue
        keys.add(columns)
        statements.append(f"CREATE INDEX {quote(f'IX_{name}_{number}')} ON {quote(name)} "
                          f"({', '.join(quote(c) for c in columns)})")
    return statements


def create_all(connection, extra=None):
    """Create every table of the facts (and of ``extra``, {name: table}) in ``connection``."""
    everything = dict(tables())
    everything.update(extra or {})
    for name, table in everything.items():
        connection.execute(create_table(name, table))


def create_indexes(connection, extra=None):
    everything = dict(tables())
    everything.update(extra or {})
    for name, table in everything.items():
        for statement in indexes(name, table):
            connection.execute(statement)


def stamp(moment):
    """A datetime as the text the SQLite ODBC driver binds: millisecond precision."""
    return moment.isoformat(sep=" ", timespec="milliseconds")


def to_smalldatetime(value):
    """A stamp rounded to the minute, as SQL Server stores a smalldatetime (29.998
    seconds round down, 29.999 up); other values unchanged."""
    if not isinstance(value, str) or len(value) < 19 or value[10] != " ":
        return value
    moment = datetime.datetime.fromisoformat(value)
    rounded = (moment + datetime.timedelta(seconds=30, microseconds=1000)).replace(
        second=0, microsecond=0)
    return stamp(rounded)


def minute_columns(table, columns):
    """The positions in ``columns`` of the table's smalldatetime columns."""
    kinds = {c["name"]: c["type"] for c in table["columns"]}
    return [i for i, name in enumerate(columns) if kinds.get(name) == "smalldatetime"]


def filler(column, number):
    """A value for a NOT NULL column that has no default: unique per ``number`` where the
    type allows, short enough for the column."""
    kind = column["type"]
    if kind == "bit":
        return 0
    if kind == "tinyint":
        return number % 256
    if kind in NUMERIC:
        return number
    if kind in DATES:
        return stamp(datetime.datetime(2020, 1, 1) + datetime.timedelta(minutes=number))
    if kind == "time":
        return "12:00:00"
    if kind == "uniqueidentifier":
        return "{" + str(uuid.UUID(int=number + 1, version=4)).upper() + "}"
    if kind == "xml":
        return "<DESCS/>"
    text = f"{column['name']} {number}"
    length = column.get("length")
    if length not in (None, "max"):
        width = int(length)
        text = str(number)[-width:] if len(text) > width else text
    return text


class Inserter:
    """Insert rows given as dicts, filling each NOT NULL column that has no default and no
    value (identities included) the way ``filler`` does. Keeps the next identity number."""

    def __init__(self, connection, extra=None):
        self.connection = connection
        self.tables = dict(tables())
        self.tables.update(extra or {})
        self._next = {}

    def required(self, name):
        """The columns a row needs a value for: NOT NULL without a default, identities
        SQLite does not number, and those whose default differs from build to build
        (GETDATE(), NEWID(), random keys), so that a seed always gives the same rows."""
        table = self.tables[name]
        rowid = _identity_key(table)
        return [c for c in table["columns"]
                if c["name"] != rowid
                and (("default" not in c and (not c.get("null", True) or c.get("identity")))
                     or varying_default(c))]

    def number(self, name, column):
        key = (name, column)
        if key not in self._next:
            found = self.connection.execute(
                f"SELECT MAX({quote(column)}), COUNT(*) FROM {quote(name)}").fetchone()
            # A number column continues from its highest value; any other from the row count.
            highest = str(found[0] or 0)
            self._next[key] = int(highest) if highest.lstrip("-").isdigit() else found[1]
        self._next[key] += 1
        return self._next[key]

    def insert(self, name, rows):
        """Insert ``rows`` (dicts of column -> value) into table ``name``; return the rows as
        inserted (with the filled columns)."""
        required = self.required(name)
        done = []
        statements = {}
        for row in rows:
            row = dict(row)
            for column in required:
                if row.get(column["name"]) is None:
                    row[column["name"]] = filler(column, self.number(name, column["name"]))
            for column in minute_columns(self.tables[name], list(row)):
                key = list(row)[column]
                row[key] = to_smalldatetime(row[key])
            columns = tuple(row)
            sql = statements.get(columns)
            if sql is None and not columns:
                sql = statements[columns] = f"INSERT INTO {quote(name)} DEFAULT VALUES"
            elif sql is None:
                sql = statements[columns] = (
                    f"INSERT INTO {quote(name)} ({', '.join(quote(c) for c in columns)}) "
                    f"VALUES ({', '.join('?' for _ in columns)})")
            self.connection.execute(sql, tuple(row.values()))
            done.append(row)
        return done


def insert(connection, name, **values):
    """Insert one row into a sample table, filling the required columns not given; return
    the row as inserted. For tests: ``insert(db, "VOL_OP_CM", VNUM="V000001", CM_ID=3)``."""
    return Inserter(connection).insert(name, [values])[0]
