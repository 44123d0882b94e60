"""Killed runs and unusable mail: no message is built twice, none vanishes, none hides.

Each mailing script is killed (SIGKILL, or os._exit) right after the server accepted one of
its messages and before the script could record it, or (volnotify) after storing a batch
and before recording it, then run again. What must hold: every
piece of work went out under one Message-ID; a message the server may have taken is sent
again as it was stored (same bytes, same Message-ID), never rebuilt under a new one.
"""

import collections
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, assert_no_traceback, mails, run_command
from smtpserver import SMTPServer, free_port

VOLNOTIFY = ROOT / "volnotify" / "volnotify.py"
CIC_CHANGES = ROOT / "cron" / "cic_changes_for_vol.py"
ERRORS = ROOT / "cron" / "process_logged_errors.py"


def smtp_env(world, server_or_port):
    port = server_or_port if isinstance(server_or_port, int) else server_or_port.port
    return dict(world.env, CIOC_MAIL_BACKEND="smtp", CIOC_MAIL_PORT=str(port))


def killed_at(server, count, command, env):
    """Run ``command``; kill it (-9) as the server accepts its ``count``-th message, before
    the 250 reaches it. Return the killed process."""
    process = subprocess.Popen([str(a) for a in command], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)

    def kill(message):
        if len(server.messages) == count:
            process.kill()
            process.wait()

    server.on_message = kill
    try:
        process.communicate(timeout=120)
    finally:
        server.on_message = None
    assert process.returncode != 0, "the run ended before it was killed"
    return process


def received(server):
    """{Message-ID: [raw bytes, ...]} and {recipient: {Message-ID, ...}} of what arrived."""
    by_id, ids_of = collections.defaultdict(list), collections.defaultdict(set)
    for message, raw, (_, recipients) in zip(server.messages, server.raw, server.envelopes):
        by_id[message["Message-ID"]].append(raw)
        for recipient in recipients:
            ids_of[recipient].add(message["Message-ID"])
    return by_id, ids_of


def assert_one_message_per_work(server, killed):
    """Each recipient got one Message-ID; the killed message came twice, byte for byte."""
    by_id, ids_of = received(server)
    assert all(len(ids) == 1 for ids in ids_of.values()), {
        r: ids for r, ids in ids_of.items() if len(ids) > 1}
    again = [raw for raw in by_id.values() if len(raw) > 1]
    assert len(again) == 1 and again[0][0] == again[0][1]
    assert server.messages[killed - 1]["Message-ID"] in {
        m["Message-ID"] for m in server.messages[killed:]}


def spooled(world):
    return sorted((world.directory / "state" / "outbox").glob("*.eml"))


def journal(world):
    """The journals that hold a message in flight."""
    return [p for p in sorted((world.directory / "state" / "outbox" / "sending").glob("*.journal"))
            if p.stat().st_size]


# -- killed between the server's acceptance and the script's record -----------------------

def test_volnotify_killed_after_the_server_accepted_a_message_sends_that_one_again_not_a_rebuilt_one(world):
    with SMTPServer() as server:
        env = smtp_env(world, server)
        command = [sys.executable, VOLNOTIFY, "-a", "ciocdemo", "--member", "1"]
        killed_at(server, 3, command, env)
        in_flight = journal(world)
        rerun = run_command(command, env)
        assert rerun.returncode == 0, rerun.stderr
        assert_no_traceback(rerun)
        again = run_command(command, env)
    assert len(server.messages) > 4
    assert_one_message_per_work(server, killed=3)
    assert len(in_flight) == 1  # the message the server had, kept until it was sent again
    assert journal(world) == [] and spooled(world) == []
    assert "mailed 0 volunteers" in again.stdout


KILL_AFTER_WRITING = """
import os, runpy, sys
mail_dir, count, script = os.path.abspath(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
real_replace, written = os.replace, []
def replace(source, target, **kwargs):
    real_replace(source, target, **kwargs)
    if os.path.dirname(os.path.abspath(target)) == mail_dir and str(target).endswith(".eml"):
        written.append(target)
        if len(written) == count:
            os._exit(137)  # killed: the message is in the mail folder, not yet recorded
os.replace = replace
sys.argv = [script, *sys.argv[4:]]
runpy.run_path(script, run_name="__main__")
"""


