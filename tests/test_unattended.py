"""Unattended runs: nothing hangs, no failure vanishes, nothing of the operator's is touched.

A SQL Server that accepts and never answers (a real socket, the real FreeTDS driver), a run
over its time limit, a run killed from outside, a setting that does not load without a
console, a full disk under the lock, a site whose UDL is missing, mail the server refused.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import ROOT, SCRIPTS, assert_no_traceback, run_command

PLAIN = SCRIPTS / "plain_task.py"
SAMPLE = SCRIPTS / "sample_task.py"
NIGHTLY = ROOT / "cron" / "nightly_db_maintenance.py"
DEADLINE = 1  # CIOC_DB_CONNECT_TIMEOUT in these tests; the runner's deadline adds 2 s


class SilentServer:
    """A TCP server on 127.0.0.1 that accepts every connection and never sends a byte: a
    SQL Server that hangs before the login."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.accepted = []
        self._closing = False

    def _accept(self):
        while not self._closing:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.accepted.append(connection)  # kept open, never answered

    def __enter__(self):
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._closing = True
        for connection in [self.listener, *self.accepted]:
            connection.close()


def silent_site(udl_base, name, port):
    """A site whose UDL names SQL Server at 127.0.0.1:<port>, as CIOC writes them."""
    folder = Path(udl_base) / name
    folder.mkdir(parents=True)
    init = (f"Provider=SQLOLEDB.1;Password=s3cret;Persist Security Info=True;User ID=cioc;"
            f"Initial Catalog={name};Data Source=127.0.0.1,{port}")
    text = f"[oledb]\r\n; Everything after this line is an OLE DB initstring\r\n{init}\r\n"
    (folder / "cron_job_runner.udl").write_bytes(text.encode("utf-16"))


def needs_freetds():
    if os.name == "nt":
        pytest.skip("FreeTDS is the driver that ignores its login timeout; tested on Linux")
    import pyodbc

    assert "FreeTDS" in pyodbc.drivers(), "the FreeTDS ODBC driver is missing: run bin/setup"


def run_without_streams(args, env, timeout=120):
    """Run a command with stdin, stdout and stderr closed, as pythonw.exe leaves them."""
    return subprocess.run(["sh", "-c", 'exec "$@" <&- >&- 2>&-', "sh", *map(str, args)],
                          env=env, timeout=timeout)


def status_rows(env):
    result = run_command([sys.executable, "-m", "cioctasks", "status", "--json"], env)
    return result, json.loads(result.stdout)


def mail_bodies(folder):
    import email
    import email.policy

    messages = [email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
                for path in sorted(Path(folder).glob("*.eml"))]
    return [(m["Subject"], m.get_body(("plain",)).get_content()) for m in messages]


# 1. A server that accepts and never answers: a deadline on every connection, a time limit
#    on every run.

def test_a_server_that_never_answers_fails_its_database_within_the_deadline_and_the_others_run(world):
    needs_freetds()
    with SilentServer() as server:
        silent_site(world.directory / "UDLs", "ciocsilent", server.port)
        env = dict(world.env, CIOC_ODBC_DRIVER="FreeTDS", CIOC_DB_CONNECT_TIMEOUT=str(DEADLINE))
        started = time.monotonic()
        result = run_command([sys.executable, NIGHTLY], env, timeout=60)
        elapsed = time.monotonic() - started
        assert server.accepted, "the driver never reached the silent server"
    assert result.returncode == 1, result.stderr
    assert_no_traceback(result)
    assert elapsed < 20
    assert f"ciocsilent: cannot connect: no answer within {DEADLINE} s" in result.stderr
    assert "failed: ciocsilent" in result.stderr
    for site in world.sites:
        assert f"{site}: ok" in result.stdout
    assert "s3cret" not in result.stdout + result.stderr


def test_check_of_a_server_that_never_answers_ends_within_the_deadline(world):
    needs_freetds()
    with SilentServer() as server:
        silent_site(world.directory / "UDLs", "ciocsilent", server.port)
        env = dict(world.env, CIOC_ODBC_DRIVER="FreeTDS", CIOC_DB_CONNECT_TIMEOUT=str(DEADLINE))
        started = time.monotonic()
        result = run_command([sys.executable, "-m", "cioctasks", "check"], env, timeout=60)
        elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert_no_traceback(result)
    assert elapsed < 20
    (row,) = [line for line in result.stdout.splitlines() if line.startswith("ciocsilent")]
    assert "FAILED" in row and f"no answer within {DEADLINE} s" in row
    assert any(line.startswith("ciocdemo") and " ok " in line for line in result.stdout.splitlines())


