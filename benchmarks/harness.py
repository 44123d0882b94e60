"""Timing whole processes, paired and interleaved, for the benchmarks in this folder.

Every benchmark compares a command the scheduler would run with a baseline command that
produces the same output. ``compare`` runs the two in turns (baseline, project, baseline,
project, ...; the order flips every round so neither always runs on a warm cache), and
prints the minimum, median and maximum wall time of each, the peak memory of each process
(its maximum resident set, from ``wait4``; it cannot be lower than this launcher's own,
which is printed as the floor), and the ratio baseline / project of the
medians: above 1 the project is faster, below 1 it is slower.

    from harness import Command, compare
    result = compare(Command("grep -c", ["grep", "-c", "x", path]),
                     Command("process_logged_errors", [python, script, ...]),
                     repeat=5, setup=lambda: reset_state())
    result.ratio  # baseline median / project median
"""

import dataclasses
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time


@dataclasses.dataclass
class Command:
    label: str
    args: list
    env: dict = None
    cwd: str = None

    def run(self):
        """Run once; return (seconds, peak resident memory in MiB). A failure raises with
        the command's stderr."""
        # Output to a file, not /dev/null: GNU grep stops at the first match when it sees
        # its output is /dev/null.
        output = tempfile.TemporaryFile()
        started = time.perf_counter()
        process = subprocess.Popen(self.args, env=self.env, cwd=self.cwd,
                                   stdout=output, stderr=subprocess.PIPE)
        stderr = process.stderr.read()
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        process.stderr.close()
        output.close()
        if process.returncode != 0:
            raise SystemExit(f"{self.label}: exit {process.returncode}: "
                             f"{stderr.decode(errors='replace')[-2000:]}")
        # ru_maxrss is in KiB on Linux.
        return seconds, usage.ru_maxrss / 1024


@dataclasses.dataclass
class Figures:
    label: str
    seconds: list
    memory: list

    @property
    def median(self):
        return statistics.median(self.seconds)

    def line(self):
        return (f"{self.label:38} {min(self.seconds):8.3f} {self.median:8.3f} "
                f"{max(self.seconds):8.3f} {max(self.memory):8.1f}")


@dataclasses.dataclass
class Result:
    baseline: Figures
    project: Figures

    @property
    def ratio(self):
        """Baseline median over project median: above 1 the project is faster."""
        return self.baseline.median / self.project.median


HEADER = f"{'command':38} {'min s':>8} {'median s':>8} {'max s':>8} {'peak MiB':>8}"


def compare(baseline, project, repeat=5, setup=None, title=None, out=sys.stdout):
    """Time ``baseline`` and ``project`` (Commands) ``repeat`` times each, in turns; call
    ``setup()`` before every single run (to reset state or output). Print both and the ratio;
    return a Result."""
    figures = {id(baseline): Figures(baseline.label, [], []),
               id(project): Figures(project.label, [], [])}
    for round_ in range(repeat):
        pair = (baseline, project) if round_ % 2 == 0 else (project, baseline)
        for command in pair:
            if setup:
                setup()
            seconds, memory = command.run()
            figures[id(command)].seconds.append(seconds)
            figures[id(command)].memory.append(memory)
    result = Result(figures[id(baseline)], figures[id(project)])
    if title:
        print(title, file=out)
    print(HEADER, file=out)
    print(result.baseline.line(), file=out)
    print(result.project.line(), file=out)
    print(f"{'ratio (baseline / project, medians)':38} {result.ratio:8.2f}", file=out)
    # A child's peak counts the pages it shared with this process before it ran its program
    # (Linux records them at exec): a figure near this floor means "small", not its size.
    floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{'(peak MiB floor: this launcher)':38} {floor:8.1f}", file=out)
    out.flush()
    return result


def verdict(name, ratio, target, at_least=True):
    """One line saying whether ``ratio`` meets ``target``; return True when it does."""
    met = ratio >= target if at_least else ratio <= target
    sign = ">=" if at_least else "<="
    print(f"{name}: {ratio:.2f} (target {sign} {target}) {'met' if met else 'NOT MET'}")
    return met
