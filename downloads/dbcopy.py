"""Copy tables from a CIOC database into a new database file, a member's download.

The engine streams each table in batches (memory bounded whatever the table size: BATCH
rows at a time), maps column types, keeps Unicode, NULLs and dates, writes
each table in one transaction with many rows per INSERT, creates the indexes after loading
and checks the row count of every table. The script reads a table of PROCESS_ROWS rows or
more in reader processes (dbread.py) while it writes: the read through pyodbc alone takes
longer than the rest of the copy.

Targets: a SQLite database file (the default: it opens everywhere and Access can link it
through ODBC), or any ODBC target reached by a connection string, with a template file
copied first and a type map per target (``ACCESS_TYPES`` for the Microsoft Access driver).

    python downloads/dbcopy.py -a DATABASE OUTPUT [--table PATTERN]... [--where TABLE=SQL]...
"""

import contextlib
import itertools
import os
import sys
from pathlib import Path

import cioctasks

# dbread (the reader processes) is a sibling module, imported however this one is run.
sys.path.insert(0, str(Path(__file__).resolve().parent))

#: Rows fetched at a time from SQL Server, and read per query on the sample backend (the
#: SQLite ODBC driver reads a whole result set before its first row): what the copy holds
#: in memory at once. 2,000 rows of the widest CIOC tables (descriptions, with dozens of
#: nvarchar(4000) columns) peak at 49 MiB, 10,000 at 87 MiB; narrow statistics rows copy
#: no faster in larger pages.
BATCH = PAGE = 2000

# ODBC SQL type codes (sql.h, sqlext.h, and SQL Server's own).
INTEGER_TYPES = {4: "integer", 5: "integer", -6: "integer", -5: "bigint", -7: "boolean"}
NUMBER_TYPES = {2: "decimal", 3: "decimal", 6: "float", 7: "float", 8: "float"}
TEXT_TYPES = {1, 12, -1, -8, -9, -10, -152}  # -152: SQL Server xml
DATE_TYPES = {9: "datetime", 93: "datetime", 11: "datetime", 91: "date", 92: "time", -154: "time",
              -155: "datetimeoffset"}
BINARY_TYPES = {-2, -3, -4}

#: Declared types for each kind of column, per target.
SQLITE_TYPES = {
    "integer": "INTEGER", "bigint": "INTEGER", "boolean": "BIT", "decimal": "NUMERIC",
    "float": "REAL", "text": "TEXT", "datetime": "DATETIME", "date": "DATE", "time": "TEXT",
    "datetimeoffset": "TEXT", "guid": "TEXT", "binary": "BLOB",
}
ACCESS_TYPES = {
    "integer": "LONG", "bigint": "DECIMAL(19,0)", "boolean": "BIT", "decimal": "DOUBLE",
    "float": "DOUBLE", "text": "LONGTEXT", "short_text": "VARCHAR({size})",
    "datetime": "DATETIME", "date": "DATETIME", "time": "VARCHAR(32)",
    "datetimeoffset": "VARCHAR(40)", "guid": "VARCHAR(38)", "binary": "LONGBINARY",
}


class CopyError(cioctasks.TaskError):
    """A table that could not be copied whole."""


def quote(name):
    """Quote an identifier for SQL Server, Access and SQLite alike."""
    return "[" + name.replace("]", "]]") + "]"


class Column:
    def __init__(self, name, data_type, type_name, size, nullable=True):
        self.name = name
        self.data_type = data_type
        self.type_name = (type_name or "").lower()
        self.size = size or 0
        self.nullable = nullable

    @property
    def kind(self):
        if self.type_name == "uniqueidentifier" or self.data_type == -11:
            return "guid"
        for table in (INTEGER_TYPES, NUMBER_TYPES, DATE_TYPES):
            if self.data_type in table:
                return table[self.data_type]
        if self.data_type in BINARY_TYPES:
            return "binary"
        # Some drivers (the SQLite one) report declared numeric types as text codes.
        if self.type_name.startswith(("decimal", "numeric", "money", "smallmoney")):
            return "decimal"
        return "text"

    def declared_type(self, type_map):
        kind = self.kind
        if kind == "text" and "short_text" in type_map and 0 < self.size <= 255:
            return type_map["short_text"].format(size=self.size)
        return type_map[kind]


class Table:
    def __init__(self, name, columns, indexes):
        self.name = name
        self.columns = columns
        self.indexes = indexes  # [(index name, unique, [column names])]


def list_tables(source):
    """Return the names of the source database's base tables, sorted."""
    cursor = source.connection.cursor()
    names = [row.table_name for row in cursor.tables(tableType="TABLE")]
    return sorted(n for n in names if not n.lower().startswith(("sys", "sqlite_")))