def test_volnotify_with_the_file_backend_killed_after_writing_a_message_writes_each_once(world):
    command = [VOLNOTIFY, "-a", "ciocdemo", "--member", "1"]
    killed = run_command([sys.executable, "-c", KILL_AFTER_WRITING, world.directory / "mail",
                          3, *command], world.env)
    assert killed.returncode == 137
    assert len(mails(world)) == 3
    rerun = run_command([sys.executable, *command], world.env)
    assert rerun.returncode == 0, rerun.stderr
    written = mails(world)
    recipients = collections.Counter(m["To"] for m in written)
    assert len(written) > 3 and max(recipients.values()) == 1, recipients
    assert journal(world) == [] and spooled(world) == []


KILL_BEFORE_RECORDING = """
import os, runpy, sys
from cioctasks import state
script = sys.argv[1]
def set_many(self, task, values, delete=()):
    if values:
        os._exit(137)  # killed: the batch is in its journal, its records are not written
state.State.set_many = set_many
sys.argv = [script, *sys.argv[2:]]
runpy.run_path(script, run_name="__main__")
"""


@pytest.mark.parametrize("backend", ["file", "smtp"])
def test_volnotify_killed_after_storing_a_batch_before_recording_it_sends_each_once(world,
                                                                                   backend):
    command = [VOLNOTIFY, "-a", "ciocdemo", "--member", "1"]
    with SMTPServer() as server:
        env = world.env if backend == "file" else smtp_env(world, server)
        planned = run_command([sys.executable, *command, "--dry-run"], env)
        (count,) = [int(w) for w in planned.stdout.split("would mail ")[1].split()[:1]]
        killed = run_command([sys.executable, "-c", KILL_BEFORE_RECORDING, *command], env)
        assert killed.returncode == 137
        assert len(journal(world)) == 1 and len(mails(world)) == 0
        assert server.messages == []
        rerun = run_command([sys.executable, *command], env)
        assert rerun.returncode == 0, rerun.stderr
        assert_no_traceback(rerun)
        if backend == "smtp":
            server.wait_for(count)
        recipients = ([m["To"] for m in mails(world)] if backend == "file"
                      else [r for _, rs in server.envelopes for r in rs])
    assert len(recipients) == len(set(recipients)) == count > 0
    assert journal(world) == [] and spooled(world) == []


def test_cic_changes_for_vol_killed_after_the_server_accepted_a_message_sends_that_one_again(world):
    with SMTPServer() as server:
        env = smtp_env(world, server)
        command = [sys.executable, CIC_CHANGES, "-a", "ciocdemo"]
        killed_at(server, 2, command, env)
        time.sleep(1.1)  # a later second: the rerun resumes the stored window
        rerun = run_command(command, env)
        assert rerun.returncode == 0, rerun.stderr
    assert len(server.messages) > 2
    assert_one_message_per_work(server, killed=2)
    assert journal(world) == [] and spooled(world) == []


def test_process_logged_errors_killed_after_the_server_accepted_the_digest_sends_it_again_as_it_was(world):
    with SMTPServer() as server:
        env = smtp_env(world, server)
        command = [sys.executable, ERRORS, "-a", "ciocdemo"]
        killed_at(server, 1, command, env)
        rerun = run_command(command, env)
        assert rerun.returncode == 0, rerun.stderr
        assert "no mail" in rerun.stdout  # its positions moved with the stored digest
        again = run_command(command, env)
    assert "no mail" in again.stdout
    assert len(server.messages) == 2
    assert_one_message_per_work(server, killed=1)


# -- a mail server that cannot be used: queued is not delivered ------------------------------

