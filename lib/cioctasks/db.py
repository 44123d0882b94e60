"""Database connections through ODBC (pyodbc), addressed by the per-site UDL file.

``connect(name, settings)`` opens ``<CIOC_UDL_BASE>/<name>/cron_job_runner.udl`` and returns a
``Database`` whose ``call(proc, *args)`` runs a CIOC stored procedure and returns every
result set as a list of dicts. On SQL Server that is an ODBC ``{CALL ...}``; on the sample
backend (SQLite through the SQLite3 ODBC driver) it is the SQL that ``procs`` keeps for it,
so scripts never branch on the backend.

Connecting has a deadline of its own (``CIOC_DB_CONNECT_TIMEOUT``, 30 s): some drivers
(FreeTDS) ignore the login timeout and wait for ever on a server that accepts and never
answers.
"""

import contextlib
import datetime
import re
from pathlib import Path

from cioctasks import udl
from cioctasks.errors import ConfigError, TaskError

UDL_NAME = "cron_job_runner.udl"
LOGIN_TIMEOUT = 30
QUERY_TIMEOUT = 600
#: Seconds a connection may take, whatever the driver does with its login timeout.
CONNECT_TIMEOUT_VARIABLE = "CIOC_DB_CONNECT_TIMEOUT"


class DatabaseError(TaskError):
    """A database that cannot be reached or a statement that failed; exit 1 for that database."""


def list_databases(udl_base):
    """Given the UDL base folder, return the sorted names of its folders (hidden ones, whose
    name starts with a dot, left out). Each is a site: one whose job-runner UDL is missing
    or is not a file is still listed, so that it fails by name instead of dropping out."""
    base = Path(udl_base)
    try:
        return sorted((p.name for p in base.iterdir()
                       if not p.name.startswith(".") and p.is_dir()), key=str.lower)
    except OSError:
        return []


def find_udl(folder):
    """Return the path of the job-runner UDL in a folder (any case of its name, whatever it
    is: a file, a folder), or None."""
    try:
        for entry in Path(folder).iterdir():
            if entry.name.lower() == UDL_NAME:
                return entry
    except OSError:
        pass
    return None


def select_databases(udl_base, wanted):
    """Given the UDL base and the ``-a`` names (may be empty), return the names to run.

    Names match case-insensitively. Raise ConfigError (exit 2) for an unknown name, listing
    the known ones.
    """
    known = list_databases(udl_base)
    if not wanted:
        return known
    by_lower = {name.lower(): name for name in known}
    chosen, unknown = [], []
    for name in wanted:
        match = by_lower.get(name.lower())
        if match is None:
            unknown.append(name)
        elif match not in chosen:
            chosen.append(match)
    if unknown:
        listed = ", ".join(known) if known else f"none under {udl_base}"
        raise ConfigError(f"unknown database {', '.join(unknown)}; known: {listed}")
    return chosen


def driver_of(connection_string):
    """Return the ODBC driver a connection string names, or None (a DSN)."""
    match = re.search(r"(?i)\bdriver\s*=\s*\{?([^;}]*)", connection_string)
    return match.group(1).strip() if match else None


def backend_of(connection_string):
    """Return ``sample`` for the SQLite ODBC driver, else ``mssql``."""
    return "sample" if "sqlite" in (driver_of(connection_string) or "").lower() else "mssql"


def _prepare_sample_string(connection_string):
    # The SQLite3 driver waits this long (ms) for a lock held by another process.
    if not re.search(r"(?i)\btimeout\s*=", connection_string):
        connection_string += ";Timeout=30000"
    # Without NoCreat the driver creates an empty database for a path that does not exist,
    # and a mistyped UDL would "connect" to it.
    if not re.search(r"(?i)\bnocreat\s*=", connection_string):
        connection_string += ";NoCreat=1"
    # In autocommit mode (Database.call_batches) the driver then steps through a result
    # set; without it, it reads the whole set into memory at execute.
    if not re.search(r"(?i)\bstepapi\s*=", connection_string):
        connection_string += ";StepAPI=1"
    return connection_string


