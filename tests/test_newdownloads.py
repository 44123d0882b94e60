"""newdownloads: per-member record and stats downloads in password archives."""

import re
import shutil
import sqlite3
import subprocess
import sys

import pytest

from cioctasks import archive
from conftest import ROOT, assert_no_traceback, run_command

SCRIPT = ROOT / "downloads" / "newdownloads.py"
sys.path.insert(0, str(ROOT / "downloads"))
import dbcopy  # noqa: E402
import newdownloads  # noqa: E402
import rules  # noqa: E402


def facts_schema(config):
    """The schema of CIOC's real tables, from cioc_schema.json, as newdownloads reads it."""
    from cioctasks.sampledb import schema

    columns = {name: [dbcopy.Column(c["name"], 0, c["type"], 0, nullable=c.get("null", True))
                      for c in table["columns"]] for name, table in schema.tables().items()}
    return rules.Schema.build(columns, config)


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
    # member 2 has DownloadUncompressed: it only changes the web app's exports
    assert (download_folder(world) / "ciocdemoCIC2.zip").exists()
    assert not (download_folder(world) / "ciocdemoCIC2.sqlite").exists()
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


def test_a_seven_zip_configuration_is_refused_because_the_web_app_serves_only_zip(world, tmp_path):
    config = tmp_path / "downloads.py"
    config.write_text((ROOT / "config" / "downloads.py").read_text(encoding="utf-8")
                      + '\narchive_format = "7z"\n', encoding="utf-8")
    before = (download_folder(world) / "ciocdemoCIC1.zip").read_bytes()
    result = run_command([sys.executable, SCRIPT, "-a", "ciocdemo", "--member", "1",
                          "--config", config], world.env)
    assert result.returncode == 2
    assert_no_traceback(result)
    assert "archive_format '7z'" in result.stderr and "only the .zip" in result.stderr
    assert (download_folder(world) / "ciocdemoCIC1.zip").read_bytes() == before
    assert not (download_folder(world) / "ciocdemoCIC1.7z").exists()


def test_a_configuration_from_before_the_rules_is_refused(world, tmp_path):
    config = tmp_path / "old.py"
    config.write_text("dbinfo = []\ndefault_flavours = ('CIC', 'VOL')\narchive_format = 'zip'\n"
                      "old_sites = {}\nskip_tables = {}\nskip_columns = {}\n"
                      "stats_tables = {}\nconditions = [('*', None)]\n", encoding="utf-8")
    result = run_command([sys.executable, SCRIPT, "--config", config], world.env)
    assert result.returncode == 2
    assert_no_traceback(result)
    assert "missing member_columns" in result.stderr and "shared_tables" in result.stderr


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


def test_rules_fill_in_the_member_over_the_real_schema():
    config = newdownloads.load_config(newdownloads.DEFAULT_CONFIG)
    plan = {d.table: d for d in rules.record_plan(config, facts_schema(config), "VOL")}
    condition = {t: rules.fill(d.condition, 3, 2026) for t, d in plan.items()}
    assert condition["GBL_BaseTable"] == "[MemberID] = 3"
    opportunities = "SELECT [VNUM] FROM [VOL_Opportunity] WHERE [MemberID] = 3"
    assert condition["VOL_OP_CM"] == f"[VNUM] IN ({opportunities})"  # GBL_Community is shared
    # no VNUM of its own: kept through its foreign key to VOL_OP_SK
    assert condition["VOL_OP_SK_Notes"] == (
        f"[OP_SK_ID] IN (SELECT [OP_SK_ID] FROM [VOL_OP_SK] WHERE [VNUM] IN ({opportunities}))")
    assert condition["VOL_Skill"] == "([MemberID] = 3 OR [MemberID] IS NULL)"
    assert plan["STP_Language"].copied and plan["STP_Language"].condition is None
    assert not plan["VOL_OP_SharingProfile_Revoked"].copied
    assert not plan["CIC_BT_CM"].copied and "VOL download" in plan["CIC_BT_CM"].rule
    assert plan["STP_Member"].stripped == (
        "DownloadPasswordCIC", "DownloadPasswordVOL", "LoginRetryLimit", "BillingInfoPassword")
    assert plan["GBL_BaseTable"].stripped == ("UPDATE_PASSWORD", "UPDATE_PASSWORD_REQUIRED", "FBKEY")


