"""The copy engine through the real ODBC path, into SQLite and into an ODBC target."""

import datetime
import sqlite3
import sys

import pytest

from cioctasks import config, db
from conftest import ROOT, assert_no_traceback, run_command
from test_db import make_site

sys.path.insert(0, str(ROOT / "downloads"))
import dbcopy  # noqa: E402


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "source.sqlite"
    with sqlite3.connect(path) as connection:
        connection.executescript(
            """
            CREATE TABLE GBL_BaseTable (NUM VARCHAR(8) NOT NULL, MemberID INTEGER,
                RECORD_OWNER CHAR(3), Secret NVARCHAR(50), CREATED_DATE DATETIME,
                Amount DECIMAL(10,2), Logo VARBINARY(100), Active BIT);
            CREATE UNIQUE INDEX pk_base ON GBL_BaseTable (NUM);
            CREATE INDEX ix_member ON GBL_BaseTable (MemberID, RECORD_OWNER);
            CREATE TABLE Empty_Table (ID INTEGER);
            """
        )
        rows = [
            (f"ZZZ{i:05}", 1 + i % 2, "ABC", f"s{i}", f"2026-11-{1 + i % 28:02} 10:00:00.250",
             "12.50", bytes([i % 256, 0, 255]), i % 2)
            for i in range(12_345)
        ]
        rows.append(("ÉTÉ00001", 2, "XYZ", None, None, None, None, None))
        rows.append(("ÜNI00002", 1, "ÀÉÎ", "Ligne 1\r\nLigne 2 — « guillemets »", None, None, None, 1))
        connection.executemany("INSERT INTO GBL_BaseTable VALUES (?,?,?,?,?,?,?,?)", rows)
    make_site(tmp_path / "UDLs", "ciocdemo", path)
    settings = config.from_mapping({"CIOC_UDL_BASE": str(tmp_path / "UDLs"),
                                    "CIOC_ODBC_DRIVER": "SQLite3", "CIOC_TOOLS_PATH": str(tmp_path)})
    with db.connect("ciocdemo", settings) as database:
        yield database


def read(path, sql):
    with sqlite3.connect(path) as connection:
        return connection.execute(sql).fetchall()


def test_a_member_copy_keeps_unicode_nulls_dates_and_only_that_members_rows(source, tmp_path):
    target = dbcopy.SqliteTarget(tmp_path / "out.sqlite")
    counts = dbcopy.copy_database(source, target, [("GBL_BaseTable", "MemberID = 1", ())])
    target.close()
    assert counts == {"GBL_BaseTable": 6173 + 1}  # even rows, and ÜNI00002
    out = tmp_path / "out.sqlite"
    row = read(out, "SELECT * FROM GBL_BaseTable WHERE NUM = 'ÜNI00002'")[0]
    assert row[2] == "ÀÉÎ" and row[3] == "Ligne 1\r\nLigne 2 — « guillemets »"
    assert row[4] is None and row[6] is None
    dated = read(out, "SELECT CREATED_DATE, Amount, Logo, Active FROM GBL_BaseTable WHERE NUM = 'ZZZ00002'")
    assert dated == [("2026-11-03 10:00:00.250", 12.5, bytes([2, 0, 255]), 0)]
    assert read(out, "SELECT COUNT(*) FROM GBL_BaseTable WHERE MemberID <> 1") == [(0,)]


def test_indexes_are_recreated_and_skipped_columns_left_out(source, tmp_path):
    target = dbcopy.SqliteTarget(tmp_path / "out.sqlite")
    dbcopy.copy_database(source, target, [("GBL_BaseTable", None, ("Secret", "Lo*")),
                                          ("Empty_Table", None, ())])
    target.close()
    out = tmp_path / "out.sqlite"
    columns = [r[1] for r in read(out, "PRAGMA table_info(GBL_BaseTable)")]
    assert "Secret" not in columns and "Logo" not in columns and "NUM" in columns
    indexes = read(out, "SELECT name, sql FROM sqlite_master WHERE type = 'index'")
    assert any("UNIQUE" in sql and "[NUM]" in sql for _, sql in indexes)
    assert any("[MemberID], [RECORD_OWNER]" in sql for _, sql in indexes)
    assert read(out, "SELECT COUNT(*) FROM Empty_Table") == [(0,)]
    assert read(out, "SELECT COUNT(*) FROM GBL_BaseTable") == [(12_347,)]


