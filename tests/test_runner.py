"""The runner as a user meets it: scripts run as subprocesses, with real servers."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, SCRIPTS, assert_no_traceback, run_command

PLAIN = SCRIPTS / "plain_task.py"


def start_holding_the_lock(env, tmp_path, seconds=30):
    process = subprocess.Popen(
        [sys.executable, str(PLAIN), "--sleep", str(seconds)], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    log = tmp_path / "logs" / "cioctasks" / "plain_task.log"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if log.exists() and " start" in log.read_text(encoding="utf-8"):
            return process
        time.sleep(0.05)
    process.kill()
    raise AssertionError("the first run never started")


def test_a_finished_run_prints_its_summary_and_is_recorded(cioc_env, tmp_path):
    result = run_command([sys.executable, PLAIN], cioc_env)
    assert result.returncode == 0, result.stderr
    assert "plain_task: ok" in result.stdout and "work done" in result.stdout
    status = run_command([sys.executable, "-m", "cioctasks", "status", "--json"], cioc_env)
    assert status.returncode == 0, status.stderr
    runs = [r for r in json.loads(status.stdout) if r["task"] == "plain_task"]
    assert [(r["status"], r["summary"]) for r in runs] == [("ok", "work done")]


def test_a_second_run_exits_75_naming_the_holder_and_a_killed_holder_frees_the_lock(cioc_env, tmp_path):
    holder = start_holding_the_lock(cioc_env, tmp_path)
    try:
        second = run_command([sys.executable, PLAIN], cioc_env)
        assert second.returncode == 75
        assert f"pid {holder.pid}" in second.stderr
        assert "already running" in second.stderr
        assert_no_traceback(second)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    third = run_command([sys.executable, PLAIN], cioc_env)
    assert third.returncode == 0, third.stderr


def test_a_bad_flag_is_one_line_and_exit_2(cioc_env):
    result = run_command([sys.executable, PLAIN, "--no-such-flag"], cioc_env)
    assert result.returncode == 2
    assert_no_traceback(result)
    assert "unrecognized arguments: --no-such-flag" in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_help_comes_from_the_script_docstring(cioc_env):
    result = run_command([sys.executable, PLAIN, "--help"], cioc_env)
    assert result.returncode == 0
    assert "A test task without databases" in result.stdout
    for flag in ("--dry-run", "--verbose", "--quiet", "--notify-errors", "--version"):
        assert flag in result.stdout


def test_an_expected_failure_is_one_masked_line_and_exit_1(cioc_env, tmp_path):
    result = run_command([sys.executable, PLAIN, "--fail"], cioc_env)
    assert result.returncode == 1
    assert_no_traceback(result)
    assert "the work failed" in result.stderr
    assert "hunter2secret" not in result.stderr + result.stdout
    log = (tmp_path / "logs" / "cioctasks" / "plain_task.log").read_text(encoding="utf-8")
    assert "hunter2secret" not in log and "Password=***" in log


def test_a_crash_is_exit_70_with_the_traceback_in_the_log_and_on_the_console_only_with_v(cioc_env, tmp_path):
    result = run_command([sys.executable, PLAIN, "--crash"], cioc_env)
    assert result.returncode == 70
    assert_no_traceback(result)
    assert "ZeroDivisionError: crashed on purpose" in result.stderr
    log = (tmp_path / "logs" / "cioctasks" / "plain_task.log").read_text(encoding="utf-8")
    assert "Traceback" in log
    verbose = run_command([sys.executable, PLAIN, "--crash", "-v"], cioc_env)
    assert verbose.returncode == 70 and "Traceback" in verbose.stderr


def test_pings_mark_start_and_exit_code_and_a_dead_ping_server_changes_nothing(cioc_env, httpserver):
    httpserver.expect_request("/key/plain_task/start", method="POST").respond_with_data("OK")
    httpserver.expect_request("/key/plain_task/1", method="POST").respond_with_data("OK")
    env = dict(cioc_env, CIOC_PING_URL=httpserver.url_for("/key"))
    result = run_command([sys.executable, PLAIN, "--fail"], env)
    assert result.returncode == 1
    paths = [request.path for request, _ in httpserver.log]
    assert paths == ["/key/plain_task/start", "/key/plain_task/1"]
    assert b"the work failed" in httpserver.log[1][0].data
    dead = dict(cioc_env, CIOC_PING_URL="http://127.0.0.1:9/key")
    result = run_command([sys.executable, PLAIN], dead)
    assert result.returncode == 0, result.stderr
    assert "ping" in result.stderr and "failed" in result.stderr


def test_dry_run_records_no_history_and_pings_nothing(cioc_env, httpserver):
    env = dict(cioc_env, CIOC_PING_URL=httpserver.url_for("/key"))
    result = run_command([sys.executable, PLAIN, "--dry-run"], env)
    assert result.returncode == 0
    assert "(dry run)" in result.stdout
    assert httpserver.log == []
    status = run_command([sys.executable, "-m", "cioctasks", "status"], env)
    assert "plain_task" not in status.stdout


def run_without_streams(args, env):
    """Run a command with stdin, stdout and stderr closed, as pythonw.exe leaves them."""
    return subprocess.run(
        ["sh", "-c", 'exec "$@" <&- >&- 2>&-', "sh", *[str(a) for a in args]],
        env=env, timeout=120,
    )


def test_without_a_console_a_failure_arrives_by_mail_with_its_traceback(cioc_env, tmp_path):
    from smtpserver import SMTPServer

    with SMTPServer() as server:
        env = dict(cioc_env, CIOC_MAIL_BACKEND="smtp", CIOC_MAIL_HOST="127.0.0.1",
                   CIOC_MAIL_PORT=str(server.port))
        result = run_without_streams([sys.executable, PLAIN, "--crash"], env)
        assert result.returncode == 70
        server.wait_for(1, timeout=20)
        message = server.messages[0]
    assert message["To"] == "tasks@example.org" and message["From"] == "tasks@example.org"
    assert "plain_task failed" in message["Subject"]
    body = message.get_body(("plain",)).get_content()
    assert "ZeroDivisionError: crashed on purpose" in body
    log = (tmp_path / "logs" / "cioctasks" / "plain_task.log").read_text(encoding="utf-8")
    assert "stray output from the task" in log
    assert "Traceback" in log


def test_without_a_console_a_bad_flag_is_mailed_too(cioc_env):
    from smtpserver import SMTPServer

    with SMTPServer() as server:
        env = dict(cioc_env, CIOC_MAIL_BACKEND="smtp", CIOC_MAIL_PORT=str(server.port))
        result = run_without_streams([sys.executable, PLAIN, "--no-such-flag"], env)
        assert result.returncode == 2
        server.wait_for(1, timeout=20)
        body = server.messages[0].get_body(("plain",)).get_content()
    assert "unrecognized arguments: --no-such-flag" in body


@pytest.mark.parametrize("damage", ["corrupt run state", "state folder is a file"])
def test_without_a_console_an_unusable_state_folder_is_mailed(cioc_env, tmp_path, damage):
    from smtpserver import SMTPServer

    state = tmp_path / "state-here"
    if damage == "corrupt run state":
        state.mkdir()
        (state / "state.sqlite").write_bytes(bytes(range(256)) * 20)
    else:
        state.write_text("not a folder", encoding="utf-8")
    with SMTPServer() as server:
        env = dict(cioc_env, CIOC_MAIL_BACKEND="smtp", CIOC_MAIL_PORT=str(server.port),
                   CIOC_STATE_DIR=str(state), CIOC_MAIL_OUTBOX=str(tmp_path / "outbox"))
        result = run_without_streams([sys.executable, PLAIN], env)
        assert result.returncode == 2
        server.wait_for(1, timeout=20)
        assert "plain_task failed" in server.messages[0]["Subject"]


def test_an_unknown_command_lists_the_commands(cioc_env):
    result = run_command([sys.executable, "-m", "cioctasks", "frobnicate"], cioc_env)
    assert result.returncode == 2
    assert "check" in result.stderr and "status" in result.stderr


SAMPLE = SCRIPTS / "sample_task.py"


def member_sites(tmp_path, names):
    import sqlite3

    from test_db import make_site

    for name in names:
        path = tmp_path / f"{name}.sqlite"
        with sqlite3.connect(path) as connection:
            connection.execute("CREATE TABLE STP_Member (MemberID INTEGER)")
            connection.executemany("INSERT INTO STP_Member VALUES (?)", [(1,), (2,)])
        make_site(tmp_path / "UDLs", name, path)


def test_one_failing_database_never_stops_the_others(cioc_env, tmp_path):
    member_sites(tmp_path, ["one", "two", "three"])
    result = run_command([sys.executable, SAMPLE, "--fail-on", "two"], cioc_env)
    assert result.returncode == 1
    assert_no_traceback(result)
    assert "one: ok" in result.stdout and "three: ok" in result.stdout
    assert "2 members" in result.stdout
    assert "asked to fail on two" in result.stderr
    assert "failed: two" in result.stderr
    runs = json.loads(run_command([sys.executable, "-m", "cioctasks", "status", "--json"],
                                  cioc_env).stdout)
    assert {(r["database"], r["status"]) for r in runs if r["task"] == "sample_task"} == {
        ("one", "ok"), ("two", "failed"), ("three", "ok")}


def test_a_crash_in_one_database_is_exit_70_and_the_others_still_run(cioc_env, tmp_path):
    member_sites(tmp_path, ["one", "two"])
    result = run_command([sys.executable, SAMPLE, "--crash-on", "one"], cioc_env)
    assert result.returncode == 70
    assert "two: ok" in result.stdout
    assert "hunter2secret" not in result.stdout + result.stderr


def test_the_prepare_hook_runs_once_and_every_database_sees_what_it_made(cioc_env, tmp_path):
    member_sites(tmp_path, ["one", "two", "three"])
    result = run_command([sys.executable, SAMPLE, "--unit", "volunteers", "-j", "2"], cioc_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("2 volunteers") == 3


def test_a_configuration_error_in_the_prepare_hook_is_exit_2_before_any_database(cioc_env, tmp_path,
                                                                                   httpserver):
    member_sites(tmp_path, ["one", "two"])
    httpserver.expect_request("/key/sample_task/start", method="POST").respond_with_data("OK")
    httpserver.expect_request("/key/sample_task/2", method="POST").respond_with_data("OK")
    env = dict(cioc_env, CIOC_PING_URL=httpserver.url_for("/key"))
    result = run_command([sys.executable, SAMPLE, "--unit", "4 u"], env)
    assert result.returncode == 2
    assert_no_traceback(result)
    assert result.stderr.strip() == "sample_task: --unit must be a word, not '4 u'"
    assert "one: ok" not in result.stdout
    # monitoring sees the run end in failure, not a start that never finished
    assert [request.path for request, _ in httpserver.log] == ["/key/sample_task/start",
                                                               "/key/sample_task/2"]


def test_databases_run_in_parallel_with_jobs(cioc_env, tmp_path):
    member_sites(tmp_path, ["one", "two", "three", "four"])
    import time

    started = time.monotonic()
    result = run_command([sys.executable, SAMPLE, "-j", "4", "--sleep", "1.5"], cioc_env)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(": ok") == 4
    # Four 1.5 s databases in sequence would take 6 s; in parallel they overlap.
    assert elapsed < 5.5


def test_every_log_line_names_the_task_and_its_database(cioc_env, tmp_path):
    member_sites(tmp_path, ["one", "two"])
    run_command([sys.executable, SAMPLE, "-j", "2", "--fail-on", "two"], cioc_env)
    log = (tmp_path / "logs" / "cioctasks" / "sample_task.log").read_text(encoding="utf-8")
    assert "sample_task[two] asked to fail on two" in log.replace("ERROR   ", "")
    assert "sample_task[one] ok" in log.replace("INFO    ", "")


def test_a_report_spooled_while_the_server_is_down_goes_out_with_the_next_run(cioc_env, tmp_path):
    from smtpserver import SMTPServer, free_port

    port = free_port()
    env = dict(cioc_env, CIOC_MAIL_BACKEND="smtp", CIOC_MAIL_PORT=str(port))
    failed = run_command([sys.executable, PLAIN, "--fail", "--notify-errors"], env)
    assert failed.returncode == 1
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 1
    with SMTPServer(port=port) as server:
        later = run_command([sys.executable, PLAIN], env)
        assert later.returncode == 0, later.stderr
        server.wait_for(2)
    subjects = [m["Subject"] for m in server.messages]
    assert any("plain_task failed" in s for s in subjects)
    assert any("plain_task recovered" in s for s in subjects)
    assert list((tmp_path / "outbox").glob("*.eml")) == []


def test_the_same_failure_is_not_mailed_again_within_the_repeat_window(cioc_env, tmp_path):
    for _ in range(3):
        result = run_command([sys.executable, PLAIN, "--fail", "--notify-errors"], cioc_env)
        assert result.returncode == 1
    assert len(list((tmp_path / "mail").glob("*.eml"))) == 1
    env = dict(cioc_env, CIOC_REPORT_REPEAT_HOURS="0")
    run_command([sys.executable, PLAIN, "--fail", "--notify-errors"], env)
    assert len(list((tmp_path / "mail").glob("*.eml"))) == 2
    log = (tmp_path / "logs" / "cioctasks" / "plain_task.log").read_text(encoding="utf-8")
    assert "not mailed again" in log


@pytest.mark.parametrize("script, flags", [
    ("cron/process_logged_errors.py", ["--days", "999999999"]),
    ("cron/nightly_db_maintenance.py", ["--timeout", "-1"]),
    ("cron/geoip_download.py", ["--timeout", "nan"]),
    ("cron/getinvolvedapi.py", ["--retries", "-1"]),
    ("downloads/newdownloads.py", ["-s", "--year", "0"]),
    ("cron/cull_old_exports.py", ["-j", "0"]),
])
def test_a_number_out_of_range_is_one_line_and_exit_2(cioc_env, script, flags):
    result = run_command([sys.executable, ROOT / script, *flags], cioc_env)
    assert result.returncode == 2
    assert_no_traceback(result)
    (line,) = result.stderr.strip().splitlines()
    assert f"argument {flags[-2]}" in line and "is not between" in line


def test_a_log_that_cannot_be_rotated_keeps_every_line_and_prints_no_logging_error(cioc_env, tmp_path):
    """On Windows a viewer holding the log open makes the rotation's rename fail."""
    folder = tmp_path / "logs" / "cioctasks"
    folder.mkdir(parents=True)
    log = folder / "plain_task.log"
    log.write_bytes(b"old line\n" * 250_000)  # over the 2 MB that starts a rotation
    (folder / "plain_task.log.4").write_text("older\n", encoding="utf-8")
    (folder / "plain_task.log.5").mkdir()  # the rotation cannot remove a folder to make room
    result = run_command([sys.executable, PLAIN], cioc_env)
    assert result.returncode == 0, result.stderr
    assert "Logging error" not in result.stderr and "Traceback" not in result.stderr
    assert "end: exit 0" in log.read_text(encoding="utf-8")
    from smtpserver import SMTPServer

    with SMTPServer() as server:  # and without a console the failure still arrives by mail
        env = dict(cioc_env, CIOC_MAIL_BACKEND="smtp", CIOC_MAIL_PORT=str(server.port))
        failed = run_without_streams([sys.executable, PLAIN, "--fail"], env)
        assert failed.returncode == 1
        server.wait_for(1, timeout=20)
        assert "plain_task failed" in server.messages[0]["Subject"]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_console_that_cannot_be_written_does_not_change_the_result(cioc_env, tmp_path):
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, PLAIN], env=cioc_env, stdout=full,
                                stderr=subprocess.PIPE, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "internal error" not in result.stderr
    runs = json.loads(run_command([sys.executable, "-m", "cioctasks", "status", "--json"],
                                  cioc_env).stdout)
    assert [r["status"] for r in runs if r["task"] == "plain_task"] == ["ok"]