def test_no_configuration_copies_a_user_table_or_a_secret_column():
    config = dict(newdownloads.load_config(newdownloads.DEFAULT_CONFIG))
    config.update(shared_tables=["*"], not_copied=[], other_flavour_tables={}, skip_columns={},
                  conditions={"GBL_Users*": "MemberID_Cache = {MemberID}",
                              "VOL_Profile": "MemberID = {MemberID}"})
    plan = {d.table: d for d in rules.record_plan(config, facts_schema(config), "CIC")}
    for table in ("GBL_Users", "GBL_Users_APICreds", "GBL_Users_History", "VOL_Profile",
                  "VOL_Profile_CM", "GBL_FeedAPIKey", "CIC_Offline_Machines"):
        assert not plan[table].copied and "user or credential" in plan[table].rule, table
    assert "DownloadPasswordCIC" in plan["STP_Member"].stripped
    assert "GoogleMapsAPIKeyCIC" in plan["GBL_View_DomainMap"].stripped


@pytest.mark.parametrize("name", [
    "PasswordHash", "PasswordHashSalt", "PasswordHashRepeat", "UPDATE_PASSWORD", "FBKEY",
    "SingleLoginKey", "LoginKey", "ConfirmationToken", "UnsubscribeToken", "GoogleMapsAPIKeyCIC",
    "DownloadPasswordVOL", "BillingInfoPassword", "GetInvolvedToken", "LastSuccessfulLogin",
    "PublicKey", "FeedAPIKey", "CredID", "Secret"])
def test_secret_looking_columns(name):
    assert rules.is_secret_column(name)


@pytest.mark.parametrize("name", [
    "NUM", "MemberID", "BSrchKeywords", "KeywordType", "KeywordSearchTitle", "ACCREDITED",
    "ACCREDITATION_NOTES", "ORG_LEVEL_1", "UPDATE_EMAIL", "AcceptCookiePrompt"])
def test_columns_that_only_look_like_secrets_are_kept(name):
    assert not rules.is_secret_column(name)


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


def plan_lines(world, *args):
    result = run_command([sys.executable, SCRIPT, "--plan", *args], world.env)
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result)
    return result.stdout.splitlines()


def test_the_plan_decides_every_table_of_the_real_schema_without_passwords_or_the_lock(world):
    from cioctasks import lock
    from cioctasks.sampledb import schema

    with sqlite3.connect(world.database("ciocdemo")) as connection:
        connection.execute("UPDATE STP_Member SET DownloadPasswordCIC = NULL, "
                           "DownloadPasswordVOL = NULL")
    before = sorted(p.name for p in download_folder(world).iterdir())
    held = lock.TaskLock(world.directory / "state" / "locks", "newdownloads").acquire()
    try:
        lines = plan_lines(world, "-a", "ciocdemo")
    finally:
        held.release()
    decided = {}
    for line in lines:
        site, flavour, rest = line.split(" ", 2)
        table, _, decision = rest.partition(": ")
        assert site == "ciocdemo"
        if table.startswith("member "):
            continue
        assert (flavour, table) not in decided, line
        decided[flavour, table] = decision
    assert set(decided) == {(f, t) for f in ("CIC", "VOL") for t in schema.tables()}
    # every real table is kept to the member, shared, or left out for a named reason
    assert not [key for key, decision in decided.items() if rules.NO_RULE in decision]
    for flavour in ("CIC", "VOL"):
        assert decided[flavour, "GBL_Users"] == "not copied: a user or credential table: never copied"
        assert decided[flavour, "STP_Language"].startswith("copied (shared reference table)")
    assert decided["VOL", "VOL_OP_SK_Notes"].startswith("copied (foreign key to VOL_OP_SK)")
    assert "ciocdemo CIC member 1: download/ciocdemoCIC1.zip (the web app's downloads/ciocdemoCIC.zip)" in lines
    assert sorted(p.name for p in download_folder(world).iterdir()) == before
    filled = plan_lines(world, "-a", "ciocdemo", "--member", "2")
    assert "ciocdemo CIC GBL_BaseTable: copied (member column MemberID) without UPDATE_PASSWORD, " \
           "UPDATE_PASSWORD_REQUIRED, FBKEY: WHERE [MemberID] = 2" in filled