def connect_timeout(settings):
    """Return the seconds a connection may take: ``CIOC_DB_CONNECT_TIMEOUT`` (1-600), else
    LOGIN_TIMEOUT. Raise ConfigError naming the variable when it is bad."""
    from cioctasks import config

    return config.setting_seconds(settings, CONNECT_TIMEOUT_VARIABLE, LOGIN_TIMEOUT, 1, 600)


def connect(name, settings, login_timeout=None, query_timeout=QUERY_TIMEOUT):
    """Given a database name and Settings, return an open Database.

    Raise ConfigError (that database fails) when its folder has no usable UDL, and
    DatabaseError when the server cannot be reached within ``login_timeout`` seconds
    (default ``connect_timeout(settings)``). No message holds a password.
    """
    folder = Path(settings.udl_base) / name
    path = find_udl(folder)
    if path is None:
        raise ConfigError(f"no {UDL_NAME} in {folder}")
    if path.is_dir():
        raise ConfigError(f"{path} is a folder, not a UDL file")
    properties = udl.read(path)
    connection_string = udl.to_odbc(properties, settings.odbc_driver, path)
    # For a SQL Server UDL the driver is CIOC_ODBC_DRIVER's; for MSDASQL the UDL names it.
    driver_setting = "CIOC_ODBC_DRIVER" if udl.provider_kind(properties) == "sqlserver" else None
    return open_connection(connection_string, name, login_timeout or connect_timeout(settings),
                           query_timeout, driver_setting)


def open_connection(connection_string, name="database", login_timeout=LOGIN_TIMEOUT,
                    query_timeout=QUERY_TIMEOUT, driver_setting=None):
    """Open an ODBC connection string; return a Database. Raise DatabaseError if it fails
    or takes longer than ``login_timeout`` seconds; a driver that is not installed is
    named, with ``driver_setting``, the variable that chose it, when one did."""
    import pyodbc

    backend = backend_of(connection_string)
    if backend == "sample":
        connection_string = _prepare_sample_string(connection_string)
    try:
        connection = _connect_within(connection_string, login_timeout, name)
    except pyodbc.Error as error:
        reason = _missing_driver(connection_string, driver_setting) or describe(error)
        raise DatabaseError(f"{name}: cannot connect: {reason}") from None
    if query_timeout:
        connection.timeout = int(query_timeout)
    return Database(connection, name, backend, connection_string)


#: Seconds the deadline waits beyond the login timeout, so that a driver that keeps it
#: reports its own reason first.
CONNECT_GRACE = 2


def _connect_within(connection_string, seconds, name):
    """``pyodbc.connect`` with a deadline that does not depend on the driver.

    The connect runs in a daemon thread (pyodbc lets go of the GIL while the driver works)
    and is given up after ``seconds`` plus CONNECT_GRACE. A thread stuck in the driver
    cannot be stopped, but as a daemon it keeps neither the run nor the process from ending,
    and a connection that arrives after the deadline is closed by that thread.
    """
    import threading

    import pyodbc

    result = {}
    lock = threading.Lock()
    done = threading.Event()

    def attempt():
        try:
            connection = pyodbc.connect(connection_string, timeout=max(1, int(seconds)),
                                        autocommit=False)
        except BaseException as error:  # handed to the caller below
            result["error"] = error
        else:
            with lock:
                late = result.get("abandoned", False)
                result["connection"] = connection
            if late:
                try:
                    connection.close()
                except pyodbc.Error:
                    pass
        finally:
            done.set()

    threading.Thread(target=attempt, name=f"connect {name}", daemon=True).start()
    done.wait(seconds + CONNECT_GRACE)
    with lock:
        if "connection" not in result and "error" not in result:
            result["abandoned"] = True
            raise DatabaseError(f"{name}: cannot connect: no answer within {seconds:g} s")
    if "error" in result:
        raise result["error"]
    return result["connection"]