def test_a_copy_that_loses_rows_is_an_error(source, tmp_path, monkeypatch):
    target = dbcopy.SqliteTarget(tmp_path / "out.sqlite")
    monkeypatch.setattr(dbcopy.SqliteTarget, "count", lambda self, table: 5)
    with pytest.raises(dbcopy.CopyError, match="read 12347 rows but the copy holds 5"):
        dbcopy.copy_database(source, target, [("GBL_BaseTable", None, ())])
    target.close()


def test_an_odbc_target_gets_the_same_rows_through_the_sqlite_odbc_driver(source, tmp_path):
    template = tmp_path / "template.sqlite"
    sqlite3.connect(template).close()
    target = dbcopy.OdbcTarget(tmp_path / "odbc.sqlite", "Driver=SQLite3;Database={path}",
                               template=template, type_map=dbcopy.SQLITE_TYPES)
    counts = dbcopy.copy_database(source, target, [("GBL_BaseTable", "MemberID = 2", ("Logo",))])
    target.close()
    assert counts == {"GBL_BaseTable": 6173}  # odd rows, and ÉTÉ00001
    out = tmp_path / "odbc.sqlite"
    assert read(out, "SELECT RECORD_OWNER FROM GBL_BaseTable WHERE NUM = 'ÉTÉ00001'") == [("XYZ",)]
    assert template.stat().st_size == 0 or read(template, "SELECT COUNT(*) FROM sqlite_master") == [(0,)]


def test_access_types_map_short_text_dates_and_guids():
    short = dbcopy.Column("NUM", 12, "varchar", 8)
    long = dbcopy.Column("DUTIES", -10, "ntext", 0)
    when = dbcopy.Column("CREATED_DATE", 93, "datetime", 23)
    guid = dbcopy.Column("ProfileID", -11, "uniqueidentifier", 36)
    assert short.declared_type(dbcopy.ACCESS_TYPES) == "VARCHAR(8)"
    assert long.declared_type(dbcopy.ACCESS_TYPES) == "LONGTEXT"
    assert when.declared_type(dbcopy.ACCESS_TYPES) == "DATETIME"
    assert guid.declared_type(dbcopy.ACCESS_TYPES) == "VARCHAR(38)"


def test_dbcopy_runs_alone_as_a_script(cioc_env, tmp_path):
    path = tmp_path / "alone.sqlite"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE STP_Member (MemberID INTEGER, LastDate DATETIME)")
        connection.execute("INSERT INTO STP_Member VALUES (1, ?)",
                           (datetime.datetime(2026, 1, 1).isoformat(sep=" "),))
    make_site(tmp_path / "UDLs", "ciocdemo", path)
    out = tmp_path / "copy.sqlite"
    result = run_command([sys.executable, ROOT / "downloads" / "dbcopy.py", "-a", "ciocdemo", out],
                         cioc_env)
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result)
    assert "1 tables, 1 rows" in result.stdout
    assert read(out, "SELECT MemberID FROM STP_Member") == [(1,)]


def test_list_columns_reads_every_table_at_once_in_order_with_nullability(source):
    columns = dbcopy.list_columns(source, ["GBL_BaseTable", "Empty_Table", "No_Such_Table"])
    assert [c.name for c in columns["GBL_BaseTable"]] == [
        "NUM", "MemberID", "RECORD_OWNER", "Secret", "CREATED_DATE", "Amount", "Logo", "Active"]
    nullable = {c.name: c.nullable for c in columns["GBL_BaseTable"]}
    assert nullable["NUM"] is False and nullable["MemberID"] is True
    assert [c.name for c in columns["Empty_Table"]] == ["ID"]
    assert "No_Such_Table" not in columns