def test_no_download_holds_a_secret_column_or_another_members_row(world, tmp_path):
    result = run_command([sys.executable, SCRIPT], world.env)
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result)
    for site in world.sites:
        assert f"{site}: ok" in result.stdout and result.stdout.count("built 4 record downloads") == 2
    plan = {}
    for line in plan_lines(world, "-a", "ciocdemo"):
        _, flavour, rest = line.split(" ", 2)
        plan[flavour, rest.partition(": ")[0]] = rest.partition(": ")[2]
    for site in world.sites:
        source = sqlite3.connect(world.database(site))
        for member_id in (1, 2):
            for flavour in ("CIC", "VOL"):
                name = f"{site}{flavour}{member_id}.zip"
                out = archive.extract(download_folder(world, site) / name,
                                      member_password(world, member_id, flavour, site),
                                      tmp_path / name)
                (database,) = list(out.iterdir())
                connection = sqlite3.connect(database)
                tables = [r[0] for r in connection.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'")]
                assert "GBL_BaseTable" in tables
                for table in tables:
                    columns = [r[1] for r in connection.execute(f"PRAGMA table_info([{table}])")]
                    assert not [c for c in columns if rules.is_secret_column(c)], table
                    for column in ("MemberID", "MemberID_Cache"):
                        if column in columns:
                            assert connection.execute(
                                f"SELECT COUNT(*) FROM [{table}] WHERE [{column}] <> ?",
                                (member_id,)).fetchone() == (0,), (name, table)
                    shared = "shared" in plan[flavour, table]
                    for row in connection.execute(f"SELECT * FROM [{table}]"):
                        for column, value in zip(columns, row):
                            if isinstance(value, str):
                                assert not other_members_row(source, table, column, value,
                                                             member_id, shared), (name, value)
                connection.close()
        source.close()


def other_members_row(source, table, column, value, member_id, shared):
    """True if ``value`` (of ``table``.``column`` in member ``member_id``'s download) is text
    of another member's row. The sample generator writes "<table>.<column> of member N" in
    each member's row; a row tied to no member is written once, naming member 1. So text
    naming member 2 is always member 2's; text naming member 1 is member 1's only when
    member 2 has its twin (else it may be a shared row, or one tied to member 2 through
    rows the generator filled by hand)."""
    named = re.search(r"of member (\d+)$", value)
    if named is None or int(named.group(1)) == member_id:
        return False  # cut short by its column's length, or the member's own
    if member_id == 1:
        return True
    if shared or not value.startswith(f"{table}."):
        return False  # a shared table, or a key of a parent row
    twin = value.replace("of member 1", "of member 2")
    return source.execute(f"SELECT 1 FROM [{table}] WHERE [{column}] = ?", (twin,)).fetchone() is not None


def test_a_member_that_stops_using_cic_gets_no_cic_download_and_its_old_one_goes(world):
    with sqlite3.connect(world.database("ciocdemo")) as connection:
        connection.execute("UPDATE STP_Member SET UseCIC = 0 WHERE MemberID = 2")
    (download_folder(world) / "ciocdemoCIC2.sqlite").write_bytes(b"an old uncompressed one")
    result = run_command([sys.executable, SCRIPT, "-a", "ciocdemo", "-v"], world.env)
    assert result.returncode == 0, result.stderr
    assert "built 3 record downloads" in result.stdout
    assert "ciocdemoCIC2: UseCIC is off: no download; removed ciocdemoCIC2.zip, " \
           "ciocdemoCIC2.sqlite" in result.stderr
    names = {p.name for p in download_folder(world).iterdir()}
    assert "ciocdemoCIC2.zip" not in names and "ciocdemoCIC2.sqlite" not in names
    assert {"ciocdemoCIC1.zip", "ciocdemoVOL1.zip", "ciocdemoVOL2.zip"} <= names
    assert "ciocdemo CIC member 2: no download: UseCIC is off (download/ciocdemoCIC2.zip " \
           "is removed)" in plan_lines(world, "-a", "ciocdemo")


def test_download_uncompressed_publishes_the_zip_the_web_app_serves_and_removes_stale_files(
        world, tmp_path):
    folder = download_folder(world)
    (folder / "ciocdemoCIC2.sqlite").write_bytes(b"published by an earlier version, never served")
    (folder / "ciocdemoCIC2.7z").write_bytes(b"published with archive_format 7z, never served")
    dry = run_command([sys.executable, SCRIPT, "-a", "ciocdemo", "--member", "2", "-n"], world.env)
    assert dry.returncode == 0, dry.stderr
    assert (folder / "ciocdemoCIC2.sqlite").exists() and (folder / "ciocdemoCIC2.7z").exists()
    result = run_command([sys.executable, SCRIPT, "-a", "ciocdemo", "--member", "2"], world.env)
    assert result.returncode == 0, result.stderr
    assert "built 2 record downloads" in result.stdout
    with sqlite3.connect(world.database("ciocdemo")) as connection:
        assert connection.execute("SELECT DownloadUncompressed FROM STP_Member "
                                  "WHERE MemberID = 2").fetchone() == (1,)
    assert not (folder / "ciocdemoCIC2.sqlite").exists() and not (folder / "ciocdemoCIC2.7z").exists()
    records = open_download(world, tmp_path, "ciocdemoCIC2.zip", member_password(world, 2, "CIC"))
    assert records.execute("SELECT DISTINCT MemberID FROM GBL_BaseTable").fetchall() == [(2,)]


# -- unattended: no failure vanishes, nothing left behind --------------------------------------

def test_a_configuration_that_calls_sys_exit_is_a_configuration_error(world, tmp_path):
    config = tmp_path / "exits.py"
    config.write_text("import sys\nsys.exit(3)\n", encoding="utf-8")
    result = run_command([sys.executable, SCRIPT, "--config", config], world.env)
    assert result.returncode == 2
    assert_no_traceback(result)
    (line,) = result.stderr.strip().splitlines()
    assert line == f"newdownloads: {config}: it calls sys.exit(3) while it is read"


def dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_the_next_run_removes_what_a_killed_run_left_and_nothing_else(world):
    folder = download_folder(world)
    gone = dead_pid()
    leftovers = [folder / f".ciocdemoCIC1.zip.{gone}.tmp", folder / f".ciocdemoVOL9.zip.{gone}.tmp"]
    for path in leftovers:
        path.write_bytes(b"PK half an archive")
    work = world.directory / "state" / "downloads" / "ciocdemo"
    work.mkdir(parents=True)
    (work / "ciocdemoCIC9.sqlite").write_bytes(b"a member's records, half copied")
    kept = [folder / f".readme.html.{gone}.tmp", folder / ".ciocdemoCIC1.zip.tmp",
            folder / "ciocdemoCIC9.zip"]
    for path in kept:
        path.write_bytes(b"not ours to remove")
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"]) as running:
        try:
            busy = folder / f".ciocdemoVOL2.zip.{running.pid}.tmp"  # a run still writing it
            busy.write_bytes(b"PK")
            dry = run_command([sys.executable, SCRIPT, "-a", "ciocdemo", "--member", "1", "-n"],
                              world.env)
            assert dry.returncode == 0, dry.stderr
            assert all(path.exists() for path in leftovers)
            result = run_command([sys.executable, SCRIPT, "-a", "ciocdemo", "--member", "1", "-v"],
                                 world.env)
        finally:
            running.kill()
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result)
    assert not any(path.exists() for path in leftovers)
    assert list(work.iterdir()) == []
    assert all(path.exists() for path in kept) and busy.exists()
    assert f"removed {leftovers[0]}, left by a killed run (process {gone} is gone)" in result.stderr