def _missing_driver(connection_string, driver_setting):
    """Say which ODBC driver a failed connection string names that is not installed, and
    what to do; return None when the driver is installed (or none is named)."""
    import pyodbc

    driver = driver_of(connection_string)
    if not driver:
        return None
    installed = pyodbc.drivers()
    if driver.lower() in (name.lower() for name in installed):
        return None
    listed = ", ".join(installed) or "none"
    fix = (f"set {driver_setting} to one of them or install it" if driver_setting
           else "install it or name an installed one")
    return f"ODBC driver {driver!r} is not installed (installed: {listed}); {fix}"


def describe(error):
    """Return a one-line, masked description of a pyodbc error."""
    args = getattr(error, "args", ())
    text = str(args[1] if len(args) > 1 else args[0] if args else error)
    text = " ".join(text.split())
    return udl.mask(text)[:500]


def _placeholders(sql, args):
    """Turn ``:Name`` placeholders (outside string literals) into ``?``; return (sql, values).

    A whole number (of SQLite's 64 bits) is written into the SQL instead, in brackets: the
    SQLite ODBC driver steps through the rows of a statement without parameters, but reads
    those of one with parameters whole at execute. An int's decimal text is all it can be,
    so nothing can be injected."""
    values = []

    def replace(match):
        key = match.group(1)
        if key is None:
            return match.group(0)  # a string literal, kept as it is
        if key not in args:
            raise KeyError(f"no argument for placeholder :{key}")
        value = args[key]
        if isinstance(value, int) and -2**63 <= value < 2**63:
            return f"({int(value)})"  # in brackets: "1-:N" with N = -5 must not become "1--5"
        values.append(value)
        return "?"

    return re.sub(r"'(?:[^']|'')*'|(?<![:\w]):([A-Za-z_]\w*)", replace, sql), values