def test_each_table_is_described_once_across_downloads(source, tmp_path, monkeypatch):
    calls = []
    describe = dbcopy.describe
    monkeypatch.setattr(dbcopy, "describe", lambda src, name: calls.append(name) or describe(src, name))
    described = {}
    for member_id in (1, 2):
        target = dbcopy.SqliteTarget(tmp_path / f"member{member_id}.sqlite")
        dbcopy.copy_database(source, target, [("GBL_BaseTable", f"MemberID = {member_id}", ()),
                                              ("Empty_Table", None, ())], described=described)
        target.close()
    assert calls == ["GBL_BaseTable", "Empty_Table"]
    assert read(tmp_path / "member2.sqlite", "SELECT COUNT(*) FROM GBL_BaseTable") == [(6173,)]


def test_a_full_disk_is_a_copy_error_naming_the_file(source, tmp_path):
    out = tmp_path / "full.sqlite"
    target = dbcopy.SqliteTarget(out)
    target.connection.execute("PRAGMA max_page_count = 4")  # the disk holds four pages
    with pytest.raises(dbcopy.CopyError) as error:
        dbcopy.copy_database(source, target, [("GBL_BaseTable", None, ())])
    target.close()
    assert str(error.value) == f"cannot write {out}: database or disk is full"


@pytest.fixture
def alone(cioc_env, tmp_path):
    """A site ciocdemo with one small table, for runs of the script."""
    path = tmp_path / "alone.sqlite"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE STP_Member (MemberID INTEGER, LastDate DATETIME)")
        connection.execute("INSERT INTO STP_Member VALUES (1, '2026-01-01 00:00:00')")
    make_site(tmp_path / "UDLs", "ciocdemo", path)
    return cioc_env


@pytest.mark.parametrize("name", ["../UDLs/ciocdemo", "./ciocdemo", "nosuchsite"])
def test_dbcopy_takes_only_a_database_the_runner_knows(alone, tmp_path, name):
    out = tmp_path / "copy.sqlite"
    result = run_command([sys.executable, ROOT / "downloads" / "dbcopy.py", "-a", name, out], alone)
    assert result.returncode == 2, result.stdout + result.stderr
    assert_no_traceback(result)
    assert f"unknown database {name}; known: ciocdemo" in result.stderr
    assert not out.exists()


def test_dbcopy_takes_a_database_name_in_any_case(alone, tmp_path):
    out = tmp_path / "copy.sqlite"
    result = run_command([sys.executable, ROOT / "downloads" / "dbcopy.py", "-a", "CIOCDEMO", out],
                         alone)
    assert result.returncode == 0, result.stderr
    assert read(out, "SELECT MemberID FROM STP_Member") == [(1,)]


def test_a_where_without_a_table_is_a_usage_error(alone, tmp_path):
    result = run_command([sys.executable, ROOT / "downloads" / "dbcopy.py", "-a", "ciocdemo",
                          tmp_path / "copy.sqlite", "--where", "STP_Member"], alone)
    assert result.returncode == 2
    assert_no_traceback(result)
    assert "not TABLE=SQL" in result.stderr


