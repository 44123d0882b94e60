"""process_logged_errors as the scheduler runs it, against ``grep -c -F`` of the same marker.

The input is realistic error logs (``logdata``: pyramid_exclog entries with deep
tracebacks, CRLF, floods and varied errors, digits everywhere) at two scales, half in
yesterday's rotated file and half in today's, as a backlog after a first run: before every
timed run the task's state is put back to what that first run left, so each run reads the
same new bytes (from a non-zero offset) and mails the same digest (file backend).

1. The scan: ``python cron/process_logged_errors.py -a SITE`` against ``grep -c -F
   '<year>-'`` on the same two files (the fixed text that starts every entry; the task
   looks for it after a newline). Both are whole processes; grep runs in the C locale,
   its fastest. Target: ratio >= 1 (the task at least as fast as grep).
2. Nothing new: the same command on logs it has read, against ``python -c pass``.
   Target: within 3x.

Before timing, the digest's count is checked against grep's. A backlog larger than
``SPLIT`` is read by two processes; the peak memory shown is the task's main process (its
child reads the other half of the same mapping and holds about as much).

    python benchmarks/process_logged_errors.py [--scales 50,500] [--repeat N]
"""

import argparse
import datetime
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import harness
import logdata

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "cron" / "process_logged_errors.py"
SITE = "ciocdemo"
IDLE_TARGET = 3.0


def environment(world):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CIOC_") and k != "PYTHONDONTWRITEBYTECODE"}
    env.update(CIOC_ENV_FILE=str(world / ".env"), CIOC_TOOLS_PATH=str(world / "tools"),
               CIOC_STATE_DIR=str(world / "state"), CIOC_LOG_ROOT=str(world / "logs"),
               CIOC_UDL_BASE=str(world / "UDLs"), CIOC_TASK_NOTIFY_EMAIL="errors@example.org",
               CIOC_MAIL_BACKEND="file", CIOC_MAIL_DIR=str(world / "mail"))
    return env


def build(world, megabytes):
    """A site whose two error logs hold ``megabytes`` MiB not yet read; return
    (log files, environment, entries written)."""
    (world / "UDLs" / SITE).mkdir(parents=True)
    (world / "UDLs" / SITE / "cron_job_runner.udl").write_text("", encoding="utf-8")
    (world / ".env").write_text("", encoding="utf-8")
    folder = world / "logs" / SITE / "python"
    folder.mkdir(parents=True)
    today = datetime.date.today()
    files = [folder / f"error.log.{today - datetime.timedelta(days=1)}", folder / "error.log"]
    starts = [datetime.datetime.combine(today - datetime.timedelta(days=1), datetime.time()),
              datetime.datetime.combine(today, datetime.time())]
    for path, start in zip(files, starts):  # what the first run reads
        logdata.write_error_log(path, 0, seed=2, start=start)
    env = environment(world)
    subprocess.run([sys.executable, str(SCRIPT), "-a", SITE, "-q"], env=env, check=True)
    shutil.copytree(world / "state", world / "state.after-first-run")
    entries = 0
    for number, (path, start) in enumerate(zip(files, starts)):  # the backlog
        count, _ = logdata.write_error_log(path, megabytes // 2, seed=10 + number, mode="ab",
                                           start=start + datetime.timedelta(minutes=1))
        entries += count
    return files, env, entries


def reset(world):
    shutil.rmtree(world / "state")
    shutil.copytree(world / "state.after-first-run", world / "state")
    shutil.rmtree(world / "mail", ignore_errors=True)


def check(world, files, env, entries, marker):
    """The digest counts every entry written, and grep counts the same."""
    reset(world)
    run = subprocess.run([sys.executable, str(SCRIPT), "-a", SITE], env=env,
                         capture_output=True, text=True, check=True)
    counted = int(re.search(r"(\d+) new errors", run.stdout).group(1))
    grep = subprocess.run(["grep", "-c", "-F", marker, *map(str, files)], capture_output=True,
                          text=True, env=dict(os.environ, LC_ALL="C"), check=True)
    grepped = sum(int(line.rsplit(":", 1)[1]) for line in grep.stdout.split())
    first_run = 2  # the one entry per file the first run read
    if not counted == entries == grepped - first_run:
        raise SystemExit(f"counts differ: task {counted}, written {entries}, "
                         f"grep {grepped} - {first_run}")
    print(f"{sum(p.stat().st_size for p in files) / 1e6:,.0f} MB of error log, "
          f"{entries:,} new entries; the digest and grep agree")


def scale(megabytes, repeat):
    with tempfile.TemporaryDirectory(prefix="cioctasks-bench-") as folder:
        world = Path(folder)
        files, env, entries = build(world, megabytes)
        marker = f"{datetime.date.today().year}-"
        check(world, files, env, entries, marker)
        # GNU grep stops at the first match when its output is /dev/null, where the
        # harness sends it: its counts go to a file, through a shell that execs it.
        grep = harness.Command(f"grep -c -F '{marker}'", [
            "sh", "-c", 'exec grep -c -F "$0" "$@" > "$COUNTS"', marker, *map(str, files)],
            env=dict(os.environ, LC_ALL="C", COUNTS=str(world / "grep-counts")))
        task = harness.Command("process_logged_errors", [sys.executable, str(SCRIPT), "-a",
                                                         SITE, "-q"], env=env)
        scan = harness.compare(grep, task, repeat=repeat, setup=lambda: reset(world),
                               title=f"\nthe scan, {megabytes} MiB of new error log")
        met = harness.verdict("process_logged_errors vs grep -c (grep time / task time)",
                              scan.ratio, 1.0)
        subprocess.run(task.args, env=env, check=True)  # now everything is read
        idle = harness.compare(
            harness.Command("python -c pass", [sys.executable, "-c", "pass"], env=env),
            harness.Command("process_logged_errors, nothing new", task.args, env=env),
            repeat=max(repeat, 7), title="\nthe next run, nothing new")
        met &= harness.verdict("nothing new, times python -c pass", 1 / idle.ratio,
                               IDLE_TARGET, at_least=False)
        return met


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="50,500", help="MiB of new log per case (50,500)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    results = [scale(int(size), args.repeat) for size in args.scales.split(",")]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