def test_the_connect_deadline_does_not_depend_on_the_driver(monkeypatch):
    import pyodbc

    from cioctasks import db

    release, closed = threading.Event(), threading.Event()

    class LateConnection:
        def close(self):
            closed.set()

    def hanging_connect(*args, **options):  # a driver that ignores its login timeout
        release.wait(30)
        return LateConnection()

    monkeypatch.setattr(pyodbc, "connect", hanging_connect)
    monkeypatch.setattr(db, "CONNECT_GRACE", 0.2)
    started = time.monotonic()
    with pytest.raises(db.DatabaseError) as error:
        db.open_connection("Driver={FreeTDS};Server=x;UID=u;PWD=pw", "ciocsilent",
                           login_timeout=1)
    assert time.monotonic() - started < 3
    assert str(error.value) == "ciocsilent: cannot connect: no answer within 1 s"
    release.set()  # the driver answers after all: that connection is closed, not leaked
    assert closed.wait(5)


def test_a_bad_connect_timeout_names_its_variable(tmp_path):
    from cioctasks import config, db
    from cioctasks.errors import ConfigError

    settings = config.from_mapping({"CIOC_TOOLS_PATH": str(tmp_path),
                                    "CIOC_DB_CONNECT_TIMEOUT": "forever"})
    with pytest.raises(ConfigError, match="CIOC_DB_CONNECT_TIMEOUT: not a number of seconds"):
        db.connect_timeout(settings)
    assert db.connect_timeout(config.from_mapping({"CIOC_TOOLS_PATH": str(tmp_path)})) == 30


def test_a_run_over_its_time_limit_is_stopped_recorded_and_exits_1(cioc_env, tmp_path):
    started = time.monotonic()
    result = run_command([sys.executable, PLAIN, "--sleep", "120", "--max-minutes", "0.05"],
                         cioc_env, timeout=60)
    assert time.monotonic() - started < 20
    assert result.returncode == 1
    assert_no_traceback(result)
    assert "time limit: stopped after 0.05 minutes (--max-minutes); still running: plain_task" \
        in result.stderr
    log = (tmp_path / "logs" / "cioctasks" / "plain_task.log").read_text(encoding="utf-8")
    assert "end: exit 1" in log
    status, rows = status_rows(cioc_env)
    (row,) = [r for r in rows if r["task"] == "plain_task"]
    assert row["status"] == "killed" and row["failed"] and "time limit" in row["summary"]
    assert status.returncode == 1
    again = run_command([sys.executable, PLAIN], cioc_env)  # the lock was given up
    assert again.returncode == 0, again.stderr
    assert "found run" not in again.stderr  # it was recorded already: nothing to find


def test_without_a_console_a_run_over_its_time_limit_is_mailed(cioc_env, tmp_path):
    from smtpserver import SMTPServer

    with SMTPServer() as server:
        env = dict(cioc_env, CIOC_MAIL_BACKEND="smtp", CIOC_MAIL_PORT=str(server.port))
        result = run_without_streams([sys.executable, PLAIN, "--sleep", "120",
                                      "--max-minutes", "0.05"], env, timeout=60)
        assert result.returncode == 1
        server.wait_for(1, timeout=20)
        message = server.messages[0]
    assert "plain_task failed" in message["Subject"]
    assert "time limit: stopped after 0.05 minutes" in message.get_body(("plain",)).get_content()


def test_a_run_stuck_on_a_server_that_never_answers_is_stopped_by_its_time_limit(cioc_env, tmp_path):
    needs_freetds()
    with SilentServer() as server:
        silent_site(tmp_path / "UDLs", "ciocsilent", server.port)
        env = dict(cioc_env, CIOC_ODBC_DRIVER="FreeTDS", CIOC_DB_CONNECT_TIMEOUT="600")
        started = time.monotonic()
        result = run_command([sys.executable, SAMPLE, "--max-minutes", "0.05"], env, timeout=60)
        assert time.monotonic() - started < 20
    assert result.returncode == 1
    assert_no_traceback(result)
    assert "still running: ciocsilent" in result.stderr