def test_a_copy_that_fails_leaves_no_output_file(alone, tmp_path):
    out = tmp_path / "copy.sqlite"
    result = run_command([sys.executable, ROOT / "downloads" / "dbcopy.py", "-a", "ciocdemo", out,
                          "--where", "STP_Member=NoSuchColumn = 1"], alone)
    assert result.returncode == 1, result.stdout + result.stderr
    assert_no_traceback(result)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_every_row_arrives_in_order_with_the_same_values_as_the_source(source, tmp_path):
    # 12,347 rows: several source pages, INSERTs of 100 rows and shorter ones.
    target = dbcopy.SqliteTarget(tmp_path / "out.sqlite")
    dbcopy.copy_database(source, target, [("GBL_BaseTable", None, ())])
    target.close()
    columns = "NUM, MemberID, RECORD_OWNER, Secret, CREATED_DATE, Amount, Logo, Active"
    copied = read(tmp_path / "out.sqlite", f"SELECT {columns} FROM GBL_BaseTable ORDER BY rowid")
    original = read(tmp_path / "source.sqlite",
                    f"SELECT {columns} FROM GBL_BaseTable ORDER BY rowid")
    assert len(copied) == 12_347
    assert copied == original


def test_a_low_limit_on_bound_values_still_copies_every_row(source, tmp_path):
    import sqlite3 as stdlib

    target = dbcopy.SqliteTarget(tmp_path / "out.sqlite")
    # Eight columns and 20 values per statement: two rows per INSERT, one left over.
    target.connection.setlimit(stdlib.SQLITE_LIMIT_VARIABLE_NUMBER, 20)
    dbcopy.copy_database(source, target, [("GBL_BaseTable", "MemberID = 2", ())])
    target.close()
    copied = read(tmp_path / "out.sqlite", "SELECT NUM FROM GBL_BaseTable ORDER BY rowid")
    original = read(tmp_path / "source.sqlite",
                    "SELECT NUM FROM GBL_BaseTable WHERE MemberID = 2 ORDER BY rowid")
    assert copied == original and len(copied) == 6173


@pytest.fixture
def cioc_types(cioc_env, tmp_path):
    """A site whose one table has a column of each kind CIOC uses, and a row of NULLs."""
    path = tmp_path / "types.sqlite"
    with sqlite3.connect(path) as connection:
        connection.execute(
            "CREATE TABLE GBL_Types (ID INTEGER PRIMARY KEY, ProfileID UNIQUEIDENTIFIER, "
            "MODIFIED_DATE DATETIME, OnDate DATE, Fee MONEY, Latitude DECIMAL(11,7), "
            "BigCount BIGINT, Ratio FLOAT, Active BIT, ORG_NAME NVARCHAR(200), Logo VARBINARY(50))")
        connection.execute(
            "INSERT INTO GBL_Types VALUES (1, '6F9619FF-8B86-D011-B42D-00C04FC964FF', "
            "'2026-11-03 10:15:30.997', '2026-11-03', 1234.5678, 43.653226, 9007199254740993, "
            "0.1, 1, 'Été 😀 中文 « Québec »', X'00FF0010')")
        connection.execute("INSERT INTO GBL_Types (ID) VALUES (2)")
    make_site(tmp_path / "UDLs", "ciocdemo", path)
    return cioc_env


def test_guids_dates_decimals_big_integers_unicode_blobs_and_nulls_survive(cioc_types, tmp_path):
    out = tmp_path / "copy.sqlite"
    result = run_command([sys.executable, ROOT / "downloads" / "dbcopy.py", "-a", "ciocdemo", out],
                         cioc_types)
    assert result.returncode == 0, result.stderr
    rows = read(out, "SELECT * FROM GBL_Types ORDER BY ID")
    assert rows == [
        (1, "6F9619FF-8B86-D011-B42D-00C04FC964FF", "2026-11-03 10:15:30.997", "2026-11-03",
         1234.5678, 43.653226, 9007199254740993, 0.1, 1, "Été 😀 中文 « Québec »",
         b"\x00\xff\x00\x10"),
        (2,) + (None,) * 10,
    ]


@pytest.fixture
def long_table(cioc_env, tmp_path):
    """A site whose STP_Member has 25,000 rows (three source pages)."""
    path = tmp_path / "long.sqlite"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE STP_Member (MemberID INTEGER, LastDate DATETIME)")
        connection.executemany("INSERT INTO STP_Member VALUES (?, '2026-01-01 00:00:00')",
                               ((n,) for n in range(1, 25_001)))
    make_site(tmp_path / "UDLs", "ciocdemo", path)
    return cioc_env


