"""Reading a large table through ODBC in separate processes, for dbcopy.

pyodbc fetches value by value through the driver manager, and that read alone takes longer
than SQLite's whole copy of the same rows; in one process the writer can only start on a
batch when the read of it is done. Here reader processes (this file run as a script with
the same interpreter, so it works where there is no fork) each open their own connection,
run the SELECT statements the copying process sends them, and send back the rows as flat
lists of plain values (what dbcopy's sqlite3 adapters would have made of them), while
the copying process writes the previous batches: the read and the write run on different
cores.

Protocol (frames of a one-byte kind, a four-byte length and a payload in marshal's format,
or pickle's for a value marshal does not know, both ways):

- the copying process sends ``C`` (how to connect: the connection string, never on the
  command line, and the timeouts), then ``Q`` frames (a SELECT and the batch size);
- a reader answers each ``Q`` with ``R`` frames (row count, flat values) and one ``D``
  (rows read), or with one ``X`` (a one-line message) and exits.

A reader exits when its standard input ends (the copying process closed it, or died) or
when it next writes and the copying process is gone; a reader in the middle of a long
query notices at its next batch, at the latest when the query times out.

On the sample backend each page is read in its reader's own transaction, so a table that
another process writes while it is copied may be copied from more than one moment; on SQL
Server one reader runs the one SELECT, as the copy did in one process.
"""

import contextlib
import datetime
import decimal
import itertools
import marshal
import operator
import os
import pickle
import struct
import sys
import uuid

HEADER = struct.Struct("<cI")

#: What each type pyodbc returns becomes in the SQLite copy. dbcopy registers these as
#: sqlite3 adapters; the readers apply them themselves, so that the writer binds only
#: plain values (about half of its time went to the adapters and to flattening rows).
PLAIN = {
    # Positional arguments: a third cheaper than keywords through functools.partial.
    datetime.datetime: operator.methodcaller("isoformat", " ", "milliseconds"),
    datetime.date: str,
    datetime.time: str,
    decimal.Decimal: str,
    uuid.UUID: str,
    bool: int,
}


class ReaderError(Exception):
    """A reader process that failed or stopped; its message is one line."""


def write_frame(stream, kind, payload):
    """Write one frame: its payload in marshal's format (plain values, as rows are once
    made plain, go three times faster than through pickle), else, for a value of another
    type, in pickle's; a lower-case kind says pickle."""
    try:
        data = marshal.dumps(payload)
    except ValueError:  # a type marshal does not know
        data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
        kind = kind.lower()
    stream.write(HEADER.pack(kind, len(data)))
    stream.write(data)
    stream.flush()


def read_frame(stream):
    """Return (kind, payload) of the next frame, or (None, None) at the end of the stream."""
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None, None
    kind, length = HEADER.unpack(header)
    data = stream.read(length)
    if len(data) < length:
        return None, None
    if kind.islower():
        return kind.upper(), pickle.loads(data)
    return kind, marshal.loads(data)


def plain_values(rows, types):
    """Given pyodbc rows and each column's Python type (from the cursor's description),
    return their values in one flat list, row after row, each made plain as PLAIN says.

    A column's values are all of its described type or None; a column with no None goes
    through ``map`` (no Python frame per value)."""
    width = len(types)
    values = list(itertools.chain.from_iterable(rows))
    for index, kind in enumerate(types):
        convert = PLAIN.get(kind)
        if convert is None:
            continue
        column = values[index::width]
        if None in column:
            values[index::width] = [v if v is None else convert(v) for v in column]
        else:
            values[index::width] = map(convert, column)
    return values


# The reader process.

def _serve(requests, replies):
    """Connect as the first frame says, then answer every query frame until the input
    ends. Database errors are sent as one line, and end the reader."""
    from cioctasks import db

    kind, settings = read_frame(requests)
    if kind != b"C":
        return
    source = db.open_connection(settings["connection_string"], settings["name"],
                                settings["login_timeout"], settings["query_timeout"])
    while True:
        kind, query = read_frame(requests)
        if kind != b"Q":
            source.close()
            return
        sql, size = query
        rows_read = 0
        for rows, types in _fetch(source, sql, size):
            write_frame(replies, b"R", (len(rows), plain_values(rows, types)))
            rows_read += len(rows)
        # The read transaction ends with each query: it must not keep writers waiting.
        source.rollback()
        write_frame(replies, b"D", rows_read)


def _fetch(source, sql, size):
    """Run ``sql`` on ``source``; yield (rows, column types) batches of at most ``size``."""
    import pyodbc

    from cioctasks import db

    cursor = source.connection.cursor()
    try:
        cursor.execute(sql)
        types = [column[1] for column in cursor.description]
        while rows := cursor.fetchmany(size):
            yield rows, types
    except pyodbc.Error as error:
        raise db.DatabaseError(f"{source.name}: {db.describe(error)}") from None