def _column(row):
    # SQL_NO_NULLS is 0; SQL_NULLABLE 1 and SQL_NULLABLE_UNKNOWN 2 both may hold NULL.
    return Column(row.column_name, row.data_type, row.type_name, row.column_size,
                  nullable=row.nullable != 0)


def list_columns(source, names):
    """Return {table: [Column]} for the tables ``names``, in column order, from one
    catalog call (one call per table costs a round trip each on SQL Server)."""
    wanted = set(names)
    found, schemas = {}, {}
    for row in source.connection.cursor().columns():
        # A name in two schemas: the first one's columns only (CIOC keeps all in dbo).
        if row.table_name in wanted and schemas.setdefault(
                row.table_name, row.table_schem) == row.table_schem:
            found.setdefault(row.table_name, []).append((row.ordinal_position, _column(row)))
    return {name: [column for _, column in sorted(columns, key=lambda item: item[0])]
            for name, columns in found.items()}


def describe(source, name):
    """Return the Table (columns and indexes) of one source table."""
    cursor = source.connection.cursor()
    columns = [_column(c) for c in cursor.columns(table=name)]
    if not columns:
        raise CopyError(f"{name}: no such table or no columns")
    indexes = {}
    for row in cursor.statistics(name):
        if row.index_name and row.column_name:
            unique = not row.non_unique
            indexes.setdefault(row.index_name, (unique, []))[1].append(
                (row.ordinal_position, row.column_name))
    ordered = [(index, unique, [c for _, c in sorted(cols)])
               for index, (unique, cols) in sorted(indexes.items())]
    return Table(name, columns, ordered)


def _register_adapters():
    """Teach sqlite3 the types pyodbc returns, once, so rows go to executemany as they
    come: converting in Python row by row costs a third of the copy. The conversions are
    dbread.PLAIN's, the ones the reader processes apply themselves, all C callables (no
    Python frame per value). bool and None get adapters too (an int, NULL): without one,
    every such value goes through sqlite3's failed adapter lookup before it binds, about a
    tenth of the insert's time."""
    import sqlite3

    import dbread

    for kind, convert in dbread.PLAIN.items():
        sqlite3.register_adapter(kind, convert)
    sqlite3.register_adapter(type(None), {}.get)  # a C callable that returns None


class Target:
    """What every target shares: DDL through ``self.connection.execute`` (sqlite3 and
    pyodbc connections both have it), indexes after loading, the row count check."""

    type_map = SQLITE_TYPES
    connection = None

    def _commit(self):
        """Commit DDL where the connection is not in autocommit mode. The SQLite target's
        connection is (``isolation_level=None``), so here there is nothing to commit;
        OdbcTarget commits."""
        return None

    def create(self, table, columns):
        body = ", ".join(f"{quote(c.name)} {c.declared_type(self.type_map)}" for c in columns)
        self.connection.execute(f"CREATE TABLE {quote(table.name)} ({body})")
        self._commit()

    def create_indexes(self, table, columns):
        kept = {c.name for c in columns}
        for number, (_, unique, names) in enumerate(table.indexes, 1):
            if not set(names) <= kept:
                continue
            keyword = "UNIQUE INDEX" if unique else "INDEX"
            index = quote(f"ix_{table.name}_{number}")
            cols = ", ".join(quote(n) for n in names)
            self.connection.execute(f"CREATE {keyword} {index} ON {quote(table.name)} ({cols})")
        self._commit()

    def count(self, table):
        return self.connection.execute(f"SELECT COUNT(*) FROM {quote(table.name)}").fetchone()[0]

    def close(self):
        self.connection.close()


#: Rows per INSERT statement into SQLite, at most (fewer when the row is wide).
ROWS_PER_INSERT = 100


def _insert_sql(table, width, rows):
    row = "(" + ", ".join("?" * width) + ")"
    return f"INSERT INTO {quote(table)} VALUES " + ", ".join([row] * rows)