def test_a_copy_that_fails_midway_keeps_the_previous_file_whole(long_table, tmp_path):
    out = tmp_path / "copy.sqlite"
    with sqlite3.connect(out) as connection:
        connection.execute("CREATE TABLE Previous (Night TEXT)")
        connection.execute("INSERT INTO Previous VALUES ('last night')")
    before = out.read_bytes()
    # The condition holds for every row but fails ("integer overflow") on row 20,001: the
    # pages before it are already written when the one that holds it is read.
    failing = "abs(-9223372036854775807 + 20000 - MemberID) > 0"
    assert dbcopy.PAGE < 20_000
    result = run_command([sys.executable, ROOT / "downloads" / "dbcopy.py", "-a", "ciocdemo", out,
                          "--where", f"STP_Member={failing}"], long_table)
    assert result.returncode == 1, result.stdout + result.stderr
    assert_no_traceback(result)
    assert "integer overflow" in result.stderr
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".tmp", ".sqlite")) == [
        "copy.sqlite", "long.sqlite"]


def test_a_long_copy_by_the_script_holds_every_row(long_table, tmp_path):
    out = tmp_path / "copy.sqlite"
    result = run_command([sys.executable, ROOT / "downloads" / "dbcopy.py", "-a", "ciocdemo", out,
                          "--where", "STP_Member=MemberID % 3 <> 0"], long_table)
    assert result.returncode == 0, result.stderr
    assert "1 tables, 16667 rows" in result.stdout
    assert read(out, "SELECT COUNT(*), SUM(MemberID), MIN(LastDate) FROM STP_Member") == [
        (16_667, sum(n for n in range(1, 25_001) if n % 3), "2026-01-01 00:00:00.000")]


@pytest.mark.parametrize("page", [1, 2, 3086, 6172, 6173, 6174, 50_000])
def test_pages_at_their_edges_read_every_matching_row_once_in_order(source, page):
    # 6,173 rows of member 2, every other rowid: pages of exactly all of them, one fewer
    # (a last page of one row), one more, one row each, and one page for everything.
    wanted = [row[0] for row in source.query_rows(
        "SELECT NUM FROM GBL_BaseTable WHERE MemberID = 2 ORDER BY rowid")]
    batches = list(source.iterate_table("NUM", "GBL_BaseTable", "MemberID = 2", size=1000,
                                        page=page))
    assert len(wanted) == 6173
    assert [row[0] for batch in batches for row in batch] == wanted
    assert all(0 < len(batch) <= 1000 for batch in batches)


@pytest.mark.parametrize("table, condition", [("Empty_Table", None),
                                              ("GBL_BaseTable", "MemberID = 3")])
def test_an_empty_table_or_condition_reads_no_batch(source, table, condition):
    assert list(source.iterate_table("*", table, condition, size=10, page=5)) == []


# Reader processes (dbread): a large table read in other processes while this one writes.

import dbread  # noqa: E402


def readers_for(tmp_path, name="ciocdemo"):
    """dbread.Readers connecting to the site ``name`` under tmp_path/UDLs, as copy_task
    makes them."""
    from cioctasks import udl

    path = db.find_udl(tmp_path / "UDLs" / name)
    return dbread.Readers(udl.connection_string(path, "SQLite3"), name, "sample", 30, 60)


def copy_with_and_without_readers(source, tmp_path, plan):
    """Copy ``plan`` once in this process and once through reader processes; return the
    two output paths."""
    alone, through = tmp_path / "alone.sqlite", tmp_path / "readers.sqlite"
    target = dbcopy.SqliteTarget(alone)
    dbcopy.copy_database(source, target, plan)
    target.close()
    readers = readers_for(tmp_path)
    target = dbcopy.SqliteTarget(through)
    try:
        dbcopy.copy_database(source, target, plan, readers=readers)
        assert len(readers.readers) == dbread.Readers.PROCESSES  # they did the reading
    finally:
        readers.close()
        target.close()
    return alone, through