def test_the_time_limit_defaults_to_just_under_the_schedules(tmp_path):
    import argparse
    import logging

    from cioctasks import taskrun

    log = logging.getLogger("test")
    none = argparse.Namespace(max_minutes=None)
    assert taskrun.max_minutes(none, "nightly_db_maintenance", log) == 179  # 180 scheduled
    assert taskrun.max_minutes(none, "newdownloads_stats", log) == 239  # its records_as
    assert taskrun.max_minutes(none, "not_scheduled", log) == taskrun.DEFAULT_MAX_MINUTES
    given = argparse.Namespace(max_minutes=5.0)
    assert taskrun.max_minutes(given, "nightly_db_maintenance", log) == 5.0


def test_a_time_limit_out_of_range_is_one_line_and_exit_2(cioc_env):
    result = run_command([sys.executable, PLAIN, "--max-minutes", "0"], cioc_env)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "argument --max-minutes" in line and "is not between" in line


# 2. A run killed from outside is killed, a failure, and the next run says so.

def start_and_kill(env, tmp_path, *flags):
    process = subprocess.Popen([sys.executable, str(PLAIN), "--sleep", "60", *flags], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = tmp_path / "logs" / "cioctasks" / "plain_task.log"
    deadline = time.monotonic() + 20
    while not (log.exists() and " start" in log.read_text(encoding="utf-8")):
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.05)
    time.sleep(0.2)  # past start_run
    process.send_signal(signal.SIGKILL)
    process.wait()
    return process.pid


@pytest.mark.skipif(os.name == "nt", reason="SIGKILL")
def test_a_killed_run_is_shown_killed_and_failed_and_the_next_run_says_it_found_it(cioc_env, tmp_path):
    pid = start_and_kill(cioc_env, tmp_path)
    status, rows = status_rows(cioc_env)
    (row,) = [r for r in rows if r["task"] == "plain_task"]
    assert (row["status"], row["failed"]) == ("killed", True)
    assert row["summary"] == f"killed (process {pid} gone)"
    assert status.returncode == 1
    text = run_command([sys.executable, "-m", "cioctasks", "status"], cioc_env)
    assert text.returncode == 1 and "plain_task: last run killed" in text.stderr
    page = tmp_path / "status.html"
    run_command([sys.executable, "-m", "cioctasks", "status", "--html", page], cioc_env)
    assert '<tr class="failed"><td>plain_task</td><td>-</td><td>killed</td>' \
        in page.read_text(encoding="utf-8")

    following = run_command([sys.executable, PLAIN], cioc_env)
    assert following.returncode == 0, following.stderr
    (found,) = [line for line in following.stderr.splitlines() if "found run" in line]
    assert found.startswith("plain_task: found run ")
    assert "of plain_task started " in found and found.endswith(f"killed (process {pid} gone)")
    from cioctasks import state

    runs = state.State(tmp_path / "state")._runs("task = 'plain_task'")
    assert [r["status"] for r in runs] == ["killed", "ok"]
    assert runs[0]["summary"] == f"killed (process {pid} gone)" and runs[0]["ended"] is None


@pytest.mark.skipif(os.name == "nt", reason="SIGKILL")
def test_without_a_console_the_next_run_mails_the_killed_run_it_found(cioc_env, tmp_path):
    pid = start_and_kill(cioc_env, tmp_path)
    result = run_without_streams([sys.executable, PLAIN], cioc_env)
    assert result.returncode == 0
    mails = mail_bodies(tmp_path / "mail")
    assert any("plain_task failed" in subject and f"killed (process {pid} gone)" in body
               for subject, body in mails)
    assert any("plain_task recovered" in subject for subject, _ in mails)


def test_a_run_recorded_before_pids_were_kept_still_reads(tmp_path):
    import sqlite3

    from cioctasks import state

    folder = tmp_path / "state"
    folder.mkdir()
    with sqlite3.connect(folder / "state.sqlite") as old:
        old.executescript("""CREATE TABLE runs (id INTEGER PRIMARY KEY, task TEXT NOT NULL,
            database TEXT NOT NULL DEFAULT '', host TEXT, started TEXT NOT NULL, ended TEXT,
            status TEXT NOT NULL DEFAULT 'running', exit_code INTEGER, summary TEXT);
            INSERT INTO runs (task, host, started) VALUES ('plain_task', 'here', '2026-01-01');""")
    history = state.State(folder)
    assert [r["status"] for r in history.last_runs()] == ["running"]  # cannot tell
    # Holding the task's lock, the next run knows no other run of it is alive.
    assert history.record_killed("plain_task") == [
        "found run 1 of plain_task started 2026-01-01 killed (its process is gone)"]
    run_id = history.start_run("plain_task")
    assert history._runs("id = ?", (run_id,))[0]["pid"] == os.getpid()