def test_volnotify_with_the_server_down_all_run_says_queued_and_fails_then_the_outbox_delivers(world):
    port = free_port()
    command = [sys.executable, VOLNOTIFY, "-a", "ciocdemo"]
    result = run_command(command, smtp_env(world, port))
    assert result.returncode == 1
    assert_no_traceback(result)
    queued = spooled(world)
    assert queued
    assert "mailed 0 volunteers" in result.stdout
    assert (f"queued {len(queued)} messages for the next run (mail server 127.0.0.1:{port}: "
            "connection refused)") in result.stdout
    with SMTPServer(port=port) as server:
        later = run_command(command, smtp_env(world, server))
        assert later.returncode == 0, later.stderr
        server.wait_for(len(queued))
    assert "mailed 0 volunteers" in later.stdout  # each was recorded when it was queued
    assert len(server.messages) == len({m["Message-ID"] for m in server.messages}) == len(queued)


def test_volnotify_with_the_server_going_down_mid_run_counts_what_was_sent(world):
    with SMTPServer() as server:
        server.down_after = 4
        result = run_command([sys.executable, VOLNOTIFY, "-a", "ciocdemo", "--member", "1"],
                             smtp_env(world, server))
    assert result.returncode == 1
    assert len(server.messages) == 4
    assert "1 members, mailed 4 volunteers; queued " in result.stdout
    assert f"(mail server 127.0.0.1:{server.port}: 421 4.3.2 shutting down)" in result.stdout
    assert len(spooled(world)) > 0


def test_volnotify_counts_what_was_sent_when_a_member_fails_after_its_messages(world, capsys,
                                                                              monkeypatch):
    import cioctasks
    from cioctasks import db

    sys.path.insert(0, str(ROOT / "volnotify"))
    import volnotify

    real_call = db.Database.call

    def call(self, name, *args):
        if name == "sp_VOL_Profile_Notify_Done":
            raise db.DatabaseError("sp_VOL_Profile_Notify_Done: EXECUTE permission denied")
        return real_call(self, name, *args)

    monkeypatch.setattr(db.Database, "call", call)
    code = cioctasks.run(volnotify.task, volnotify.add_arguments, per_database=True,
                         name="volnotify", argv=["-a", "ciocdemo", "--member", "1"])
    assert code == 1
    sent = len(mails(world))
    assert sent > 0
    assert f"0 members, mailed {sent} volunteers; " in capsys.readouterr().out


# -- a full disk: one line naming the folder, exit 1, the other databases go on -----------

FULL_DISK = """
import errno, os, runpy, sys
full, script = os.path.abspath(sys.argv[1]), sys.argv[2]
state = {"left": 1}
def full_disk(real):
    def sync(fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        if path.startswith(full + os.sep) and os.path.isfile(path) and state["left"]:
            state["left"] -= 1  # the disk is full for the first message, then has room
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)
    return sync
os.fsync, os.fdatasync = full_disk(os.fsync), full_disk(os.fdatasync)
sys.argv = [script, *sys.argv[3:]]
runpy.run_path(script, run_name="__main__")
"""


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
@pytest.mark.parametrize("backend", ["file", "smtp"])
def test_a_full_disk_names_the_folder_fails_that_database_and_the_others_go_on(world, backend):
    with SMTPServer() as server:
        env = world.env if backend == "file" else smtp_env(world, server)
        result = run_command([sys.executable, "-c", FULL_DISK, world.directory,
                              VOLNOTIFY, "-a", "ciocdemo", "-a", "ciocnord"], env)
        sent = len(mails(world)) if backend == "file" else len(server.messages)
    assert result.returncode == 1
    assert_no_traceback(result)
    outbox = world.directory / "state" / "outbox"
    lines = result.stdout.splitlines()
    failed = [line for line in lines if line.startswith("ciocdemo: failed")]
    assert len(failed) == 1
    assert f"cannot write mail into {outbox}: No space left on device" in failed[0]
    assert "mailed 0 volunteers" in failed[0]
    assert any(line.startswith("ciocnord: ok") for line in lines)
    assert sent > 0  # ciocnord's went out
    assert journal(world) == [] and spooled(world) == []
