"""Start-up time of the commands and task scripts against a bare ``python -c pass``.

A scheduled task that takes a second to start is a second lost on every run, every site,
every 15 minutes. Targets: ``--help`` of each command and script, and the 15-minute task
with nothing to do (``cron/process_logged_errors.py`` on logs it has already read: a whole
run with its lock, run history and log), within 3x of bare Python.

Each command is timed as a whole process, in turns with ``python -c pass``
(``harness.compare``), with bytecode caching as deployed: PYTHONDONTWRITEBYTECODE is
removed and every command runs once before it is timed, so that its ``.pyc`` files exist.

    python benchmarks/startup.py [--repeat N] [--only TEXT]
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import harness

ROOT = Path(__file__).resolve().parent.parent
TARGET = 3.0


def environment(**extra):
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith("CIOC_") and k != "PYTHONDONTWRITEBYTECODE"}
    environ.update(extra)
    return environ


def help_commands():
    yield "cioctasks check --help", [sys.executable, "-m", "cioctasks", "check", "--help"]
    yield "cioctasks status --help", [sys.executable, "-m", "cioctasks", "status", "--help"]
    for folder in ("cron", "downloads", "volnotify"):
        for script in sorted((ROOT / folder).glob("*.py")):
            if "cioctasks.run(" in script.read_text(encoding="utf-8"):
                yield f"{folder}/{script.name} --help", [sys.executable, str(script), "--help"]


def nothing_to_do(world):
    """The 15-minute task on a sample world whose error logs it has read already."""
    subprocess.run([sys.executable, "-m", "cioctasks.sampledb", "create", str(world),
                    "--sites", "2"], check=True, stdout=subprocess.DEVNULL)
    env = environment(CIOC_ENV_FILE=str(world / ".env"))
    command = [sys.executable, str(ROOT / "cron" / "process_logged_errors.py"), "-q"]
    subprocess.run(command, env=env, check=True)  # the first run reads the logs
    return "process_logged_errors, nothing new", command, env


#: The standard library a run loads whatever it does: its command line, its log, its paths,
#: its run history (sqlite3, json) and dates. Timed beside the tasks (not against the
#: target) to show how much of the 3x any run of a task can have.
STDLIB_FLOOR = "import argparse, datetime, json, logging, pathlib, re, sqlite3"


def floor_case():
    return ("floor: python -c '" + STDLIB_FLOOR + "'", [sys.executable, "-c", STDLIB_FLOOR],
            environment())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=11)
    parser.add_argument("--only", help="only the commands whose label contains this text")
    args = parser.parse_args()
    baseline = harness.Command("python -c pass", [sys.executable, "-c", "pass"],
                               env=environment())
    worst, failed = 0.0, []
    with tempfile.TemporaryDirectory() as folder:
        cases = [(label, command, environment()) for label, command in help_commands()]
        cases.append(nothing_to_do(Path(folder) / "world"))
        cases.append(floor_case())
        for label, command, env in cases:
            if args.only and args.only not in label:
                continue
            project = harness.Command(label, command, env=env)
            project.run()  # writes the .pyc files, as the first run after an install does
            result = harness.compare(baseline, project, repeat=args.repeat)
            times = 1 / result.ratio
            if label.startswith("floor:"):
                print(f"{label}: {times:.2f}x python -c pass (no target: what any run "
                      f"loads)\n")
                continue
            worst = max(worst, times)
            print(f"{label}: {times:.2f}x python -c pass (target <= {TARGET:g}x)"
                  f"{'' if times <= TARGET else '  OVER'}\n")
            if times > TARGET:
                failed.append(label)
    print(f"worst: {worst:.2f}x python -c pass (target <= {TARGET:g}x); "
          f"over: {', '.join(failed) or 'none'}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
