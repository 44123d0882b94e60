"""-j N against -j 1: whole runs over four sites of the sample world.

Targets: -j N never slower than -j 1; -j 2 at least 1.3x faster for newdownloads and
volnotify on two cores; peak memory under 200 MiB at any -j, counted over every process of
the run (the parent and its child processes together).

Each run starts from the same world: the databases and the run state are put back from a
copy and the mail folder emptied before every single run (not timed). Peak memory is the
largest sum of the resident memory of the run's processes, sampled every 20 ms from /proc
(``wait4``'s figure would be the largest single process of the tree, not the sum).

    python benchmarks/jobs.py [--scale medium] [--repeat 3] [--tasks newdownloads,volnotify,nightly]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import harness

ROOT = Path(__file__).resolve().parent.parent
SITES = 4
TASKS = {
    "newdownloads": ["downloads/newdownloads.py"],
    "newdownloads -s": ["downloads/newdownloads.py", "-s"],
    "volnotify": ["volnotify/volnotify.py"],
    "nightly": ["cron/nightly_db_maintenance.py"],
}
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def tree_rss(root):
    """The resident memory in bytes of ``root`` and every process below it."""
    parents, rss = {}, {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
            with open(f"/proc/{entry.name}/statm", "rb") as statm:
                rss[int(entry.name)] = int(statm.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            continue
        parents[int(entry.name)] = int(fields[1])
    total, wanted = 0, {root}
    changed = True
    while changed:
        changed = False
        for pid, parent in parents.items():
            if parent in wanted and pid not in wanted:
                wanted.add(pid)
                changed = True
    for pid in wanted:
        total += rss.get(pid, 0)
    return total


class TreeCommand(harness.Command):
    """A Command whose peak memory is the sum over its process tree, sampled."""

    def run(self):
        started = time.perf_counter()
        process = subprocess.Popen(self.args, env=self.env, cwd=self.cwd,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        peak = [0]
        done = threading.Event()

        def sample():
            while not done.wait(0.02):
                try:
                    peak[0] = max(peak[0], tree_rss(process.pid))
                except OSError:
                    pass

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        stderr = process.stderr.read()
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        done.set()
        sampler.join()
        process.returncode = os.waitstatus_to_exitcode(status)
        process.stderr.close()
        if process.returncode != 0:
            raise SystemExit(f"{self.label}: exit {process.returncode}: "
                             f"{stderr.decode(errors='replace')[-2000:]}")
        return seconds, max(peak[0], usage.ru_maxrss * 1024) / 2**20


def build_world(folder, scale):
    world = folder / "world"
    subprocess.run([sys.executable, "-m", "cioctasks.sampledb", "create", str(world),
                    "--sites", str(SITES), "--scale", scale], check=True,
                   stdout=subprocess.DEVNULL)
    pristine = folder / "pristine"
    for part in ("databases", "state"):
        shutil.copytree(world / part, pristine / part)
    return world, pristine


def resetter(world, pristine):
    def reset():
        for part in ("databases", "state"):
            shutil.rmtree(world / part)
            shutil.copytree(pristine / part, world / part)
        shutil.rmtree(world / "mail", ignore_errors=True)
        (world / "mail").mkdir()
    return reset


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="medium", choices=("small", "medium", "large"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--jobs", default="2,4", help="the -j values compared with -j 1")
    parser.add_argument("--tasks", default="newdownloads,newdownloads -s,volnotify,nightly")
    args = parser.parse_args()
    met = True
    with tempfile.TemporaryDirectory() as folder:
        world, pristine = build_world(Path(folder), args.scale)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CIOC_")}
        env["CIOC_ENV_FILE"] = str(world / ".env")
        reset = resetter(world, pristine)
        print(f"{SITES} {args.scale} sites, {os.cpu_count()} cores\n")
        for task in args.tasks.split(","):
            script = [sys.executable, str(ROOT / TASKS[task][0]), *TASKS[task][1:], "-q"]
            one = TreeCommand(f"{task} -j 1", [*script, "-j", "1"], env=env)
            for jobs in args.jobs.split(","):
                many = TreeCommand(f"{task} -j {jobs}", [*script, "-j", jobs], env=env)
                result = harness.compare(one, many, repeat=args.repeat, setup=reset,
                                         title=f"{task}: -j {jobs} against -j 1")
                target = 1.3 if jobs == "2" and task in ("newdownloads", "volnotify") else 1.0
                met &= harness.verdict(f"{task} -j {jobs} speed-up", result.ratio, target)
                peak = max(max(result.baseline.memory), max(result.project.memory))
                met &= harness.verdict(f"{task} -j {jobs} peak MiB (sum over processes)",
                                       peak, 200, at_least=False)
                print()
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
