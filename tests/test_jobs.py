"""-j N with processes: each database in a child process of the run, with every guarantee
of -j 1 (one lock, run history, log lines naming their database, secrets masked, the time
limit, a killed child, one failure report)."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import assert_no_traceback, run_command
from test_db import make_site

TASK = '''"""A test task run with -j in processes: each database may sleep, fail, crash or be killed."""

import os
import signal
import sys
import time

import cioctasks


def work(context, name):
    args = context.args
    with open(os.path.join(args.pids, name), "w", encoding="utf-8") as handle:
        handle.write(str(os.getpid()))
    print(f"printed by {name}")
    context.log.info("working on %s with Password=hunter2secret", name)
    if name in args.fail_on:
        raise cioctasks.TaskError(f"asked to fail on {name}: Password=hunter2secret")
    if name in args.crash_on:
        raise RuntimeError(f"crash on {name}")
    if name in args.kill_on:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(args.sleep)
    return f"{name} done, {context.prepared}"


def prepare(context):
    return "prepared"


def add_arguments(parser):
    parser.add_argument("--pids")
    parser.add_argument("--fail-on", action="append", default=[])
    parser.add_argument("--crash-on", action="append", default=[])
    parser.add_argument("--kill-on", action="append", default=[])
    parser.add_argument("--sleep", type=float, default=0)


if __name__ == "__main__":
    sys.exit(cioctasks.run(work, add_arguments, per_database=True, prepare=prepare,
                           parallel="processes"))
'''

SITES = ["one", "two", "three", "four"]
posix_only = pytest.mark.skipif(os.name == "nt", reason="signals as on POSIX")


@pytest.fixture
def task(cioc_env, tmp_path):
    """The task script and its four databases; returns a function that runs it."""
    script = tmp_path / "jobs_task.py"
    script.write_text(TASK, encoding="utf-8")
    for name in SITES:
        make_site(tmp_path / "UDLs", name, tmp_path / f"{name}.sqlite")
    pids = tmp_path / "pids"
    pids.mkdir()

    def run(*flags, env=None, **options):
        return run_command([sys.executable, script, "--pids", pids, *flags],
                           env or cioc_env, **options)

    run.script, run.pids, run.env = script, pids, cioc_env
    return run


def history(env):
    result = run_command([sys.executable, "-m", "cioctasks", "status", "--json"], env)
    return {(r["database"], r["status"]) for r in json.loads(result.stdout)
            if r["task"] == "jobs_task"}


def blurred(text):
    """The lines of an output, sorted, with the seconds blurred."""
    return sorted(re.sub(r"\(\d+\.\ds\)", "(s)", text).splitlines())


def log_of(tmp_path):
    return (tmp_path / "logs" / "cioctasks" / "jobs_task.log").read_text(encoding="utf-8")


def child_pids(task):
    return {p.name: int(p.read_text(encoding="utf-8")) for p in task.pids.iterdir()}


def test_processes_give_the_results_of_j1_each_database_in_its_own_process(task, tmp_path):
    one = task("-j", "1", "--fail-on", "three")
    first = child_pids(task)
    two = task("-j", "2", "--fail-on", "three")
    second = child_pids(task)
    assert one.returncode == two.returncode == 1, one.stderr + two.stderr
    assert blurred(one.stdout) == blurred(two.stdout), two.stderr
    assert "one: ok" in two.stdout and "one done, prepared" in two.stdout
    assert "printed by four" in two.stdout
    assert two.stderr.count("asked to fail on three") == 1
    assert "failed: three" in two.stderr
    assert_no_traceback(two)
    assert len(set(first.values())) == 1  # -j 1: one process
    assert len(set(second.values()) - set(first.values())) == 4, second  # a process each
    assert history(task.env) == {("one", "ok"), ("two", "ok"), ("three", "failed"),
                                 ("four", "ok")}
    log = log_of(tmp_path)
    assert "jobs_task[two] working on two with Password=***" in log.replace("INFO    ", "")
    assert "jobs_task[three] asked to fail on three" in log.replace("ERROR   ", "")
    assert "hunter2secret" not in log + two.stdout + two.stderr


def start_two_children(task, seconds):
    """Start a run with -j 2 whose databases sleep; return it once two have started."""
    run = subprocess.Popen([sys.executable, task.script, "--pids", task.pids, "-j", "2",
                            "--sleep", str(seconds)], env=task.env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while len(list(task.pids.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    return run


def test_the_lock_is_held_once_by_the_parent_and_a_second_run_is_skipped(task, tmp_path):
    first = start_two_children(task, 3)
    second = task("-j", "2")
    out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert second.returncode == 75
    assert f"pid {first.pid}" in second.stderr  # the parent holds it, not a child
    assert out.count(": ok") == 4


def test_a_child_whose_parent_does_not_hold_the_lock_refuses_to_run(task, tmp_path):
    env = dict(task.env, CIOCTASKS_CHILD_OF=json.dumps(
        {"pid": os.getpid(), "lock": "jobs_task", "database": "one"}))
    # Its parent's end closes its standard input: here the test is the parent, alive.
    child = subprocess.Popen([sys.executable, task.script, "--pids", task.pids], env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    out = child.stdout.read()
    assert child.wait(timeout=60) == 1
    child.stdin.close()
    outcome = json.loads(out.splitlines()[-1])["outcome"]
    assert outcome["status"] == "failed" and "not run" in outcome["summary"]
    assert list(task.pids.iterdir()) == []
    assert history(task.env) == set()


def test_a_crash_in_a_child_is_exit_70_and_the_others_still_run(task, tmp_path):
    result = task("-j", "2", "--crash-on", "two")
    assert result.returncode == 70
    assert result.stdout.count(": ok") == 3
    assert "two: error" in result.stdout and "RuntimeError: crash on two" in result.stdout
    assert "Traceback" in log_of(tmp_path)


@posix_only
def test_a_child_killed_is_a_failed_database_not_a_hang(task, tmp_path):
    started = time.monotonic()
    result = task("-j", "2", "--kill-on", "two", timeout=60)
    assert time.monotonic() - started < 30
    assert result.returncode == 1
    assert "two: failed" in result.stdout
    assert "ended without a result (killed by signal 9)" in result.stdout
    assert result.stdout.count(": ok") == 3
    assert history(task.env) == {("one", "ok"), ("two", "failed"), ("three", "ok"),
                                 ("four", "ok")}


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat", encoding="utf-8") as stat:
        return stat.read().split(") ")[1][0] != "Z"  # a zombie has ended


@posix_only
def test_the_time_limit_kills_the_children_too_and_mails_once(task, tmp_path):
    started = time.monotonic()
    result = task("-j", "2", "--sleep", "120", "--max-minutes", "0.05", "--notify-errors",
                  timeout=90)
    assert time.monotonic() - started < 40
    assert result.returncode == 1
    assert "time limit" in result.stderr
    pids = child_pids(task)
    assert len(pids) == 2
    time.sleep(0.5)
    assert not any(alive(pid) for pid in pids.values())
    assert history(task.env) == {(name, "killed") for name in pids}
    mails = list((tmp_path / "mail").glob("*.eml"))
    assert len(mails) == 1


@posix_only
def test_ctrl_c_ends_the_children_with_the_run(task, tmp_path):
    run = start_two_children(task, 120)
    time.sleep(0.3)
    run.send_signal(signal.SIGINT)
    run.communicate(timeout=30)
    assert run.returncode != 0
    time.sleep(0.5)
    assert not any(alive(pid) for pid in child_pids(task).values())
    assert {status for _, status in history(task.env)} == {"killed"}


def test_without_a_console_a_failing_database_is_mailed_once_for_the_whole_run(task, tmp_path):
    from test_runner import run_without_streams

    result = run_without_streams([sys.executable, task.script, "--pids", task.pids, "-j", "2",
                                  "--fail-on", "one", "--fail-on", "four"], task.env)
    assert result.returncode == 1
    (mail,) = (tmp_path / "mail").glob("*.eml")
    text = mail.read_text(encoding="utf-8")
    assert "asked to fail on one" in text and "asked to fail on four" in text
    assert "hunter2secret" not in text
    assert "printed by two" in log_of(tmp_path)
