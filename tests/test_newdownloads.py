"""newdownloads: per-member record and stats downloads in password archives."""

import shutil
import sqlite3
import subprocess
import sys

import pytest

from cioctasks import archive
from conftest import ROOT, assert_no_traceback, run_command

SCRIPT = ROOT / "downloads" / "newdownloads.py"


def download_folder(world, site="ciocdemo"):
    return world.directory / "VirtualServers" / site / "download"


def member_password(world, member_id, flavour, site="ciocdemo"):
    with sqlite3.connect(world.database(site)) as connection:
        return connection.execute(f"SELECT DownloadPassword{flavour} FROM STP_Member "
                                  "WHERE MemberID = ?", (member_id,)).fetchone()[0]


def open_download(world, tmp_path, name, password):
    out = archive.extract(download_folder(world) / name, password, tmp_path / name)
    (database,) = list(out.iterdir())
    return sqlite3.connect(database)


def test_each_member_gets_its_own_records_in_a_password_archive(world, tmp_path):
    result = run_command([sys.executable, SCRIPT, "-a", "ciocdemo"], world.env)
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result)
    assert "built 4 record downloads" in result.stdout
    password = member_password(world, 1, "CIC")
    if shutil.which("7z"):
        check = subprocess.run(["7z", "t", f"-p{password}", str(download_folder(world) / "ciocdemoCIC1.zip")],
                               capture_output=True, text=True)
        assert "Everything is Ok" in check.stdout
    connection = open_download(world, tmp_path, "ciocdemoCIC1.zip", password)
    tables = {r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "GBL_BaseTable" in tables and "GBL_BaseTable_Description" in tables
    assert not any(t.startswith("VOL_") for t in tables)
    assert connection.execute("SELECT DISTINCT MemberID FROM GBL_BaseTable").fetchall() == [(1,)]
    member_columns = [r[1] for r in connection.execute("PRAGMA table_info(STP_Member)")]
    assert "DownloadPasswordCIC" not in member_columns and "MemberID" in member_columns
    with sqlite3.connect(world.database("ciocdemo")) as source:
        expected = source.execute("SELECT COUNT(*) FROM GBL_BaseTable_Description d JOIN GBL_BaseTable b "
                                  "ON b.NUM = d.NUM WHERE b.MemberID = 1").fetchone()[0]
    assert connection.execute("SELECT COUNT(*) FROM GBL_BaseTable_Description").fetchone()[0] == expected
    volunteer = open_download(world, tmp_path, "ciocdemoVOL1.zip", member_password(world, 1, "VOL"))
    vol_tables = {r[0] for r in volunteer.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "VOL_Opportunity" in vol_tables and not any(t.startswith("VOL_Profile") for t in vol_tables)
    assert (download_folder(world) / "ciocdemoCIC2.sqlite").exists()  # DownloadUncompressed
    assert list((world.directory / "state" / "downloads" / "ciocdemo").iterdir()) == []


def test_stats_downloads_hold_this_years_rows_of_the_member(world, tmp_path):
    result = run_command([sys.executable, SCRIPT, "-a", "ciocdemo", "-s", "--member", "1"], world.env)
    assert result.returncode == 0, result.stderr
    import datetime

    year = datetime.date.today().year
    connection = open_download(world, tmp_path, f"ciocdemoStats{year}CIC1.zip",
                               member_password(world, 1, "CIC"))
    rows = connection.execute("SELECT MIN(AccessDate), MAX(AccessDate), COUNT(DISTINCT MemberID) "
                              "FROM CIC_Stats_RSN").fetchone()
    assert rows[0].startswith(str(year)) and rows[1].startswith(str(year)) and rows[2] == 1


@pytest.mark.parametrize("password", [None, "   "])
def test_a_member_without_a_password_keeps_its_previous_download(world, password):
    previous = (download_folder(world) / "ciocdemoCIC1.zip").read_bytes()
    with sqlite3.connect(world.database("ciocdemo")) as connection:
        connection.execute("UPDATE STP_Member SET DownloadPasswordCIC = ? WHERE MemberID = 1",
                           (password,))
    result = run_command([sys.executable, SCRIPT, "-a", "ciocdemo"], world.env)
    assert result.returncode == 1
    assert_no_traceback(result)
    assert "member 1 CIC" in result.stderr and "no CIC download password" in result.stderr
    assert (download_folder(world) / "ciocdemoCIC1.zip").read_bytes() == previous
    assert "built 3 record downloads" in result.stdout


def test_seven_zip_archives_when_the_configuration_asks(world, tmp_path):
    config = tmp_path / "downloads.py"
    config.write_text((ROOT / "config" / "downloads.py").read_text(encoding="utf-8").replace(
        'archive_format = "zip"', 'archive_format = "7z"'), encoding="utf-8")
    result = run_command([sys.executable, SCRIPT, "-a", "ciocdemo", "--member", "1",
                          "--config", config], world.env)
    assert result.returncode == 0, result.stderr
    assert (download_folder(world) / "ciocdemoCIC1.7z").exists()


def test_a_broken_configuration_is_one_line_and_exit_2_before_any_database(world, tmp_path):
    config = tmp_path / "broken.py"
    config.write_text("dbinfo = [\n", encoding="utf-8")
    result = run_command([sys.executable, SCRIPT, "--config", config], world.env)
    assert result.returncode == 2
    assert_no_traceback(result)
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("newdownloads: ") and "SyntaxError" in line
    assert "ciocdemo" not in result.stdout + result.stderr


def test_a_dry_run_writes_nothing(world):
    before = sorted(p.name for p in download_folder(world).iterdir())
    result = run_command([sys.executable, SCRIPT, "-n"], world.env)
    assert result.returncode == 0, result.stderr
    assert "would build" in result.stdout
    assert sorted(p.name for p in download_folder(world).iterdir()) == before


@pytest.mark.parametrize("pattern, expected", [("GBL_BaseTable", "MemberID = 3"),
                                               ("VOL_OP_CM", "VNUM IN (SELECT VNUM FROM VOL_Opportunity WHERE MemberID = 3)"),
                                               ("STP_Language", None)])
def test_conditions_fill_in_the_member(pattern, expected):
    sys.path.insert(0, str(ROOT / "downloads"))
    import newdownloads

    config = newdownloads.load_config(newdownloads.DEFAULT_CONFIG)

    class FakeCopier:
        member_id = 3

        def columns(self, table):
            return {"GBL_BaseTable": ["NUM", "MemberID"], "VOL_OP_CM": ["VNUM", "CM_ID"],
                    "STP_Language": ["LangID", "Culture"]}[table]

    tables = ["GBL_BaseTable", "VOL_Opportunity", "VOL_OP_CM", "STP_Language"]
    assert newdownloads.condition_for(config, FakeCopier(), tables, pattern, 2026) == expected


def test_stats_runs_are_their_own_task_but_wait_for_the_record_downloads(world):
    import json

    from cioctasks import lock

    stats = run_command([sys.executable, SCRIPT, "-a", "ciocdemo", "-s", "--member", "1"], world.env)
    assert stats.returncode == 0, stats.stderr
    status = run_command([sys.executable, "-m", "cioctasks", "status", "--json"], world.env)
    tasks = {(row["task"], row["database"], row["status"]) for row in json.loads(status.stdout)
             if row["task"].startswith("newdownloads")}
    # the stats run is not taken for a record run: that one has still never run
    assert tasks == {("newdownloads_stats", "ciocdemo", "ok"), ("newdownloads", "", "never run")}
    held = lock.TaskLock(world.directory / "state" / "locks", "newdownloads").acquire()
    try:
        blocked = run_command([sys.executable, SCRIPT, "-s", "-q"], world.env)
    finally:
        held.release()
    assert blocked.returncode == 75
