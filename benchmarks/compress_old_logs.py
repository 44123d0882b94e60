"""compress_old_logs as the scheduler runs it, against Info-ZIP's ``zip`` doing the same job.

The input is realistic, varied logs (``logdata``): for each of four sites, a month of
daily access logs (combined format) and the Python error and console logs (CRLF,
tracebacks), all older than the task's six days, at two scales. The task puts each
folder's files into ``logs-YYYY-MM.zip`` (deflate level 6, names without folders), checks
the archive and deletes the files. The baseline does exactly that with one process per run:
a shell running, in each folder, ``zip -6 -q -j -T -m logs-YYYY-MM.zip FILES`` (``-T`` tests
the archive with unzip before ``-m`` deletes the files). Before every run the logs are put
back and the archives removed. Target: ratio >= 1 (the task no slower than zip).

    python benchmarks/compress_old_logs.py [--scales 50,200] [--repeat N]
"""

import argparse
import datetime
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import harness
import logdata

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "cron" / "compress_old_logs.py"
SITES = logdata.SITE_NAMES
DAYS = 20


def write_logs(root, megabytes):
    """Write the sites' logs under ``root``, dated 20 to 40 days ago; return the folders."""
    now = time.time()
    month_start = datetime.datetime.fromtimestamp(now - 40 * 86400)
    share = megabytes / len(SITES) / DAYS  # MiB per site and day
    folders = []
    for number, site in enumerate(SITES):
        web, python = root / site, root / site / "python"
        python.mkdir(parents=True)
        folders += [web, python]
        for day in range(DAYS):
            moment = month_start + datetime.timedelta(days=day)
            seed = number * 100 + day
            files = [(web / f"access.log.{moment:%Y%m%d}", "access", 0.7),
                     (python / f"console.log.{moment:%Y-%m-%d}", "console", 0.1),
                     (python / f"error.log.{moment:%Y-%m-%d}", "error", 0.2)]
            for path, kind, part in files:
                size = max(1, round(share * part * 16)) / 16  # at least 64 KiB
                if kind == "error":
                    logdata.write_error_log(path, size, seed=seed, start=moment)
                else:
                    logdata.write_text_log(path, size, kind, seed=seed, start=moment)
                stamp = (moment + datetime.timedelta(hours=23)).timestamp()
                os.utime(path, (stamp, stamp))
    return folders


def baseline_script(folders, pristine, root):
    """The shell commands that zip each folder's files (``folders`` under ``pristine``,
    zipped where they are copied under ``root``) as the task does."""
    commands = []
    for folder in folders:
        months = {}
        for path in sorted(p for p in folder.iterdir() if p.is_file()):
            month = datetime.datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y-%m")
            months.setdefault(month, []).append(shlex.quote(path.name))
        for month, names in months.items():
            target = root / folder.relative_to(pristine)
            commands.append(f"cd {shlex.quote(str(target))} && zip -6 -q -j -T -m "
                            f"logs-{month}.zip {' '.join(names)}")
    return " && ".join(commands)


def archives(root):
    return sorted(root.rglob("logs-*.zip"))


def scale(megabytes, repeat, workdir):
    with tempfile.TemporaryDirectory(prefix="cioctasks-bench-", dir=workdir) as folder:
        scratch = Path(folder)
        pristine, root = scratch / "pristine", scratch / "logs"
        folders = write_logs(pristine, megabytes)
        total = sum(p.stat().st_size for p in pristine.rglob("*") if p.is_file())
        count = sum(1 for p in pristine.rglob("*") if p.is_file())

        def reset():
            shutil.rmtree(root, ignore_errors=True)
            shutil.copytree(pristine, root)  # copy2: the modification times stay old

        env = {k: v for k, v in os.environ.items()
               if not k.startswith("CIOC_") and k != "PYTHONDONTWRITEBYTECODE"}
        env.update(CIOC_ENV_FILE=str(scratch / ".env"), CIOC_LOG_ROOT=str(root),
                   CIOC_STATE_DIR=str(scratch / "state"), CIOC_TOOLS_PATH=str(scratch))
        (scratch / ".env").write_text("", encoding="utf-8")
        ours = harness.Command("compress_old_logs", [sys.executable, str(SCRIPT), "-q"], env=env)
        script = baseline_script(folders, pristine, root)
        theirs = harness.Command("zip -6 -j -T -m, per folder", ["sh", "-c", script])
        sizes = {}
        for command in (theirs, ours):  # once each, to compare what they write
            reset()
            command.run()
            left = [p for p in root.rglob("*") if p.is_file() and p.suffix != ".zip"
                    and p.parent != root / "cioctasks"]  # the task's own log
            made = archives(root)
            if left or not made:
                raise SystemExit(f"{command.label}: {len(left)} files left, "
                                 f"{len(made)} archives")
            sizes[command.label] = sum(p.stat().st_size for p in made)
        print(f"\n{count} log files in {len(folders)} folders, {total / 1e6:,.1f} MB; archives: "
              + ", ".join(f"{label} {size / 1e6:,.2f} MB" for label, size in sizes.items()))
        result = harness.compare(theirs, ours, repeat=repeat, setup=reset,
                                 title=f"compress_old_logs, {megabytes} MiB of logs")
        return harness.verdict("compress_old_logs vs zip (zip time / task time)",
                               result.ratio, 1.0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="50,200", help="MiB of logs per case (50,200)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workdir", help="where to write the logs (default: the temp folder)")
    args = parser.parse_args()
    results = [scale(int(size), args.repeat, args.workdir) for size in args.scales.split(",")]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