# 3. A setting that does not load, without a console: a log line and a mail.

def test_without_a_console_a_bad_setting_is_logged_and_mailed_with_it_at_its_default(cioc_env, tmp_path):
    env = dict(cioc_env, CIOC_MAIL_PORT="abc")
    result = run_without_streams([sys.executable, PLAIN], env)
    assert result.returncode == 2
    log = (tmp_path / "logs" / "cioctasks" / "plain_task.log").read_text(encoding="utf-8")
    assert "CIOC_MAIL_PORT: not a port number: 'abc'" in log
    ((subject, body),) = mail_bodies(tmp_path / "mail")
    assert "plain_task failed" in subject
    assert "CIOC_MAIL_PORT: not a port number: 'abc'" in body
    assert "sent with CIOC_MAIL_PORT at the default" in body


def test_without_a_console_an_env_file_line_that_cannot_be_read_is_mailed(cioc_env, tmp_path):
    env_file = tmp_path / "cioc.env"
    env_file.write_text('CIOC_PING_URL="https://hc-ping.example.org\n', encoding="utf-8")
    result = run_without_streams([sys.executable, PLAIN], dict(cioc_env, CIOC_ENV_FILE=str(env_file)))
    assert result.returncode == 2
    ((subject, body),) = mail_bodies(tmp_path / "mail")
    assert "plain_task failed" in subject and f"{env_file}, line 1" in body


def test_under_cron_a_bad_setting_is_mailed_too(cioc_env, tmp_path):
    """cron runs with --notify-errors and throws stdout and stderr away."""
    env = dict(cioc_env, CIOC_REPORT_REPEAT_HOURS="soon")
    result = run_command([sys.executable, PLAIN, "--notify-errors"], env)
    assert result.returncode == 2
    assert "CIOC_REPORT_REPEAT_HOURS" in result.stderr
    ((subject, body),) = mail_bodies(tmp_path / "mail")
    assert "CIOC_REPORT_REPEAT_HOURS: not a number of hours" in body


def test_a_failure_before_any_log_goes_to_the_fallback_log_and_is_mailed(cioc_env, tmp_path):
    (tmp_path / "not-a-folder").write_text("x", encoding="utf-8")
    env = dict(cioc_env, CIOC_LOG_ROOT=str(tmp_path / "not-a-folder"),
               XDG_STATE_HOME=str(tmp_path / "xdg-state"))
    result = run_without_streams([sys.executable, PLAIN], env)
    assert result.returncode == 2
    fallback = tmp_path / "xdg-state" / "cioctasks" / "early-failures.log"
    (line,) = fallback.read_text(encoding="utf-8").splitlines()
    assert " plain_task on " in line and "CIOC_LOG_ROOT: cannot write the log" in line
    ((subject, body),) = mail_bodies(tmp_path / "mail")
    assert "CIOC_LOG_ROOT: cannot write the log" in body and str(fallback) in body


def test_the_fallback_log_falls_back_to_the_temporary_folder(cioc_env, tmp_path):
    (tmp_path / "not-a-folder").write_text("x", encoding="utf-8")
    (tmp_path / "temp").mkdir()
    env = dict(cioc_env, CIOC_LOG_ROOT=str(tmp_path / "not-a-folder"), CIOC_MAIL_PORT="abc",
               XDG_STATE_HOME=str(tmp_path / "not-a-folder"), TMPDIR=str(tmp_path / "temp"),
               USER="operator")
    result = run_without_streams([sys.executable, PLAIN], env)
    assert result.returncode == 2
    fallback = tmp_path / "temp" / "cioctasks-operator-early-failures.log"
    assert "CIOC_MAIL_PORT: not a port number" in fallback.read_text(encoding="utf-8")


# 4. A site whose UDL is missing or is a folder fails by name.

def test_a_site_without_its_udl_fails_by_name_and_the_others_run(cioc_env, tmp_path):
    from test_runner import member_sites

    member_sites(tmp_path, ["one", "two"])
    (tmp_path / "UDLs" / "three").mkdir()
    (tmp_path / "UDLs" / "four" / "cron_job_runner.udl").mkdir(parents=True)
    result = run_command([sys.executable, SAMPLE], cioc_env)
    assert result.returncode == 1
    assert_no_traceback(result)
    assert "one: ok" in result.stdout and "two: ok" in result.stdout
    assert f"no cron_job_runner.udl in {tmp_path / 'UDLs' / 'three'}" in result.stderr
    assert "cron_job_runner.udl is a folder, not a UDL file" in result.stderr
    assert "failed: four, three" in result.stderr
    named = run_command([sys.executable, SAMPLE, "-a", "three"], cioc_env)
    assert named.returncode == 1 and "unknown database" not in named.stderr
    assert "failed: three" in named.stderr


