"""The built-in commands run as a user would: python -m cioctasks check | status."""

import sqlite3
import sys
from pathlib import Path

from conftest import assert_no_traceback, clean_environ, run_command
from test_db import make_site


def add_site(world, name, database_path):
    """A site in the world's UDL folder whose UDL names ``database_path``."""
    make_site(Path(world.environ()["CIOC_UDL_BASE"]), name, database_path)


def add_broken_site(world):
    broken = Path(world.environ()["CIOC_UDL_BASE"]) / "ciocbroken"
    broken.mkdir()
    (broken / "cron_job_runner.udl").write_bytes(
        "[oledb]\r\nProvider=SQLOLEDB.1;Password=topsecret;User ID=x\r\n".encode("utf-16")
    )


def checked(stdout):
    """The check table as {database: (result, detail, {task: (result, detail)})}."""
    databases = {}
    for line in stdout.splitlines()[2:]:
        if line.startswith("  "):
            task, result, *detail = line.split(maxsplit=2)
            databases[current][2][task] = (result, " ".join(detail))
        else:
            current, _, result, *detail = line.split(maxsplit=3)
            databases[current] = (result, " ".join(detail), {})
    return databases


def test_check_names_the_broken_udl_and_still_checks_the_others(world):
    add_broken_site(world)
    result = run_command([sys.executable, "-m", "cioctasks", "check"], world.env)
    assert result.returncode == 1
    assert_no_traceback(result)
    lines = result.stdout.splitlines()
    assert any(line.split()[:3] == ["ciocdemo", "sample", "ok"] for line in lines), result.stdout
    assert any(line.split()[:3] == ["ciocnord", "sample", "ok"] for line in lines)
    assert any(line.startswith("ciocbroken") and "FAILED" in line for line in lines)
    assert "bad UDL" in result.stderr and "ciocbroken" in result.stderr
    assert "topsecret" not in result.stdout + result.stderr
    assert any(line.split()[:3] == ["mail", "file", "ok"] for line in lines)


def test_check_of_one_database_with_a_good_udl_passes(world):
    add_broken_site(world)
    result = run_command([sys.executable, "-m", "cioctasks", "check", "-a", "CIOCDEMO"], world.env)
    assert result.returncode == 0, result.stderr
    assert "ciocbroken" not in result.stdout and "ciocnord" not in result.stdout


def test_check_of_an_unknown_database_exits_2_listing_the_known(world):
    add_broken_site(world)
    result = run_command([sys.executable, "-m", "cioctasks", "check", "-a", "nosuch"], world.env)
    assert result.returncode == 2
    assert_no_traceback(result)
    assert "unknown database nosuch; known: ciocbroken, ciocdemo, ciocnord" in result.stderr


def test_check_fails_a_udl_naming_a_missing_database_file_and_creates_none(world, tmp_path):
    add_site(world, "ciocgone", tmp_path / "gone.sqlite")
    add_site(world, "ciocrelative", "relative.sqlite")  # the driver's folder: the cwd
    result = run_command([sys.executable, "-m", "cioctasks", "check"], world.env, cwd=tmp_path)
    assert result.returncode == 1
    assert_no_traceback(result)
    table = checked(result.stdout)
    for name in ("ciocgone", "ciocrelative"):
        assert table[name][0] == "FAILED" and "cannot connect" in table[name][1], result.stdout
        assert f"{name}: cannot connect" in result.stderr
    assert table["ciocdemo"][0] == "ok"
    assert not (tmp_path / "gone.sqlite").exists()
    assert not (tmp_path / "relative.sqlite").exists()


def test_check_fails_a_database_that_is_not_a_cioc_database(world, tmp_path):
    with sqlite3.connect(tmp_path / "other.sqlite") as connection:
        connection.execute("CREATE TABLE Customers (ID int)")
    add_site(world, "ciocother", tmp_path / "other.sqlite")
    result = run_command([sys.executable, "-m", "cioctasks", "check"], world.env)
    assert result.returncode == 1
    assert_no_traceback(result)
    table = checked(result.stdout)
    assert table["ciocother"][0] == "FAILED"
    assert table["ciocother"][1].startswith("not a CIOC database: cannot read STP_Member")
    assert table["ciocother"][2] == {}  # no task is listed for it
    assert "ciocother: not a CIOC database" in result.stderr
    assert table["ciocdemo"][0] == "ok"


