"""The sample world as a user builds it."""

import datetime
import sqlite3
import sys

from cioctasks import sampledb, udl
from conftest import assert_no_traceback, run_command


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
    forced = run_command([sys.executable, "-m", "cioctasks.sampledb", "create", tmp_path / "busy",
                          "--force"], cioc_env)
    assert forced.returncode == 0 and not (tmp_path / "busy" / "keep.txt").exists()


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
        return {t: connection.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in tables}


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