class SqliteTarget(Target):
    """A new SQLite database file written with the stdlib driver (the fast path). Any
    error writing it (a full disk: "database or disk is full") is a CopyError naming the
    file."""

    def __init__(self, path):
        import sqlite3

        _register_adapters()
        self.path = Path(path)
        self.connection = None
        with self._writing():
            if self.path.exists():
                self.path.unlink()
            self.connection = sqlite3.connect(self.path, isolation_level=None)
            # The file is built in a work folder and published only when whole: a crash
            # means a rebuild, so there is no need to journal or sync while loading.
            self.connection.execute("PRAGMA journal_mode=OFF")
            self.connection.execute("PRAGMA synchronous=OFF")
            # SQLite's default page cache (2 MiB) on purpose: a larger one grows with the
            # table while indexes are built (64 MiB of cache cost 100 MiB at 876,000 rows)
            # and builds them no faster.

    @contextlib.contextmanager
    def _writing(self):
        import sqlite3

        try:
            yield
        except sqlite3.Error as error:
            raise CopyError(f"cannot write {self.path}: {error}") from None
        except OSError as error:
            raise CopyError(f"cannot write {self.path}: {error.strerror or error}") from None

    def create(self, table, columns):
        with self._writing():
            super().create(table, columns)

    def create_indexes(self, table, columns):
        with self._writing():
            super().create_indexes(table, columns)

    def count(self, table):
        with self._writing():
            return super().count(table)

    def insert(self, table, columns, batches):
        """Insert the batches (lists of rows) in one transaction; return the rows."""
        width = len(columns)

        def flat(rows):
            values = list(itertools.chain.from_iterable(rows))
            if len(values) != len(rows) * width:  # would shift values across rows
                raise CopyError(f"{table.name}: rows of other than {width} values")
            return len(rows), values

        return self.insert_values(table, columns, map(flat, batches))

    def insert_values(self, table, columns, batches):
        """Insert the batches, each (row count, the rows' values in one flat list), in one
        transaction; return the rows. Up to ROWS_PER_INSERT rows go in each INSERT, within
        SQLite's limit on bound values: a statement per row costs a step, a reset and a
        release of the interpreter lock each, a sixth of the insert's time."""
        import sqlite3

        width = len(columns)
        limit = self.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        per_insert = max(1, min(ROWS_PER_INSERT, limit // width))
        full = _insert_sql(table.name, width, per_insert)
        count = 0
        with self._writing():
            self.connection.execute("BEGIN")
            try:
                for rows, values in batches:
                    if len(values) != rows * width:  # would shift values across rows
                        raise CopyError(f"{table.name}: rows of other than {width} values")
                    whole = rows - rows % per_insert
                    # zip over one iterator: the values of per_insert rows at a time, in
                    # order; those of the last, shorter group go in their own INSERT.
                    self.connection.executemany(full, zip(*[iter(values)] * (per_insert * width)))
                    if whole < rows:
                        self.connection.execute(_insert_sql(table.name, width, rows - whole),
                                                values[whole * width:])
                    count += rows
                self.connection.execute("COMMIT")
            except BaseException:
                if self.connection.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self.connection.execute("ROLLBACK")
                raise
        return count

    def close(self):
        if self.connection is not None:
            with self._writing():
                self.connection.close()


class OdbcTarget(Target):
    """Any ODBC target: ``template`` is copied to ``path`` first, then the connection
    string (with ``{path}`` in it) opens it. Never uses pyodbc's ``fast_executemany``: the
    SQLite ODBC driver crashes with it, and the Access driver gains little."""

    def __init__(self, path, connection_string, template=None, type_map=ACCESS_TYPES):
        import shutil

        import pyodbc

        self.path = Path(path)
        if template:
            shutil.copyfile(template, self.path)
        self.type_map = type_map
        self.connection = pyodbc.connect(connection_string.format(path=self.path),
                                         autocommit=False)

    def _commit(self):
        self.connection.commit()

    def insert(self, table, columns, batches):
        marks = ", ".join("?" for _ in columns)
        cursor = self.connection.cursor()
        cursor.fast_executemany = False
        sql = f"INSERT INTO {quote(table.name)} VALUES ({marks})"
        count = 0
        for rows in batches:
            cursor.executemany(sql, [tuple(row) for row in rows])
            count += len(rows)
        self.connection.commit()
        return count



#: Rows from which a table is read in reader processes (when the copy has them): starting
#: one costs 50-80 ms, about what reading 20,000 rows in this process costs.
PROCESS_ROWS = 20_000


def has_rows(source, table, condition, rows):
    """Whether ``table`` has at least ``rows`` rows matching ``condition`` (counting no
    further than that)."""
    where = f" WHERE ({condition})" if condition else ""
    if source.backend == "sample":
        sql = f"SELECT COUNT(*) FROM (SELECT 1 FROM {table}{where} LIMIT {int(rows)})"
    else:
        sql = (f"SELECT COUNT(*) FROM (SELECT TOP ({int(rows)}) 1 AS one FROM {table}{where})"
               " AS seen")
    return source.query_rows(sql)[0][0] >= rows


def copy_table(source, target, table, condition=None, skip_columns=(), batch=BATCH,
               readers=None):
    """Copy one table (rows matching ``condition``, without columns matching the
    ``skip_columns`` patterns) into ``target``; return the number of rows.

    With ``readers`` (dbread.Readers) and a SqliteTarget, a table of PROCESS_ROWS rows or
    more is read in reader processes while this one writes. Raise CopyError if the target
    does not hold exactly the rows read, or if a reader process fails.
    """
    import fnmatch

    columns = [c for c in table.columns
               if not any(fnmatch.fnmatchcase(c.name, p) for p in skip_columns)]
    if not columns:
        raise CopyError(f"{table.name}: every column is skipped")
    target.create(table, columns)
    select = ", ".join(quote(c.name) for c in columns)
    if (readers is not None and isinstance(target, SqliteTarget)
            and has_rows(source, quote(table.name), condition, PROCESS_ROWS)):
        import dbread

        batches = readers.batches(source, select, quote(table.name), condition, page=PAGE,
                                  size=batch)
        try:
            with contextlib.closing(batches):
                copied = target.insert_values(table, columns, batches)
        except dbread.ReaderError as error:
            raise CopyError(f"{table.name}: {error}") from None
    else:
        batches = source.iterate_table(select, quote(table.name), condition, size=batch,
                                       page=PAGE)
        copied = target.insert(table, columns, batches)
    target.create_indexes(table, columns)
    written = target.count(table)
    if written != copied:
        raise CopyError(f"{table.name}: read {copied} rows but the copy holds {written}")
    return copied


def copy_database(source, target, plan, log=None, described=None, readers=None):
    """Copy every (table name, condition, skip_columns) of ``plan``; return {table: rows}.

    ``described``, a dict, keeps each Table described across calls (one member's download
    after another reads the catalog once). ``readers``: see copy_table."""
    counts = {}
    described = {} if described is None else described
    for name, condition, skip_columns in plan:
        if name not in described:
            described[name] = describe(source, name)
        table = described[name]
        counts[name] = copy_table(source, target, table, condition, skip_columns,
                                  readers=readers)
        if log:
            log.debug("%s: %d rows", name, counts[name])
    return counts


def open_readers(settings, source):
    """Reader processes (dbread.Readers, started only when a large table needs them) that
    open ``source``'s database as it was opened."""
    import dbread

    from cioctasks import db

    return dbread.Readers(source.connection_string, source.name, source.backend,
                          db.connect_timeout(settings), db.QUERY_TIMEOUT)


def choose_database(context):
    """The database -a names, as the runner checks it for every other script: one of the
    folders under CIOC_UDL_BASE (any case), else a ConfigError (exit 2) listing them, so
    that a path such as ../UDLs/x never reaches the UDL lookup."""
    from cioctasks import db

    return db.select_databases(context.settings.udl_base, [context.args.database_name])[0]


def copy_task(context):
    """Copy the chosen tables of one database into OUTPUT (a SQLite file), written beside
    it and put in its place only when whole."""
    import fnmatch

    from cioctasks import files

    args = context.args
    wheres = dict(args.where)
    output = Path(args.output)
    if context.dry_run:
        return f"would copy {context.prepared} into {output}"
    with context.connect(context.prepared) as source:
        names = [n for n in list_tables(source)
                 if not args.table or any(fnmatch.fnmatch(n, p) for p in args.table)]
        plan = [(n, wheres.get(n), ()) for n in names]
        try:
            fd, temporary = files.create_temporary(output)
        except OSError as error:
            raise CopyError(f"cannot write {output}: {error.strerror or error}") from None
        os.close(fd)
        try:
            readers = open_readers(context.settings, source)
            target = SqliteTarget(temporary)
            try:
                counts = copy_database(source, target, plan, context.log, readers=readers)
            finally:
                readers.close()
                target.close()
            try:
                files.publish(temporary, output)
            except OSError as error:
                raise CopyError(f"cannot write {output}: {error.strerror or error}") from None
        finally:
            with contextlib.suppress(OSError):
                temporary.unlink()
    return f"{len(counts)} tables, {sum(counts.values())} rows into {output}"


def table_condition(text):
    """An argparse type for --where: TABLE=SQL as (table, condition)."""
    import argparse

    table, equals, condition = text.partition("=")
    if not (table.strip() and equals and condition.strip()):
        raise argparse.ArgumentTypeError(f"not TABLE=SQL: {text!r}")
    return table.strip(), condition


def add_arguments(parser):
    parser.add_argument("-a", "--database", dest="database_name", required=True,
                        help="the database to copy from (a folder under CIOC_UDL_BASE)")
    parser.add_argument("output", help="the SQLite file to write")
    parser.add_argument("--table", action="append", default=[], metavar="PATTERN",
                        help="copy only tables matching this pattern (repeatable)")
    parser.add_argument("--where", action="append", default=[], metavar="TABLE=SQL",
                        type=table_condition, help="a row condition for one table (repeatable)")


if __name__ == "__main__":
    sys.exit(cioctasks.run(copy_task, add_arguments, prepare=choose_database))