# 6. Mail the server refused for good is a failure in status.

def refused_mail(outbox, count=2):
    failed = outbox / "failed"
    failed.mkdir(parents=True)
    for number in range(count):
        (failed / f"{number:024x}.eml").write_bytes(b"Subject: refused\r\n\r\nbody\r\n")
    return failed


def test_status_counts_the_refused_mail_and_says_where_it_is(tmp_path):
    import datetime

    from cioctasks import status

    failed = refused_mail(tmp_path / "outbox")
    now = datetime.datetime.now()
    rows = status.rows([], [], now, outbox=tmp_path / "outbox")
    (row,) = rows
    assert (row["task"], row["database"], row["status"], row["failed"]) == (
        "mail", "outbox", "2 refused", True)
    assert row["summary"] == f"2 messages the mail server refused, kept in {failed}"
    assert f"mail outbox: 2 messages the mail server refused, kept in {failed}" \
        in status.table(rows)
    assert '<tr class="failed"><td>mail</td><td>outbox</td><td>2 refused</td>' \
        in status.page(rows, now)
    assert status.rows([], [], now, outbox=tmp_path / "empty") == []


def test_status_command_fails_on_refused_mail(cioc_env, tmp_path):
    """Needs ``outbox=context.settings.mail_outbox`` passed to ``status.rows`` by
    ``__main__.run_status``."""
    failed = refused_mail(tmp_path / "outbox", count=1)
    result, rows = status_rows(cioc_env)
    assert result.returncode == 1
    assert rows[-1]["task"] == "mail" and rows[-1]["status"] == "1 refused"
    text = run_command([sys.executable, "-m", "cioctasks", "status"], cioc_env)
    assert text.returncode == 1
    assert f"mail outbox: 1 message the mail server refused, kept in {failed}" in text.stdout


# 12. Messages that say what to do.

def test_a_state_folder_that_is_a_file_is_named_as_such(cioc_env, tmp_path):
    from cioctasks import state
    from cioctasks.errors import ConfigError

    (tmp_path / "state-file").write_text("x", encoding="utf-8")
    env = dict(cioc_env, CIOC_STATE_DIR=str(tmp_path / "state-file"))
    result = run_command([sys.executable, PLAIN], env)
    assert result.returncode == 2
    assert f"{tmp_path / 'state-file'} is a file, not a folder" in result.stderr
    assert "Errno" not in result.stderr
    status = run_command([sys.executable, "-m", "cioctasks", "status"], env)
    assert status.returncode == 2
    assert f"{tmp_path / 'state-file'} is a file, not a folder" in status.stderr
    with pytest.raises(ConfigError, match="state-file is a file, not a folder$"):
        state.State(tmp_path / "state-file" / "deeper")


# 16. A full disk under the lock: exit 1, one line naming the file.

FULL_DISK = """
import builtins, errno, runpy, sys
import cioctasks.lock

class FullDisk:
    def __init__(self, handle):
        self.handle = handle
    def write(self, text):
        raise OSError(errno.ENOSPC, "No space left on device")
    def flush(self):
        raise OSError(errno.ENOSPC, "No space left on device")
    def __getattr__(self, name):
        return getattr(self.handle, name)

cioctasks.lock.open = lambda *args, **options: FullDisk(builtins.open(*args, **options))
sys.argv = [sys.argv[1], *sys.argv[2:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_a_full_disk_under_the_lock_is_exit_1_naming_the_lock_file(cioc_env, tmp_path):
    driver = tmp_path / "full_disk.py"
    driver.write_text(FULL_DISK, encoding="utf-8")
    result = run_command([sys.executable, driver, PLAIN], cioc_env)
    assert result.returncode == 1
    assert_no_traceback(result)
    lock = tmp_path / "state" / "locks" / "plain_task.lock"
    assert result.stderr.strip() == (
        f"plain_task: cannot write the lock file {lock}: No space left on device")
    again = run_command([sys.executable, PLAIN], cioc_env)  # the lock was let go
    assert again.returncode == 0, again.stderr