#: Runs a script (argv[2:]) with one member's work database on a full disk: four pages.
FULL_WORK_FOLDER = """
import runpy, sys
sys.path.insert(0, sys.argv[1])
import dbcopy
real = dbcopy.SqliteTarget.__init__
def on_a_full_disk(self, path):
    real(self, path)
    if self.path.name == "ciocdemoCIC1.sqlite":
        self.connection.execute("PRAGMA max_page_count = 4")
dbcopy.SqliteTarget.__init__ = on_a_full_disk
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

#: Runs a script (argv[2:]) where writing ciocdemoCIC1.zip fails past 32 KB, as on a full
#: disk (POSIX: a file size limit, EFBIG).
FULL_DOWNLOAD_FOLDER = """
import resource, runpy, sys
from pathlib import Path
from cioctasks import archive
real = archive.pack
def pack(target, *args, **options):
    if Path(target).name != "ciocdemoCIC1.zip":
        return real(target, *args, **options)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (32 * 1024, hard))
    try:
        return real(target, *args, **options)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
archive.pack = pack
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def assert_one_failure_and_the_rest_built(world, result, failure):
    assert result.returncode == 1, result.stdout + result.stderr
    assert_no_traceback(result)
    assert "Exception ignored" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "member 1 CIC" in line]
    assert lines == [f"newdownloads[ciocdemo]: ciocdemo member 1 CIC: {failure}"]
    assert "ciocdemo: failed" in result.stdout and "built 3 record downloads" in result.stdout
    assert "ciocnord: ok" in result.stdout and "built 4 record downloads" in result.stdout
    names = [p.name for p in download_folder(world).iterdir()]
    assert not [name for name in names if name.endswith(".tmp")]
    assert list((world.directory / "state" / "downloads" / "ciocdemo").iterdir()) == []


