"""Packing a member's download: ``ziptool.py`` against 7-Zip, as whole processes.

The file packed is a real download database: dbcopy's copy of member 1's CIC_Stats_RSN
(the statistics download, the largest a member gets) in the sample worlds ``medium`` and
``large``. Both commands write an AES-256 zip, single-threaded, and read it back with the
password:

- project: ``python downloads/ziptool.py OUT FILE --password-env VAR --level 5`` (zlib
  level 5; writes, reads every member back and checks it, renames);
- baseline: ``7z a -tzip -mem=AES256 -mx=3 -mmt=1`` then ``7z t`` of the archive.

7-Zip's deflate encoder is not zlib's: its fast levels (1-4) write archives a few percent
larger than zlib's level 5, and from level 5 it switches to a far slower encoder that
writes smaller ones (on the large file: 1.8 s and 42.7 MB at -mx=3, 7.0 s and 36.2 MB at
-mx=5, ziptool 40.8 MB). -mx=3 is the nearest like for like, and the sizes are printed.
Target: ratio (7-Zip / ziptool, medians) at least 0.67 (no slower than 1.5x). The copy
itself is measured by ``benchmarks/dbcopy.py``.

    python benchmarks/downloads.py [--worlds DIR] [--repeat N]

DIR keeps the sample worlds between runs (DIR/medium, DIR/large; built when missing), and
is shared with benchmarks/dbcopy.py.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import Command, compare, verdict

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
import dbcopy as copy_benchmark  # noqa: E402  (benchmarks/dbcopy.py: worlds and the copy)

PASSWORD_VARIABLE = "CIOC_BENCHMARK_PASSWORD"
PASSWORD = "Benchmark#2026"
LEVEL = 5
SEVEN_LEVEL = 3
TARGET = 0.67
SCALES = ("medium", "large")


def member_download(worlds, scratch, scale):
    """Build (or reuse) the world and return dbcopy's copy of member 1's statistics."""
    world = worlds / scale
    copy_benchmark.build_world(world, scale)
    output = scratch / f"{scale}-member1-stats.sqlite"
    copy_benchmark.project_command(world, output).run()
    return output


def commands(database, scratch):
    ours, theirs = scratch / "ziptool.zip", scratch / "7z.zip"
    env = dict(os.environ, **{PASSWORD_VARIABLE: PASSWORD})
    project = Command("ziptool.py (write, read back)",
                      [sys.executable, str(ROOT / "downloads" / "ziptool.py"), str(ours),
                       str(database), "--password-env", PASSWORD_VARIABLE, "--level", str(LEVEL)],
                      env=env, cwd=str(database.parent))
    seven = (f"7z a -tzip -mem=AES256 -mx={SEVEN_LEVEL} -mmt=1 -p\"${PASSWORD_VARIABLE}\" {theirs} "
             f"{database.name} >/dev/null && 7z t -p\"${PASSWORD_VARIABLE}\" {theirs} >/dev/null")
    baseline = Command("7z a + 7z t", ["sh", "-c", seven], env=env, cwd=str(database.parent))

    def setup():
        # 7z a adds to an archive that exists; both start from nothing.
        for path in (ours, theirs):
            path.unlink(missing_ok=True)

    return baseline, project, setup, ours, theirs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", type=Path, help="keep the sample worlds in this folder")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each command")
    args = parser.parse_args()
    if not shutil.which("7z"):
        print("7z is not installed: nothing to compare with", file=sys.stderr)
        return 2
    scratch = Path(tempfile.mkdtemp(prefix="cioctasks-bench-"))
    met = True
    try:
        worlds = args.worlds or scratch / "worlds"
        worlds.mkdir(parents=True, exist_ok=True)
        for scale in SCALES:
            database = member_download(worlds, scratch, scale)
            baseline, project, setup, ours, theirs = commands(database, scratch)
            size = database.stat().st_size / 1e6
            result = compare(baseline, project, repeat=args.repeat, setup=setup,
                             title=f"\n{scale}: pack a {size:.1f} MB member download")
            setup()  # one more run of each, to compare what they wrote
            baseline.run()
            project.run()
            subprocess.run(["7z", "t", f"-p{PASSWORD}", str(ours)], check=True,
                           stdout=subprocess.DEVNULL)
            print(f"archives: ziptool {ours.stat().st_size / 1e6:.1f} MB, "
                  f"7z {theirs.stat().st_size / 1e6:.1f} MB")
            met = verdict(f"{scale}: speed (7z / ziptool)", result.ratio, TARGET) and met
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