def every_row(path, table):
    """Every row of ``table`` in rowid order, with the SQLite type of each value."""
    with sqlite3.connect(path) as connection:
        names = [row[1] for row in connection.execute(f"PRAGMA table_info({table})")]
        typed = ", ".join(f"[{n}], typeof([{n}])" for n in names)
        return connection.execute(f"SELECT {typed} FROM {table} ORDER BY rowid").fetchall()


def test_reader_processes_copy_every_value_as_this_process_does(source, tmp_path, monkeypatch):
    monkeypatch.setattr(dbcopy, "PROCESS_ROWS", 1000)
    monkeypatch.setattr(dbcopy, "PAGE", 700)  # 18 pages over both readers, a short last one
    alone, through = copy_with_and_without_readers(
        source, tmp_path, [("GBL_BaseTable", None, ()), ("Empty_Table", None, ())])
    rows = every_row(through, "GBL_BaseTable")
    assert len(rows) == 12_347
    assert rows == every_row(alone, "GBL_BaseTable")
    assert every_row(through, "Empty_Table") == []


def test_reader_processes_keep_guids_dates_decimals_floats_blobs_and_nulls(cioc_types, tmp_path,
                                                                          monkeypatch):
    monkeypatch.setattr(dbcopy, "PROCESS_ROWS", 1)
    settings = config.from_mapping({"CIOC_UDL_BASE": str(tmp_path / "UDLs"),
                                    "CIOC_ODBC_DRIVER": "SQLite3"})
    with db.connect("ciocdemo", settings) as types_source:
        alone, through = copy_with_and_without_readers(types_source, tmp_path,
                                                       [("GBL_Types", None, ())])
    rows = every_row(through, "GBL_Types")
    assert rows == every_row(alone, "GBL_Types")
    assert rows[0][2:4] == ("6F9619FF-8B86-D011-B42D-00C04FC964FF", "text")
    assert rows[0][4] == "2026-11-03 10:15:30.997" and rows[0][20] == b"\x00\xff\x00\x10"
    assert rows[1][2::2] == (None,) * 10


def test_plain_values_are_what_the_sqlite3_adapters_make_of_them():
    import decimal
    import uuid

    when = datetime.datetime(2026, 11, 3, 10, 15, 30, 997_654)
    rows = [(when, datetime.date(2026, 11, 3), decimal.Decimal("1234.5678"), True,
             uuid.UUID("6f9619ff-8b86-d011-b42d-00c04fc964ff"), "Été", b"\x00"),
            (None, None, None, False, None, None, None)]
    types = [type(value) for value in rows[0]]
    assert dbread.plain_values(rows, types) == [
        "2026-11-03 10:15:30.997", "2026-11-03", "1234.5678", 1,
        "6f9619ff-8b86-d011-b42d-00c04fc964ff", "Été", b"\x00",
        None, None, None, 0, None, None, None]


def test_a_small_table_is_read_without_starting_a_process(source, tmp_path):
    readers = readers_for(tmp_path)
    target = dbcopy.SqliteTarget(tmp_path / "out.sqlite")
    try:
        counts = dbcopy.copy_database(source, target, [("GBL_BaseTable", None, ())],
                                      readers=readers)
    finally:
        readers.close()
        target.close()
    assert counts == {"GBL_BaseTable": 12_347} and dbcopy.PROCESS_ROWS > 12_347
    assert readers.readers == []


