"""process_logged_errors on a large error log (1 GB by default, about 0.1% of lines
starting an entry): scan throughput against ``grep -c`` of the entry marker on the same
file, same run (target: at least half of grep's speed), then a second run with nothing new
(target: under 0.1 s whatever the size).

    python benchmarks/process_logged_errors.py [--size-mb N]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "cron"))
import process_logged_errors as errors  # noqa: E402


def write_log(path, megabytes, distinct=False):
    """A block of 1000 lines with one error entry (header and traceback), repeated; with
    ``distinct``, every entry has its own URL and message (no two alike)."""
    filler = "".join(f"    at request handling step {n}: nothing to report here, all is well\n"
                     for n in range(994))
    entry = ("2026-11-22 14:03:11,123 https://site.cioc.ca/volunteer/record/V{n:06d}\n"
             "Traceback (most recent call last):\n"
             '  File "/opt/cioc/web/record.py", line 12, in view_record\n'
             "    value = data['ViewType{n}']\n"
             "KeyError: 'ViewType{n}'\n")
    block_size = len((entry.format(n=0) + filler).encode())
    with open(path, "wb") as handle:
        for n in range(megabytes * (1 << 20) // block_size):
            handle.write((entry.format(n=n if distinct else 123) + filler).encode())


def measure(folder, megabytes, distinct):
    log = folder / "error.log"
    write_log(log, megabytes, distinct)
    size = log.stat().st_size
    started = time.perf_counter()
    digest, positions = errors.collect(folder, {}, False)
    ours = time.perf_counter() - started
    started = time.perf_counter()
    grep = subprocess.run(["grep", "-c", "^20[0-9][0-9]-", str(log)], capture_output=True,
                          text=True, env=dict(os.environ, LC_ALL="C"))
    theirs = time.perf_counter() - started
    assert int(grep.stdout) == digest.entries, (grep.stdout, digest.entries)
    started = time.perf_counter()
    again, _ = errors.collect(folder, positions, False)
    idle = time.perf_counter() - started
    assert again.entries == 0
    kind = "every entry different" if distinct else "one error repeated (a flood)"
    print(f"error log of {size / 1e6:,.0f} MB with {digest.entries:,} entries, {kind}")
    print(f"  process_logged_errors scan   {ours:6.2f}s  {size / ours / 1e6:8.0f} MB/s")
    print(f"  grep -c of the marker        {theirs:6.2f}s  {size / theirs / 1e6:8.0f} MB/s")
    print(f"  ratio {theirs / ours:.2f} of grep's speed (target >= 0.5)")
    print(f"  second run, nothing new      {idle * 1000:6.1f} ms (target < 100 ms)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="cioctasks-bench-"))
    try:
        folder = scratch / "python"
        folder.mkdir()
        for distinct in (False, True):
            measure(folder, args.size_mb, distinct)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