def test_a_full_work_folder_fails_that_download_in_one_line_and_the_rest_go_on(world):
    previous = (download_folder(world) / "ciocdemoCIC1.zip").read_bytes()
    result = run_command([sys.executable, "-c", FULL_WORK_FOLDER, ROOT / "downloads", SCRIPT],
                         world.env)
    work = world.directory / "state" / "downloads" / "ciocdemo" / "ciocdemoCIC1.sqlite"
    assert_one_failure_and_the_rest_built(
        world, result, f"cannot write {work}: database or disk is full")
    assert (download_folder(world) / "ciocdemoCIC1.zip").read_bytes() == previous


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX resource limits")
def test_a_full_download_folder_fails_that_download_in_one_line_and_the_rest_go_on(world):
    import errno
    import os

    previous = (download_folder(world) / "ciocdemoCIC1.zip").read_bytes()
    result = run_command([sys.executable, "-c", FULL_DOWNLOAD_FOLDER, ROOT / "downloads", SCRIPT],
                         world.env)
    assert_one_failure_and_the_rest_built(
        world, result, f"ciocdemoCIC1.zip: cannot write the archive: {download_folder(world)}: "
                       f"{os.strerror(errno.EFBIG)}")
    assert (download_folder(world) / "ciocdemoCIC1.zip").read_bytes() == previous