def test_a_reader_process_that_is_killed_fails_the_copy_in_one_line(source, tmp_path,
                                                                  monkeypatch):
    import signal

    if sys.platform == "win32":
        pytest.skip("SIGKILL")
    monkeypatch.setattr(dbcopy, "PROCESS_ROWS", 1000)
    monkeypatch.setattr(dbcopy, "PAGE", 500)
    readers = readers_for(tmp_path)
    batches = readers.batches

    def killing_after_the_first_batch(*args, **kwargs):
        for number, batch in enumerate(batches(*args, **kwargs)):
            if number == 0:
                for reader in readers.readers:
                    reader.process.send_signal(signal.SIGKILL)
            yield batch

    monkeypatch.setattr(readers, "batches", killing_after_the_first_batch)
    processes = []
    monkeypatch.setattr(dbread.Readers, "_start", lambda self, count, start=dbread.Readers._start:
                        processes.extend(start(self, count)) or self.readers[:count])
    target = dbcopy.SqliteTarget(tmp_path / "out.sqlite")
    with pytest.raises(dbcopy.CopyError) as error:
        dbcopy.copy_database(source, target, [("GBL_BaseTable", None, ())], readers=readers)
    target.close()
    assert str(error.value).startswith("GBL_BaseTable: the reader process stopped (exit code -9)")
    assert "\n" not in str(error.value)
    assert readers.readers == [] and processes
    assert all(reader.process.returncode is not None for reader in processes)
    assert read(tmp_path / "out.sqlite", "SELECT COUNT(*) FROM GBL_BaseTable") == [(0,)]


def test_a_reader_process_that_cannot_connect_fails_the_copy_in_one_line(source, tmp_path,
                                                                          monkeypatch):
    monkeypatch.setattr(dbcopy, "PROCESS_ROWS", 1000)
    missing = tmp_path / "missing.sqlite"
    readers = dbread.Readers(f"Driver=SQLite3;Database={missing}", "ciocdemo", "sample", 30, 60)
    target = dbcopy.SqliteTarget(tmp_path / "out.sqlite")
    try:
        with pytest.raises(dbcopy.CopyError) as error:
            dbcopy.copy_database(source, target, [("GBL_BaseTable", None, ())], readers=readers)
    finally:
        readers.close()
        target.close()
    assert str(error.value).startswith("GBL_BaseTable: ciocdemo: cannot connect: ")
    assert "\n" not in str(error.value) and not missing.exists()
    assert read(tmp_path / "out.sqlite", "SELECT COUNT(*) FROM GBL_BaseTable") == [(0,)]


PARENT = r"""
import sys
sys.path.insert(0, sys.argv[1])
import dbread
readers = dbread.Readers(sys.argv[2], "ciocdemo", "sample", 30, 60)
reader, = readers._start(1)
print(reader.process.pid, flush=True)
sys.stdin.read()  # killed here
"""


def test_a_reader_process_exits_when_the_copying_process_is_killed(source, tmp_path):
    import subprocess
    import time

    from cioctasks import udl

    if sys.platform == "win32":
        pytest.skip("SIGKILL")
    connection_string = udl.connection_string(db.find_udl(tmp_path / "UDLs" / "ciocdemo"),
                                              "SQLite3")
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(ROOT / "downloads"),
                               connection_string], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _running(child):
        time.sleep(0.05)
    assert not _running(child)


def _running(pid):
    """Whether process ``pid`` exists and is not a zombie (Linux)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_reader_that_stopped_before_its_query_was_sent_still_says_why(tmp_path):
    missing = tmp_path / "gone.sqlite"
    reader = dbread.Reader(f"Driver=SQLite3;Database={missing}", "ciocdemo", 5, 30)
    try:
        reader.process.wait(timeout=30)  # it could not connect and has exited
        reader.query("SELECT 1", 10)  # its input is closed: the query cannot be sent
        with pytest.raises(dbread.ReaderError) as error:
            list(reader.results())
    finally:
        reader.close()
    assert str(error.value).startswith("ciocdemo: cannot connect: ")
    assert "\n" not in str(error.value) and not missing.exists()
