"""The sample world as a user builds it."""

import datetime
import json
import sqlite3
import sys

import pytest

from cioctasks import procs, sampledb, udl
from cioctasks.sampledb import schema
from conftest import ROOT, assert_no_traceback, run_command

#: The facts of the real CIOC schema, as the steering repository keeps them beside ours.
SHARED_FACTS = ROOT.parent / "shared" / "cioc-schema" / "schema.json"


def test_create_writes_a_whole_world_as_a_subprocess(tmp_path, cioc_env):
    target = tmp_path / "demo"
    result = run_command([sys.executable, "-m", "cioctasks.sampledb", "create", target,
                          "--sites", "3"], cioc_env)
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result)
    for site in ("ciocdemo", "ciocnord", "ciocsud"):
        assert f"{site}: STP_Member 2" in result.stdout
        assert (target / "UDLs" / site / "cron_job_runner.udl").is_file()
        assert (target / "VirtualServers" / site / "download" / f"{site}CIC1.zip").is_file()
        assert (target / "logs" / site / "python" / "error.log").is_file()
        assert list((target / "logs" / site).glob("access.log.*"))
    env = (target / ".env").read_text(encoding="utf-8")
    assert f"CIOC_UDL_BASE={target / 'UDLs'}" in env
    assert "CIOC_MAIL_BACKEND=file" in env and f"CIOC_MAIL_DIR={target / 'mail'}" in env


def test_a_non_empty_folder_is_refused_without_force(tmp_path, cioc_env):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("x", encoding="utf-8")
    result = run_command([sys.executable, "-m", "cioctasks.sampledb", "create", tmp_path / "busy"],
                         cioc_env)
    assert result.returncode == 2
    assert_no_traceback(result)
    assert "not empty" in result.stderr and result.stderr.count("\n") == 1
    assert (tmp_path / "busy" / "keep.txt").exists()
    built = sampledb.create(tmp_path / "world", sites=1)
    refused = run_command([sys.executable, "-m", "cioctasks.sampledb", "create", built.directory,
                           "--sites", "1"], cioc_env)
    assert refused.returncode == 2 and "use --force" in refused.stderr
    (built.directory / "mail" / "old.eml").write_text("x", encoding="utf-8")
    forced = run_command([sys.executable, "-m", "cioctasks.sampledb", "create", built.directory,
                          "--sites", "1", "--force"], cioc_env)
    assert forced.returncode == 0, forced.stderr
    assert not (built.directory / "mail" / "old.eml").exists()


def test_force_deletes_only_a_folder_that_is_a_sample_world(tmp_path, cioc_env):
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "sub" / "keep.txt").write_text("x", encoding="utf-8")
    result = run_command([sys.executable, "-m", "cioctasks.sampledb", "create", mine,
                          "--force"], cioc_env)
    assert result.returncode == 2
    assert_no_traceback(result)
    assert result.stderr == (f"sampledb: error: {mine} is not empty and not a sample world (it "
                             f"has no {sampledb.world.MARKER}): it is left alone; give a new or "
                             "empty folder\n")
    assert (mine / "sub" / "keep.txt").read_text(encoding="utf-8") == "x"
    (mine / ".env").write_text("# The sample world's settings (python -m cioctasks.sampledb)\n"
                               f"CIOC_UDL_BASE={tmp_path / 'elsewhere' / 'UDLs'}\n",
                               encoding="utf-8")  # a world's .env copied here is not a world
    again = run_command([sys.executable, "-m", "cioctasks.sampledb", "create", mine, "--force"],
                        cioc_env)
    assert again.returncode == 2 and (mine / "sub" / "keep.txt").exists()


def test_a_world_written_before_the_marker_is_still_replaced_with_force(tmp_path):
    old = sampledb.create(tmp_path / "w", sites=1)
    (old.directory / sampledb.world.MARKER).unlink()  # as worlds were written before it
    assert sampledb.world.is_sample_world(old.directory)
    again = sampledb.create(old.directory, sites=1, force=True)
    assert (again.directory / sampledb.world.MARKER).is_file()


