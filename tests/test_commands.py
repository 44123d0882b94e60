"""The built-in commands run as a user would: python -m cioctasks check | status."""

import sqlite3
import sys

from conftest import assert_no_traceback, run_command
from test_db import make_site


def three_sites_one_broken(tmp_path):
    base = tmp_path / "UDLs"
    for name in ("ciocalpha", "ciocbeta"):
        path = tmp_path / f"{name}.sqlite"
        sqlite3.connect(path).close()
        make_site(base, name, path)
    broken = base / "ciocbroken"
    broken.mkdir()
    (broken / "cron_job_runner.udl").write_bytes(
        "[oledb]\r\nProvider=SQLOLEDB.1;Password=topsecret;User ID=x\r\n".encode("utf-16")
    )


def test_check_names_the_broken_udl_and_still_checks_the_others(cioc_env, tmp_path):
    three_sites_one_broken(tmp_path)
    result = run_command([sys.executable, "-m", "cioctasks", "check"], cioc_env)
    assert result.returncode == 1
    assert_no_traceback(result)
    lines = result.stdout.splitlines()
    assert any(line.split()[:3] == ["ciocalpha", "sample", "ok"] for line in lines), result.stdout
    assert any(line.split()[:3] == ["ciocbeta", "sample", "ok"] for line in lines)
    assert any(line.startswith("ciocbroken") and "FAILED" in line for line in lines)
    assert "bad UDL" in result.stderr and "ciocbroken" in result.stderr
    assert "topsecret" not in result.stdout + result.stderr
    assert any(line.split()[:3] == ["mail", "file", "ok"] for line in lines)


def test_check_of_one_database_with_a_good_udl_passes(cioc_env, tmp_path):
    three_sites_one_broken(tmp_path)
    result = run_command([sys.executable, "-m", "cioctasks", "check", "-a", "CIOCALPHA"], cioc_env)
    assert result.returncode == 0, result.stderr
    assert "ciocbroken" not in result.stdout


def test_check_of_an_unknown_database_exits_2_listing_the_known(cioc_env, tmp_path):
    three_sites_one_broken(tmp_path)
    result = run_command([sys.executable, "-m", "cioctasks", "check", "-a", "nosuch"], cioc_env)
    assert result.returncode == 2
    assert_no_traceback(result)
    assert "unknown database nosuch; known: ciocalpha, ciocbeta, ciocbroken" in result.stderr


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
