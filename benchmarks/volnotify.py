"""volnotify end to end against writing its mail files alone, at two scales.

What the scheduler runs, ``volnotify/volnotify.py`` on a sample world with the ``file``
backend (every message an ``.eml`` file in ``CIOC_MAIL_DIR``), is timed as a whole process
against a baseline process that writes the same files, the same bytes, with the same
durability: each into a temporary file beside it, fsynced, renamed into place, and the
folder fsynced at the end (volnotify fsyncs it once per batch). The baseline reads the
messages one at a time from one file, so its memory stays flat too. Before each run the
world is put back as it was built (its database, no run state, no mail), so every run of
either command does the same work. Runs are paired and interleaved (``harness.compare``).

Target (issue 13): volnotify within 2x of the baseline's time on the large world, that is
a ratio baseline / volnotify of at least 0.5, with peak memory flat in the number of
profiles: the large world's peak within FLAT_MIB of the medium world's.

    python benchmarks/volnotify.py [--scales medium large] [--repeat 3] [--dir DIR]

``--dir`` keeps the built worlds there for the next run (building ``large`` takes ~20 s).
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
SCRIPT = ROOT / "volnotify" / "volnotify.py"
TARGET = 0.5  # baseline / volnotify: volnotify takes at most twice the baseline's time
#: Memory flat in the number of profiles: the large world (10x the profiles of medium)
#: peaks within this much of medium's.
FLAT_MIB = 25

#: The baseline: write each message of a stream (length line, bytes) as its own file.
WRITE_FILES = r"""
import os, sys
source, folder = sys.argv[1], sys.argv[2]
os.makedirs(folder, exist_ok=True)
with open(source, "rb") as stream:
    while True:
        head = stream.readline()
        if not head:
            break
        name, length = head.split()
        data = stream.read(int(length))
        target = os.path.join(folder, name.decode())
        temporary = os.path.join(folder, "." + name.decode() + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
        os.close(fd)
        os.replace(temporary, target)
fd = os.open(folder, os.O_RDONLY)
os.fsync(fd)
os.close(fd)
"""


def build(folder, scale):
    """Build a one-site sample world at ``scale`` in ``folder`` unless one is there."""
    if (folder / ".cioctasks-sample-world").exists():
        return
    subprocess.run([sys.executable, "-m", "cioctasks.sampledb", "create", str(folder),
                    "--scale", scale, "--sites", "1", "--force"], check=True,
                   stdout=subprocess.DEVNULL)


class World:
    """A built world and a pristine copy of what a run changes."""

    def __init__(self, folder):
        self.folder = folder
        self.pristine = folder.parent / (folder.name + ".pristine")
        if not self.pristine.exists():
            shutil.copytree(folder / "databases", self.pristine)
        self.env = dict(os.environ, CIOC_ENV_FILE=str(folder / ".env"), PYTHONUTF8="1")
        self.mail = folder / "mail"

    def reset(self):
        """The world as it was built: its databases, no run state, no mail."""
        for name in ("mail", "state"):
            shutil.rmtree(self.folder / name, ignore_errors=True)
        (self.folder / "mail").mkdir()
        for database in self.pristine.iterdir():
            shutil.copyfile(database, self.folder / "databases" / database.name)

    def mails(self):
        return sorted(p for p in self.mail.iterdir() if p.suffix == ".eml")


def stream_of(world, target):
    """Write the mail of one volnotify run as the baseline's input; return (files, bytes)."""
    world.reset()
    subprocess.run([sys.executable, str(SCRIPT)], env=world.env, check=True,
                   stdout=subprocess.DEVNULL, cwd=world.folder)
    count = size = 0
    with open(target, "wb") as stream:
        for path in world.mails():
            data = path.read_bytes()
            stream.write(b"%s %d\n" % (path.name.encode(), len(data)))
            stream.write(data)
            count, size = count + 1, size + len(data)
    return count, size


def measure(folder, scale, repeat):
    build(folder, scale)
    world = World(folder)
    stream = folder.parent / f"{folder.name}.mail-stream"
    count, size = stream_of(world, stream)
    baseline = Command("write the files (fsync each)",
                       [sys.executable, "-c", WRITE_FILES, str(stream), str(world.mail)])
    project = Command("volnotify.py (file backend)", [sys.executable, str(SCRIPT)],
                      env=world.env, cwd=str(world.folder))
    # Both write the same files: checked once, before timing.
    world.reset()
    baseline.run()
    written = world.mails()
    assert len(written) == count and sum(p.stat().st_size for p in written) == size
    del written  # the peak memory of a child counts its parent's at fork (harness, wait4)
    title = (f"\n{scale}: {count:,} messages, {size / 2**20:.1f} MiB of mail "
             f"({size // max(count, 1):,} bytes each on average)")
    result = compare(baseline, project, repeat=repeat, setup=world.reset, title=title)
    stream.unlink()
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", nargs="+", default=["medium", "large"],
                        choices=["small", "medium", "large"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, help="keep the built worlds here")
    args = parser.parse_args()
    keep = args.dir
    temporary = None if keep else tempfile.TemporaryDirectory(prefix="bench-volnotify-")
    base = keep or Path(temporary.name)
    base.mkdir(parents=True, exist_ok=True)
    results = {}
    try:
        for scale in args.scales:
            results[scale] = measure(base / f"world-{scale}", scale, args.repeat)
    finally:
        if temporary:
            temporary.cleanup()
    print()
    met = True
    for scale, result in results.items():
        met &= verdict(f"{scale}: baseline / volnotify", result.ratio, TARGET)
    peaks = {scale: max(r.project.memory) for scale, r in results.items()}
    print("volnotify peak memory: " + ", ".join(f"{s} {m:.1f} MiB" for s, m in peaks.items()))
    if len(peaks) > 1:
        smallest, largest = min(peaks.values()), max(peaks.values())
        flat = largest - smallest <= FLAT_MIB
        print(f"memory flat in the number of profiles (the largest peak within {FLAT_MIB} MiB "
              f"of the smallest): {'met' if flat else 'NOT MET'}")
        met &= flat
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