class Database:
    """One open connection. Rows come back as dicts keyed by column name."""

    def __init__(self, connection, name, backend, connection_string=None):
        self.connection = connection
        self.name = name
        self.backend = backend
        # How it was opened, for another process that must open the same database (dbcopy's
        # readers). It holds the password: never logged, never in a message.
        self.connection_string = connection_string

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.connection.close()
        except Exception:  # closing a broken connection must not hide the real error
            pass

    def _cursor(self):
        return self.connection.cursor()

    def _run(self, cursor, sql, params=()):
        import pyodbc

        try:
            cursor.execute(sql, *params)
        except pyodbc.Error as error:
            self.rollback()
            raise DatabaseError(f"{self.name}: {describe(error)}") from None

    @staticmethod
    def _rows(cursor):
        if cursor.description is None:
            return None
        columns = [c[0] for c in cursor.description]
        return [dict(zip(columns, row)) for row in cursor.fetchall()]

    def query(self, sql, *params):
        """Run a SELECT and return its rows as dicts."""
        cursor = self._cursor()
        self._run(cursor, sql, params)
        return self._rows(cursor) or []

    def iterate(self, sql, *params, size=5000):
        """Run a SELECT and yield (columns, rows) batches of at most ``size`` rows."""
        import pyodbc

        cursor = self._cursor()
        self._run(cursor, sql, params)
        columns = [c[0] for c in cursor.description]
        while True:
            try:
                rows = cursor.fetchmany(size)
            except pyodbc.Error as error:
                raise DatabaseError(f"{self.name}: {describe(error)}") from None
            if not rows:
                return
            yield columns, rows

    def iterate_table(self, select, table, condition=None, size=5000, page=50_000):
        """Yield batches (lists of rows) of ``SELECT <select> FROM <table> [WHERE condition]``,
        memory bounded whatever the table's size.

        The SQLite ODBC driver reads a whole result set into memory before the first row,
        so on the sample backend the table is read in pages by rowid (``page_queries``);
        SQL Server streams.
        """
        if self.backend != "sample":
            where = f" WHERE ({condition})" if condition else ""
            for _, rows in self.iterate(f"SELECT {select} FROM {table}{where}", size=size):
                yield rows
            return
        for sql in self.page_queries(select, table, condition, page):
            for _, rows in self.iterate(sql, size=size):
                yield rows

    def page_queries(self, select, table, condition=None, page=50_000):
        """On the sample backend, yield the SELECTs that read ``SELECT <select> FROM
        <table> [WHERE condition]`` in pages of at most ``page`` rows, in rowid order; the
        bound of each page is looked up when the page is asked for."""
        where = f" WHERE ({condition})" if condition else " WHERE 1 = 1"
        # NOT INDEXED keeps SQLite on a rowid range scan: through an index on the condition's
        # columns, each page would read and sort every matching row again.
        source = f"{table} NOT INDEXED{where}"
        # Each page's upper rowid first, then its rows without their rowid: selecting the
        # rowid with every row and cutting it off in Python cost a sixth of the read.
        last = None
        while True:
            after = "" if last is None else f" AND rowid > {int(last)}"
            bound = self.query_rows(f"SELECT rowid FROM {source}{after} ORDER BY rowid "
                                    f"LIMIT 1 OFFSET {page - 1}")
            upto = f" AND rowid <= {int(bound[0][0])}" if bound else ""
            yield f"SELECT {select} FROM {source}{after}{upto}"
            if not bound:  # fewer than ``page`` rows were left: that query reads them all
                return
            last = bound[0][0]

    def query_rows(self, sql, *params):
        """Run a SELECT and return its rows as pyodbc rows (tuples), not dicts."""
        import pyodbc

        cursor = self._cursor()
        self._run(cursor, sql, params)
        try:
            return cursor.fetchall()
        except pyodbc.Error as error:
            raise DatabaseError(f"{self.name}: {describe(error)}") from None

    def execute(self, sql, *params):
        """Run a statement and commit; return the row count."""
        cursor = self._cursor()
        self._run(cursor, sql, params)
        count = cursor.rowcount
        self.commit()
        return count

    def commit(self):
        self.connection.commit()

    def rollback(self):
        try:
            self.connection.rollback()
        except Exception:  # the connection may already be gone
            pass

    def call(self, name, *args):
        """Run a CIOC stored procedure; return its result sets, each a list of dicts.

        A procedure marked ``autocommit`` runs with autocommit on, so the transactions it
        commits itself stay committed whatever happens after them. Raise DatabaseError if
        it fails (what it had not committed is rolled back).
        """
        from cioctasks import procs

        proc = self._checked(name, args)
        if proc.autocommit:
            self.commit()
            self.connection.autocommit = True
        try:
            results = self._call(proc, args)
        finally:
            if proc.autocommit:
                self.connection.autocommit = False
        if not proc.autocommit:
            self.commit()
        try:
            return procs.normalize(proc, results)
        except ValueError as error:
            raise self._undecodable(error) from None

    def _undecodable(self, error):
        """The DatabaseError of XML a procedure returned that is not XML: the server's
        text, not our bug, so that database fails in one line."""
        return DatabaseError(f"{self.name}: {udl.mask(str(error))[:300]}")

    def call_batches(self, name, *args, size=1000):
        """Run a CIOC stored procedure and yield its rows as they arrive: ``(result set
        number from 0, rows)``, each ``rows`` a list of at most ``size`` dicts with the XML
        columns decoded. Only one batch is held at a time, whatever the size of the result.

        Read the generator to its end (or close it) before using the connection again. On
        the sample backend the statements run in autocommit mode: the SQLite ODBC driver
        steps through a result set only outside a transaction (inside one it reads the whole
        set at execute), so a procedure read this way must not rely on rolling its own
        writes back; sp_VOL_Profile_Notify writes only its table of positions. Raise
        DatabaseError if the procedure fails or its XML is not XML.
        """
        from cioctasks import procs

        proc = self._checked(name, args)
        stepping = self.backend == "sample" or proc.autocommit
        if stepping:
            self.commit()
            self.connection.autocommit = True
        sets = self._result_sets(proc, args)
        read = False
        try:
            for index, cursor in enumerate(sets):
                columns = [c[0] for c in cursor.description]
                while rows := self._fetch(cursor, size):
                    batch = [dict(zip(columns, row)) for row in rows]
                    try:
                        procs.normalize_rows(proc, batch)
                    except ValueError as error:
                        raise self._undecodable(error) from None
                    yield index, batch
            read = True
        finally:
            # The cursor first (its pending results would keep the connection busy), then
            # the connection as it was: out of autocommit, or with what the procedure did
            # rolled back when it was not read to its end.
            sets.close()
            if stepping:
                self.connection.autocommit = False
            elif not read:
                self.rollback()
        if not stepping:
            self.commit()

    @staticmethod
    def _checked(name, args):
        from cioctasks import procs

        proc = procs.get(name)
        if len(args) != len(proc.params):
            raise TypeError(f"{name} takes {len(proc.params)} arguments, got {len(args)}")
        return proc

    def _fetch(self, cursor, size):
        import pyodbc

        try:
            return cursor.fetchmany(size)
        except pyodbc.Error as error:
            self.rollback()
            raise DatabaseError(f"{self.name}: {describe(error)}") from None

    def _call(self, proc, args):
        return [self._rows(cursor) for cursor in self._result_sets(proc, args)]

    def _result_sets(self, proc, args):
        """Run a procedure on a new cursor; yield that cursor once per result set, before
        its first row is read. The caller reads the rows before asking for the next set."""
        import pyodbc

        cursor = self._cursor()
        try:
            if self.backend == "sample":
                named = dict(zip(proc.params, args))
                for statement in proc.sample:
                    sql, values = _placeholders(statement, named)
                    self._run(cursor, sql, values)
                    if cursor.description is not None:
                        yield cursor
                return
            marks = ", ".join("?" for _ in args)
            sql = f"{{CALL {proc.name}({marks})}}" if args else f"{{CALL {proc.name}}}"
            self._run(cursor, sql, args)
            while True:
                if cursor.description is not None:
                    yield cursor
                try:
                    if not cursor.nextset():
                        return
                except pyodbc.Error as error:
                    self.rollback()
                    raise DatabaseError(f"{self.name}: {describe(error)}") from None
        finally:
            # A connection already broken cannot close its cursor: the error raised says why.
            with contextlib.suppress(pyodbc.Error):
                cursor.close()

    def procedure_state(self, name):
        """Whether this database has CIOC procedure ``name`` and the login may run it:
        ``ok``, ``missing`` (not in this CIOC version) or ``denied`` (no EXECUTE).

        A procedure's ``requires`` (the tables and columns it reads) say whether this CIOC
        version has it. On SQL Server, OBJECT_ID and HAS_PERMS_BY_NAME answer for the
        procedure itself; a login without EXECUTE does not see it at all (OBJECT_ID is
        NULL), so an unseen procedure whose tables and columns are there is ``denied``,
        not ``missing``. On the sample, the procedure exists where its schema does."""
        from cioctasks import procs

        has_schema = all(self.has_column(*need.partition(".")[::2])
                         for need in procs.get(name).requires)
        if self.backend == "sample":
            return "ok" if has_schema else "missing"
        found, allowed = self.query_rows(
            "SELECT OBJECT_ID(?, 'P'), HAS_PERMS_BY_NAME(?, 'OBJECT', 'EXECUTE')",
            f"dbo.{name}", f"dbo.{name}")[0]
        if found is None:
            return "denied" if has_schema else "missing"
        return "ok" if allowed == 1 else "denied"

    def has_column(self, table, column=""):
        """Whether the database has ``table`` (and ``column`` in it, if one is named)."""
        if self.backend != "sample":
            sql = ("SELECT COL_LENGTH(?, ?)" if column else "SELECT OBJECT_ID(?, 'U')")
            return self.query_rows(sql, f"dbo.{table}", *([column] if column else []))[0][0] is not None
        rows = self.query_rows("SELECT name FROM pragma_table_info(?)", table)
        names = {row[0].lower() for row in rows}
        return bool(names) and (not column or column.lower() in names)


def today():
    """Return today's date at midnight (a datetime), the way the CIOC procedures use it."""
    return datetime.datetime.combine(datetime.date.today(), datetime.time())