def test_a_file_or_a_bad_site_is_one_line_and_exit_2_and_nothing_is_deleted(tmp_path, cioc_env):
    path = tmp_path / "a_file"
    path.write_text("mine", encoding="utf-8")
    for target, reason in ((path, f"{path} is a file, not a folder"),
                           (path / "below", f"cannot use the folder {path / 'below'}: ")):
        result = run_command([sys.executable, "-m", "cioctasks.sampledb", "create", target],
                             cioc_env)
        assert result.returncode == 2
        assert_no_traceback(result)
        assert result.stderr.startswith(f"sampledb: error: {reason}")
        assert result.stderr.count("\n") == 1
    assert path.read_text(encoding="utf-8") == "mine"
    built = sampledb.create(tmp_path / "w", sites=1)
    bad = run_command([sys.executable, "-m", "cioctasks.sampledb", "create", built.directory,
                       "--force", "--getinvolved", "nowhere"], cioc_env)
    assert bad.returncode == 2 and "not a site of this world" in bad.stderr
    assert built.database("ciocdemo").is_file()  # refused before anything was deleted


def test_the_help_describes_the_world_and_what_force_may_delete(cioc_env):
    result = run_command([sys.executable, "-m", "cioctasks.sampledb", "create", "--help"],
                         cioc_env)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "the site folders, logs and .env the tasks work on." in text  # not cut mid-sentence
    assert "--force replaces it only when it is a sample world" in text
    assert "--seed SEED the seed of the generator" in text


def test_the_udl_is_utf16_with_a_bom_and_points_at_the_sqlite_driver(tmp_path):
    world = sampledb.create(tmp_path / "w", sites=1)
    data = world.udl("ciocdemo").read_bytes()
    assert data.startswith(b"\xff\xfe")
    assert udl.connection_string(world.udl("ciocdemo"), "unused") == (
        f"Driver=SQLite3;Database={world.database('ciocdemo')}")


