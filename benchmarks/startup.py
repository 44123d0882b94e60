"""Start-up time of the commands and task scripts against a bare ``python -c pass``.

A scheduled task that takes a second to start is a second lost on every run, every site,
every 15 minutes. Target: ``--help`` of each command and script under 3x bare Python.

    python benchmarks/startup.py [--repeat N]
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = 3.0


def best_time(args, repeat):
    """Return the best wall time in seconds of running ``args`` ``repeat`` times."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - started)
    return min(times)


def commands():
    yield "cioctasks check --help", [sys.executable, "-m", "cioctasks", "check", "--help"]
    yield "cioctasks status --help", [sys.executable, "-m", "cioctasks", "status", "--help"]
    for folder in ("cron", "downloads", "volnotify"):
        for script in sorted((ROOT / folder).glob("*.py")):
            text = script.read_text(encoding="utf-8")
            if "cioctasks.run(" in text:
                yield f"{folder}/{script.name} --help", [sys.executable, str(script), "--help"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    baseline = best_time([sys.executable, "-c", "pass"], args.repeat)
    print(f"{'command':45} {'seconds':>8} {'ratio':>6}")
    print(f"{'python -c pass (baseline)':45} {baseline:8.3f} {1.0:6.2f}")
    worst = 0.0
    for label, command in commands():
        seconds = best_time(command, args.repeat)
        ratio = seconds / baseline
        worst = max(worst, ratio)
        mark = "" if ratio < TARGET else "  over target"
        print(f"{label:45} {seconds:8.3f} {ratio:6.2f}{mark}")
    print(f"worst ratio {worst:.2f} (target < {TARGET})")
    return 0 if worst < TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
