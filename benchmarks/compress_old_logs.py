"""compress_old_logs on about 200 MB of access logs against ``7z a -tzip`` at the same
deflate level, single-threaded, in the same run. Target: no slower than 7z.

    python benchmarks/compress_old_logs.py [--megabytes N] [--level N]
"""

import argparse
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "cron"))
import compress_old_logs  # noqa: E402


def write_logs(folder, megabytes):
    rng = random.Random(1)
    pages = ["/", "/volunteer/", "/record/CIO%05d", "/volunteer/record/V%06d", "/styles/main.css"]
    lines = []
    for n in range(20_000):
        page = rng.choice(pages)
        page = page % rng.randint(1, 99999) if "%" in page else page
        lines.append(f"10.1.{rng.randint(0, 255)}.{rng.randint(1, 254)} - - [0{n % 9 + 1}/Nov/2026:"
                     f"{n % 24:02d}:{n % 60:02d}:{n % 59:02d} -0500] \"GET {page} HTTP/1.1\" 200 "
                     f"{rng.randint(200, 40000)} \"-\" \"Mozilla/5.0 (Windows NT 10.0)\"\n")
    block = "".join(lines).encode()
    files = []
    for day in range(20):
        path = folder / f"access.log.202610{day + 1:02d}"
        with open(path, "wb") as handle:
            for _ in range(max(1, megabytes * (1 << 20) // 20 // len(block))):
                handle.write(block)
        old = time.time() - 30 * 86400
        os.utime(path, (old, old))
        files.append(path)
    return files


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--level", type=int, default=5)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="cioctasks-bench-"))
    try:
        ours, theirs = scratch / "ours", scratch / "theirs"
        ours.mkdir()
        files = write_logs(ours, args.megabytes)
        total = sum(p.stat().st_size for p in files)
        shutil.copytree(ours, theirs)
        started = time.perf_counter()
        result = compress_old_logs.compress(ours, 6, args.level, False, logging.getLogger("b"))
        our_seconds = time.perf_counter() - started
        archive = next(ours.glob("logs-*.zip"))
        started = time.perf_counter()
        subprocess.run(["7z", "a", "-tzip", f"-mx={args.level}", "-mmt=1", str(theirs / "7z.zip"),
                        *[str(p) for p in theirs.iterdir()]], check=True, stdout=subprocess.DEVNULL)
        seven_seconds = time.perf_counter() - started
        print(f"{len(files)} files, {total / 1e6:.0f} MB of access logs, deflate level {args.level}")
        print(f"  compress_old_logs (write, read back, check, delete)  {our_seconds:6.2f}s  "
              f"{archive.stat().st_size / 1e6:6.1f} MB  ({result.files} files)")
        print(f"  7z a -tzip -mmt=1                                    {seven_seconds:6.2f}s  "
              f"{(theirs / '7z.zip').stat().st_size / 1e6:6.1f} MB")
        print(f"  ratio {our_seconds / seven_seconds:.2f} of 7z's time (target <= 1.0)")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
