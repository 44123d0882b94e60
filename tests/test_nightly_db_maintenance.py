"""nightly_db_maintenance run as the scheduler runs it, against the sample world."""

import datetime
import sqlite3
import sys

from conftest import ROOT, assert_no_traceback, run_command

SCRIPT = ROOT / "cron" / "nightly_db_maintenance.py"


def count(world, site, table):
    with sqlite3.connect(world.database(site)) as connection:
        return connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def test_the_nightly_procedure_moves_the_stats_of_every_database(world):
    before = {site: count(world, site, "CIC_Stats_RSN") for site in world.sites}
    pending = {site: count(world, site, "CIC_Stats_RSN_Accumulator") for site in world.sites}
    result = run_command([sys.executable, SCRIPT, "-j", "2"], world.env)
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result)
    for site in world.sites:
        assert f"{site}: ok" in result.stdout
        assert count(world, site, "CIC_Stats_RSN_Accumulator") == 0
        assert count(world, site, "CIC_Stats_RSN") == before[site] + pending[site]


def test_a_dry_run_changes_nothing(world):
    pending = count(world, "ciocdemo", "CIC_Stats_RSN_Accumulator")
    result = run_command([sys.executable, SCRIPT, "-n", "-a", "ciocdemo"], world.env)
    assert result.returncode == 0, result.stderr
    assert "would call sp_STP_Nightly_Tasks" in result.stdout
    assert count(world, "ciocdemo", "CIC_Stats_RSN_Accumulator") == pending


def test_a_database_that_is_gone_fails_alone_and_is_named(world):
    world.database("ciocdemo").unlink()
    (world.directory / "databases").chmod(0o500)  # the driver cannot create it anew
    try:
        result = run_command([sys.executable, SCRIPT], world.env)
    finally:
        (world.directory / "databases").chmod(0o700)
    assert result.returncode == 1
    assert_no_traceback(result)
    assert "ciocnord: ok" in result.stdout
    assert "failed: ciocdemo" in result.stderr
    assert count(world, "ciocnord", "CIC_Stats_RSN_Accumulator") == 0


def test_a_locked_database_times_out_and_the_others_finish(world):
    udl = world.udl("ciocdemo")
    udl.write_bytes(udl.read_bytes().decode("utf-16").replace(
        "Driver=SQLite3;", "Driver=SQLite3;Timeout=300;").encode("utf-16"))
    holder = sqlite3.connect(world.database("ciocdemo"))
    holder.execute("BEGIN EXCLUSIVE")
    try:
        result = run_command([sys.executable, SCRIPT, "--timeout", "5"], world.env)
    finally:
        holder.rollback()
        holder.close()
    assert result.returncode == 1
    assert_no_traceback(result)
    assert "ciocnord: ok" in result.stdout
    assert "ciocdemo" in result.stderr and "locked" in result.stderr


def test_a_later_step_that_fails_keeps_the_stats_moved_before_it(world):
    """The sharing-profile step fails (its table is gone); the stats moves done before it
    stay committed, as the procedures' own batch commits do on SQL Server."""
    pending = {table: count(world, "ciocdemo", f"{table}_Accumulator")
               for table in ("CIC_Stats_RSN", "VOL_Stats_OPID")}
    before = {table: count(world, "ciocdemo", table) for table in pending}
    assert all(pending.values())
    with sqlite3.connect(world.database("ciocdemo")) as connection:
        connection.execute("DROP TABLE GBL_BT_SharingProfile_Revoked")
    result = run_command([sys.executable, SCRIPT, "-a", "ciocdemo"], world.env)
    assert result.returncode == 1
    assert_no_traceback(result)
    failure = [line for line in result.stderr.splitlines() if "stopped after" in line]
    assert len(failure) == 1, result.stderr
    assert "sp_STP_Nightly_Tasks stopped" in failure[0]
    assert "no such table: GBL_BT_SharingProfile_Revoked" in failure[0]
    for table in pending:
        assert count(world, "ciocdemo", f"{table}_Accumulator") == 0
        assert count(world, "ciocdemo", table) == before[table] + pending[table]
    with sqlite3.connect(world.database("ciocdemo")) as connection:
        refreshed = connection.execute(
            "SELECT MAX(CMP_USAGE_COUNT_DATE) FROM GBL_BaseTable_StatsCache").fetchone()[0]
    assert refreshed >= datetime.date.today().isoformat()  # the cache step ran and stayed