def test_a_udl_base_that_is_not_a_folder_is_exit_2_naming_it(cioc_env, tmp_path):
    env = dict(cioc_env, CIOC_UDL_BASE=str(tmp_path / "no-such-folder"))
    result = run_command([sys.executable, SAMPLE], env)
    assert result.returncode == 2
    assert_no_traceback(result)
    assert "CIOC_UDL_BASE:" in result.stderr and "is not a folder" in result.stderr


def test_the_schedules_time_limit_is_looked_up_only_by_a_run_that_lasts():
    """A 15-minute task with nothing to do ends before it would need its time limit: the
    watchdog asks for it (loading the schedule) only after a second, and still enforces it."""
    code = (
        "import time\n"
        "from cioctasks import lock\n"
        "asked = []\n"
        "def limit():\n"
        "    asked.append(1)\n"
        "    return 0.03\n"
        "quick = lock.Watchdog(limit)\n"
        "quick.start(lambda: None)\n"
        "quick.stop()\n"
        "time.sleep(1.5)\n"
        "print('quick run asked', len(asked), flush=True)\n"
        "slow = lock.Watchdog(limit)\n"
        "slow.start(lambda: print('limit reached after', slow.minutes, flush=True))\n"
        "time.sleep(30)\n"
    )
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1
    assert "quick run asked 0" in result.stdout
    assert "limit reached after 0.03" in result.stdout
    assert time.monotonic() - started < 10


def test_the_log_rotates_into_numbered_backups_and_keeps_every_line(tmp_path):
    import logging

    from cioctasks import logs

    handler = logs.RotatingFile(tmp_path / "task.log", max_bytes=300, backups=2)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for number in range(12):
        handler.emit(logging.makeLogRecord({"msg": f"line {number:02d} " + "x" * 60}))
    handler.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["task.log", "task.log.1", "task.log.2"]
    kept = "".join((tmp_path / name).read_text(encoding="utf-8") for name in
                   ("task.log.2", "task.log.1", "task.log"))
    assert "line 11" in kept and all(p.stat().st_size <= 300 for p in tmp_path.iterdir())
    numbers = [int(line.split()[1]) for line in kept.splitlines()]
    assert numbers == sorted(numbers)  # the oldest in .2, the newest in the log itself
