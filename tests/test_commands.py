"""The built-in commands run as a user would: python -m cioctasks check | status."""

import contextlib
import socket
import sqlite3
import sys
import threading
from pathlib import Path

from conftest import assert_no_traceback, clean_environ, run_command
from smtpserver import SMTPServer
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


def check_rows(stdout):
    """The rows of the check table that are not databases: {what: (backend, result, detail)}."""
    rows = {}
    for line in stdout.splitlines()[2:]:
        if not line.startswith(" "):
            what, backend, result, *detail = line.split(maxsplit=3)
            rows[what] = (backend, result, " ".join(detail))
    return rows


def test_check_fails_when_no_one_would_be_told_of_a_failure(cioc_env):
    env = dict(cioc_env)
    del env["CIOC_TASK_NOTIFY_EMAIL"]
    result = run_command([sys.executable, "-m", "cioctasks", "check"], env)
    assert result.returncode == 1
    assert_no_traceback(result)
    backend, outcome, detail = check_rows(result.stdout)["notify"]
    assert outcome == "FAILED" and "CIOC_TASK_NOTIFY_EMAIL is not set" in detail
    assert "check: notify: CIOC_TASK_NOTIFY_EMAIL is not set" in result.stderr


def test_check_says_the_file_backend_writes_failures_into_a_folder_not_mailed(world):
    result = run_command([sys.executable, "-m", "cioctasks", "check"], world.env)
    assert result.returncode == 0, result.stderr
    rows = check_rows(result.stdout)
    mail_dir = world.environ()["CIOC_MAIL_DIR"]
    assert rows["notify"] == ("file", "ok", f"failures to tasks@example.org are written into "
                                            f"{mail_dir}, not mailed: someone must read that folder")


def test_check_fails_when_the_file_backend_cannot_write_its_folder(cioc_env, tmp_path):
    (tmp_path / "blocker").write_text("", encoding="utf-8")
    env = dict(cioc_env, CIOC_MAIL_DIR=str(tmp_path / "blocker" / "mail"))
    result = run_command([sys.executable, "-m", "cioctasks", "check"], env)
    assert result.returncode == 1
    _, outcome, detail = check_rows(result.stdout)["notify"]
    assert outcome == "FAILED" and f"{tmp_path / 'blocker'} is a file, not a folder" in detail
    assert not (tmp_path / "blocker" / "mail").exists()


def test_check_fails_when_the_mail_server_refuses_the_notify_address(cioc_env):
    with SMTPServer() as server:
        server.refuse.add("tasks@example.org")
        env = dict(cioc_env, **server.environ())
        result = run_command([sys.executable, "-m", "cioctasks", "check"], env)
        refused = run_command([sys.executable, "-m", "cioctasks", "check"],
                              dict(env, CIOC_TASK_NOTIFY_EMAIL="ops@example.org"))
    assert result.returncode == 1
    assert_no_traceback(result)
    rows = check_rows(result.stdout)
    assert rows["mail"][1] == "ok"
    assert rows["notify"][1] == "FAILED"
    assert rows["notify"][2] == (f"failures to tasks@example.org cannot be mailed: mail server "
                                 f"127.0.0.1:{server.port} answers 550 5.1.1 no such mailbox")
    assert "check: notify: failures to tasks@example.org cannot be mailed" in result.stderr
    assert refused.returncode == 0, refused.stderr
    assert check_rows(refused.stdout)["notify"] == (
        "smtp", "ok", "failures are mailed to ops@example.org (the server takes it, from and to)")
    assert server.messages == []  # asking sends nothing


def test_check_counts_the_outbox_and_fails_on_mail_refused_for_good(cioc_env, tmp_path):
    from cioctasks import outbox

    box = outbox.Outbox(tmp_path / "outbox")
    for number in range(2):
        box.spool(f"Message-ID: <{number}@example.org>\r\n\r\nwaits\r\n".encode(),
                  "tasks@example.org", ["tasks@example.org"])
    result = run_command([sys.executable, "-m", "cioctasks", "check"], cioc_env)
    assert result.returncode == 0, result.stderr
    _, outcome, detail = check_rows(result.stdout)["outbox"]
    assert outcome == "ok" and detail.startswith(f"2 waiting in {box.folder} (oldest ")
    assert detail.endswith(", none failed")

    box.fail(b"Message-ID: <2@example.org>\r\n\r\nrefused\r\n", "tasks@example.org",
             ["nobody@example.org"])
    result = run_command([sys.executable, "-m", "cioctasks", "check"], cioc_env)
    assert result.returncode == 1
    _, outcome, detail = check_rows(result.stdout)["outbox"]
    assert outcome == "FAILED"
    assert detail.startswith(f"1 refused for good by the mail server, kept in {box.failed_folder}")
    assert "2 waiting" in detail
    assert f"check: outbox: 1 refused for good by the mail server, kept in {box.failed_folder}" \
        in result.stderr


@contextlib.contextmanager
def tcp_server(close_at_once):
    """A TCP server on 127.0.0.1 that closes each connection at once, or holds it open and
    never says a word; yield its port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.settimeout(0.1)
    held, stop = [], threading.Event()

    def serve():
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                continue
            if close_at_once:
                connection.close()
            else:
                held.append(connection)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        listener.close()
        for connection in held:
            connection.close()


def test_check_says_a_mail_server_that_never_answers_timed_out(cioc_env):
    with tcp_server(close_at_once=False) as port:
        env = dict(cioc_env, CIOC_MAIL_BACKEND="smtp", CIOC_MAIL_HOST="127.0.0.1",
                   CIOC_MAIL_PORT=str(port), CIOC_MAIL_TIMEOUT="0.5")
        result = run_command([sys.executable, "-m", "cioctasks", "check"], env)
    assert result.returncode == 1
    assert_no_traceback(result)
    rows = check_rows(result.stdout)
    assert rows["mail"][1:] == (
        "FAILED", f"mail server 127.0.0.1:{port}: no answer within CIOC_MAIL_TIMEOUT (timed out)")
    assert rows["notify"][1] == "FAILED"
    assert "closed the connection" not in result.stdout + result.stderr


def test_check_says_a_mail_server_that_hangs_up_closed_the_connection(cioc_env):
    with tcp_server(close_at_once=True) as port:
        env = dict(cioc_env, CIOC_MAIL_BACKEND="smtp", CIOC_MAIL_HOST="127.0.0.1",
                   CIOC_MAIL_PORT=str(port))
        result = run_command([sys.executable, "-m", "cioctasks", "check"], env)
    assert result.returncode == 1
    assert check_rows(result.stdout)["mail"][1:] == (
        "FAILED", f"mail server 127.0.0.1:{port}: closed the connection")


def test_check_names_a_failing_database_once_per_line(world, tmp_path):
    add_broken_site(world)
    add_site(world, "ciocgone", tmp_path / "gone.sqlite")
    with sqlite3.connect(tmp_path / "other.sqlite") as connection:
        connection.execute("CREATE TABLE Customers (ID int)")
    add_site(world, "ciocother", tmp_path / "other.sqlite")
    result = run_command([sys.executable, "-m", "cioctasks", "check"], world.env)
    assert result.returncode == 1
    for name in ("ciocbroken", "ciocgone", "ciocother"):
        lines = [line for line in result.stderr.splitlines() if f"{name}:" in line]
        assert len(lines) == 1 and lines[0].startswith(f"check: {name}: "), result.stderr
        assert lines[0].count(f"{name}:") == 1, lines[0]
        row = next(line for line in result.stdout.splitlines() if line.startswith(name))
        assert f"{name}:" not in row