def dump(path):
    with sqlite3.connect(path) as connection:
        tables = [r[0] for r in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {t: sorted(connection.execute(f"SELECT * FROM \"{t}\"").fetchall(), key=repr)
                for t in tables}


def test_the_same_seed_and_day_give_the_same_rows_and_another_seed_does_not(tmp_path):
    now = datetime.datetime(2026, 11, 23, 4, 0)
    one = sampledb.create(tmp_path / "one", sites=1, seed=7, now=now)
    two = sampledb.create(tmp_path / "two", sites=1, seed=7, now=now)
    other = sampledb.create(tmp_path / "other", sites=1, seed=8, now=now)
    assert dump(one.database("ciocdemo")) == dump(two.database("ciocdemo"))
    assert dump(one.database("ciocdemo")) != dump(other.database("ciocdemo"))


def test_the_world_holds_french_text_and_hostile_values(tmp_path):
    world = sampledb.create(tmp_path / "w", sites=1)
    with sqlite3.connect(world.database("ciocdemo")) as connection:
        french = connection.execute(
            "SELECT COUNT(*) FROM VOL_Opportunity_Description WHERE LangID = 2").fetchone()[0]
        injected = connection.execute(
            "SELECT COUNT(*) FROM GBL_BaseTable_Description WHERE ORG_LEVEL_2 LIKE '%' || char(10) || 'Bcc:%'"
        ).fetchone()[0]
        accents = connection.execute(
            "SELECT COUNT(*) FROM VOL_Profile WHERE FirstName LIKE '%é%'").fetchone()[0]
    assert french > 0 and injected > 0 and accents > 0


def test_old_exports_and_old_logs_are_there_to_clean(tmp_path):
    world = sampledb.create(tmp_path / "w", sites=1)
    week_ago = datetime.datetime.now().timestamp() - 7 * 86400
    downloads = world.directory / "VirtualServers" / "ciocdemo" / "download"
    old_exports = [p for p in downloads.iterdir() if "_" in p.name and p.stat().st_mtime < week_ago]
    old_logs = [p for p in (world.directory / "logs" / "ciocdemo").iterdir()
                if p.is_file() and p.stat().st_mtime < week_ago]
    assert old_exports and old_logs


def test_the_shipped_schema_facts_are_those_of_the_real_cioc_schema():
    if not SHARED_FACTS.is_file():
        pytest.skip(f"no {SHARED_FACTS} to compare with")
    assert schema.facts() == json.loads(SHARED_FACTS.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    world = sampledb.create(tmp_path_factory.mktemp("real") / "w", sites=1)
    connection = sqlite3.connect(world.database("ciocdemo"))
    yield connection
    connection.close()


def test_the_sample_has_every_table_and_column_of_cioc_in_order_with_nullability(built):
    present = {r[0] for r in built.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert present == set(schema.tables())
    for name, table in schema.tables().items():
        info = built.execute(f'PRAGMA table_info("{name}")').fetchall()
        assert [row[1] for row in info] == [c["name"] for c in table["columns"]], name
        for row, column in zip(info, table["columns"]):
            declared, not_null, key = row[2], row[3], row[5]
            if key and declared == "INTEGER":  # an identity SQLite numbers itself
                assert column.get("identity"), (name, column["name"])
                continue
            assert declared.lower() == schema.sqlite_type(column).lower(), (name, column["name"])
            assert bool(not_null) == (not column.get("null", True)), (name, column["name"])


def test_the_sample_keeps_cioc_primary_and_unique_keys(built):
    for name, table in schema.tables().items():
        keys = set()
        for index in built.execute(f'PRAGMA index_list("{name}")').fetchall():
            if index[2]:  # unique
                columns = [r[2] for r in built.execute(f'PRAGMA index_info("{index[1]}")')]
                keys.add(tuple(columns))
        info = built.execute(f'PRAGMA table_info("{name}")').fetchall()
        rowid_key = [row[1] for row in info if row[5] and row[2] == "INTEGER"]
        if rowid_key:
            keys.add(tuple(rowid_key))
        wanted = {tuple(u) for u in table.get("unique") or ()}
        if table.get("primary_key"):
            wanted.add(tuple(table["primary_key"]))
        assert wanted <= keys, name


def test_every_table_has_rows_and_the_types_map_to_what_sql_server_returns(built):
    empty = [name for name in schema.tables()
             if built.execute(f'SELECT 1 FROM "{name}" LIMIT 1').fetchone() is None]
    assert empty == []
    assert schema.sqlite_type({"type": "smalldatetime"}) == "datetime"
    assert schema.sqlite_type({"type": "nvarchar", "length": "max"}) == "text"
    assert schema.sqlite_type({"type": "decimal", "length": "5, 2"}) == "numeric(5, 2)"


def test_smalldatetime_columns_hold_whole_minutes_as_sql_server_rounds_them(built):
    stamps = [r[0] for r in built.execute(
        "SELECT UPDATE_DATE FROM VOL_Opportunity_Description WHERE UPDATE_DATE IS NOT NULL")]
    assert stamps and all(s.endswith(":00.000") for s in stamps)
    assert schema.to_smalldatetime("2026-11-23 10:15:29.998") == "2026-11-23 10:15:00.000"
    assert schema.to_smalldatetime("2026-11-23 10:15:29.999") == "2026-11-23 10:16:00.000"
    assert schema.to_smalldatetime("2026-11-23 23:59:45.000") == "2026-11-24 00:00:00.000"


def test_every_procedure_the_toolkit_calls_is_a_current_cioc_procedure_or_known_removed():
    current = set(schema.facts()["procedures"])
    called = {name for names in procs.TASK_PROCEDURES.values() for name in names}
    removed = set(schema.GETINVOLVED_PROCEDURES)
    assert called - removed <= current
    assert not removed & current  # GetInvolved is gone from current CIOC


def test_insert_fills_the_required_columns_a_test_does_not_name(tmp_path):
    connection = sqlite3.connect(tmp_path / "x.sqlite")
    schema.create_all(connection)
    row = schema.insert(connection, "VOL_Opportunity", VNUM="V1", MemberID=1, NUM="N1",
                        RECORD_OWNER="AAA")
    assert row["OP_ID"] == 1 and row["FBKEY"]
    assert connection.execute("SELECT VNUM, OP_ID FROM VOL_Opportunity").fetchall() == [("V1", 1)]