def main():
    """Run as a reader: frames in on standard input, frames out on standard output."""
    from cioctasks import udl
    from cioctasks.errors import TaskError

    # The frames get their own copy of the output; whatever else prints (a driver, a
    # warning) goes to the error stream and cannot break them.
    requests = sys.stdin.buffer
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    try:
        _serve(requests, replies)
    except (BrokenPipeError, KeyboardInterrupt):
        os._exit(1)  # the copying process is gone or stopping: nobody to tell
    except BaseException as error:  # every failure goes back as one line
        if isinstance(error, TaskError):
            message = str(error)
        else:
            message = f"reader process: {error.__class__.__name__}: {error}"
        message = " ".join(udl.mask(message).split())[:500]
        with contextlib.suppress(OSError):
            write_frame(replies, b"X", message)
        sys.exit(1)


# The copying process's side.

class Reader:
    """One reader process: send it queries, read its frames."""

    def __init__(self, connection_string, name, login_timeout, query_timeout):
        import subprocess
        import tempfile
        from pathlib import Path

        self.errors = tempfile.TemporaryFile()
        self.pending, self.broken = 0, False
        try:
            self.process = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve())], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=self.errors)
        except OSError as error:
            self.errors.close()
            raise ReaderError(f"cannot start a reader process: {error.strerror or error}") from None
        self.send(b"C", {"connection_string": connection_string, "name": name,
                         "login_timeout": login_timeout, "query_timeout": query_timeout})

    def send(self, kind, payload):
        """Send a frame. A reader that has stopped cannot take it; that is not raised
        here: ``results`` then reads what the reader said before it stopped (its one-line
        reason), else says that it stopped."""
        if self.broken:
            return
        try:
            write_frame(self.process.stdin, kind, payload)
        except OSError:
            self.broken = True

    def query(self, sql, size):
        self.send(b"Q", (sql, size))
        self.pending += 1

    def results(self):
        """Yield the (row count, flat values) batches of the oldest query sent; raise
        ReaderError if the reader failed or stopped before its end."""
        rows_received = 0
        while True:
            kind, payload = read_frame(self.process.stdout)
            if kind == b"R":
                rows_received += payload[0]
                yield payload
            elif kind == b"D":
                self.pending -= 1
                if payload != rows_received:
                    raise ReaderError(f"reader process: read {payload} rows but sent "
                                      f"{rows_received}")
                return
            elif kind == b"X":
                raise ReaderError(payload)
            else:
                raise ReaderError(self._stopped())

    def _stopped(self):
        """A one-line message for a reader that ended without saying why: its exit code
        and the last line it printed, if any."""
        import subprocess

        from cioctasks import udl

        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        self.errors.seek(0)
        lines = [line for line in self.errors.read()[-2000:].decode(errors="replace")
                 .splitlines() if line.strip()]
        said = f": {udl.mask(lines[-1].strip())[:300]}" if lines else ""
        return f"the reader process stopped (exit code {code}) before the rows were read{said}"

    def close(self, failed=False):
        """End the reader: closing its input is its signal to exit; one that may be in the
        middle of a query (the copy failed) is killed."""
        import subprocess

        with contextlib.suppress(OSError):
            self.process.stdin.close()
        if failed or self.pending:
            self.process.kill()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()
        self.errors.close()


class Readers:
    """Reader processes for one copy, started on first use and kept for its other tables.

    On the sample backend (SQLite through ODBC) a table is read in pages by rowid, as
    ``Database.iterate_table`` reads it, and the pages go to PROCESSES readers in turn, each
    with up to AHEAD queries waiting, so that two cores read while this process writes.
    On SQL Server one reader runs the one SELECT (a streaming result cannot be split
    without a key)."""

    #: Reader processes on the sample backend, and queries each may have waiting.
    PROCESSES = 2
    AHEAD = 2

    def __init__(self, connection_string, name, backend, login_timeout, query_timeout):
        self.settings = (connection_string, name, login_timeout, query_timeout)
        self.backend = backend
        self.readers = []

    def _start(self, count):
        while len(self.readers) < count:
            self.readers.append(Reader(*self.settings))
        return self.readers[:count]

    def batches(self, source, select, table, condition, page, size):
        """Yield the (row count, flat values) batches of ``SELECT select FROM table WHERE
        condition``, in the order ``Database.iterate_table`` reads them. ``source``, this
        process's own connection, finds the pages' bounds."""
        where = f" WHERE ({condition})" if condition else " WHERE 1 = 1"
        try:
            if self.backend != "sample":
                reader, = self._start(1)
                reader.query(f"SELECT {select} FROM {table}{where}", size)
                yield from reader.results()
                return
            readers = self._start(self.PROCESSES)
            pages = source.page_queries(select, table, condition, page)
            order = []  # the reader of each query sent, oldest first
            for reader in itertools.islice(itertools.cycle(readers), self.AHEAD * len(readers)):
                sql = next(pages, None)
                if sql is None:
                    break
                reader.query(sql, size)
                order.append(reader)
            while order:
                reader = order.pop(0)
                yield from reader.results()
                sql = next(pages, None)
                if sql is not None:
                    reader.query(sql, size)
                    order.append(reader)
        except BaseException:
            self.close(failed=True)
            raise

    def close(self, failed=False):
        readers, self.readers = self.readers, []
        for reader in readers:
            reader.close(failed)


if __name__ == "__main__":
    main()