def test_check_lists_per_database_the_tasks_that_can_run_there(tmp_path):
    """GetInvolved is not in a current CIOC database: not a failure, said as such."""
    from cioctasks import procs, sampledb

    world = sampledb.create(tmp_path / "world", sites=2, getinvolved=("ciocnord",))
    result = run_command([sys.executable, "-m", "cioctasks", "check"],
                         clean_environ(**world.environ()), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result)
    table = checked(result.stdout)
    assert table["ciocdemo"][1].startswith("CIOC database, 2 members")
    for site in ("ciocdemo", "ciocnord"):
        assert list(table[site][2]) == list(procs.TASK_PROCEDURES)
        for task in ("nightly_db_maintenance", "cic_changes_for_vol", "volnotify",
                     "update_offline_tools_map"):
            assert table[site][2][task] == ("ok", "can run")
    assert table["ciocnord"][2]["getinvolvedapi"] == ("ok", "can run")
    assert table["ciocdemo"][2]["getinvolvedapi"] == (
        "n/a", "cannot run: not in this CIOC version "
               "(no sp_VOL_GetInvolved_Enabled, sp_VOL_GetInvolved_Sync)")


def test_check_fails_a_task_whose_procedure_the_login_may_not_execute(world, monkeypatch, capsys):
    """On SQL Server HAS_PERMS_BY_NAME says "denied"; the sample has no permissions, so the
    answer is given here."""
    from cioctasks import __main__ as commands
    from cioctasks import db

    real_state = db.Database.procedure_state

    def no_execute_on_num_changed(self, name):
        return "denied" if name == "sp_VOL_NUMChanged_l" else real_state(self, name)

    monkeypatch.setattr(db.Database, "procedure_state", no_execute_on_num_changed)
    assert commands.main(["check", "-a", "ciocdemo"]) == 1
    output = capsys.readouterr()
    tasks = checked(output.out)["ciocdemo"][2]
    assert tasks["cic_changes_for_vol"] == (
        "FAILED", "cannot run: this login may not EXECUTE sp_VOL_NUMChanged_l")
    assert tasks["nightly_db_maintenance"] == ("ok", "can run")
    assert "ciocdemo: cic_changes_for_vol cannot run: this login may not EXECUTE" in output.err


def test_check_send_test_writes_a_message_with_the_file_backend(cioc_env, tmp_path):
    result = run_command([sys.executable, "-m", "cioctasks", "check", "--send-test"], cioc_env)
    assert result.returncode == 0, result.stderr
    messages = list((tmp_path / "mail").glob("*.eml"))
    assert len(messages) == 1
    assert b"test message" in messages[0].read_bytes()


def test_check_reports_a_mail_server_that_is_down(cioc_env):
    env = dict(cioc_env, CIOC_MAIL_BACKEND="smtp", CIOC_MAIL_HOST="127.0.0.1", CIOC_MAIL_PORT="9")
    result = run_command([sys.executable, "-m", "cioctasks", "check"], env)
    assert result.returncode == 1
    assert_no_traceback(result)
    assert any(line.startswith("mail") and "FAILED" in line for line in result.stdout.splitlines())


def test_status_before_any_run_lists_every_scheduled_task_as_never_run(cioc_env):
    result = run_command([sys.executable, "-m", "cioctasks", "status"], cioc_env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()[2:]
    assert lines and all("never run" in line for line in lines)
    assert any(line.startswith("volnotify ") for line in lines)


def test_status_exits_1_when_a_last_run_failed(cioc_env):
    from conftest import SCRIPTS

    run_command([sys.executable, SCRIPTS / "plain_task.py", "--fail"], cioc_env)
    result = run_command([sys.executable, "-m", "cioctasks", "status"], cioc_env)
    assert result.returncode == 1
    assert "plain_task" in result.stdout and "failed" in result.stdout
    assert "plain_task: last run failed" in result.stderr


def test_the_command_list_is_the_help(cioc_env):
    result = run_command([sys.executable, "-m", "cioctasks", "--help"], cioc_env)
    assert result.returncode == 0
    assert "check" in result.stdout and "status" in result.stdout
