"""Build the sample world in ./demo, run every task against it as a night would, show what
happened. Run through ``bin/demo`` (or ``bin\\demo.cmd``), which installs what is missing.

    python bin/demo.py [--dir DIR] [--sites N] [--scale small|medium|large] [--keep]
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: The tasks in the order a night runs them, with the arguments the demo gives them.
NIGHT = [
    ("cron/nightly_db_maintenance.py", []),
    ("cron/cic_changes_for_vol.py", []),
    ("cron/update_offline_tools_map.py", []),
    ("cron/getinvolvedapi.py", []),
    ("volnotify/volnotify.py", []),
    ("downloads/newdownloads.py", []),
    ("downloads/newdownloads.py", ["-s"]),
    ("cron/process_logged_errors.py", []),
    ("cron/process_logs.py", []),
    ("cron/cull_old_exports.py", []),
    ("cron/compress_old_logs.py", []),
    ("cron/geoip_download.py", []),
]

EXIT_MEANING = {0: "ok", 1: "some work failed", 2: "usage/config error", 70: "internal error",
                75: "locked"}


def run(args, env, label=None):
    """Run one command, print one line about it, return (exit code, seconds, output)."""
    started = time.monotonic()
    result = subprocess.run(
        [str(a) for a in args], env=env, cwd=ROOT, capture_output=True, text=True,
        encoding="utf-8", errors="replace",
    )
    seconds = time.monotonic() - started
    meaning = EXIT_MEANING.get(result.returncode, f"exit {result.returncode}")
    print(f"  {label or ' '.join(map(str, args)):48} {meaning:20} {seconds:6.1f}s")
    if result.returncode not in (0,):
        for line in (result.stderr or result.stdout).strip().splitlines()[-5:]:
            print(f"      {line}")
    return result.returncode, seconds, result.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=ROOT / "demo")
    parser.add_argument("--sites", type=int, default=2)
    parser.add_argument("--scale", default="small", choices=("small", "medium", "large"))
    args = parser.parse_args()
    world = args.dir.resolve()
    python = sys.executable
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIOC_")}
    env.update(PYTHONUTF8="1", CIOC_ENV_FILE=str(world / ".env"))

    print(f"Building the sample world in {world} ({args.sites} sites, scale {args.scale})")
    code, _, output = run(
        [python, "-m", "cioctasks.sampledb", "create", world, "--sites", args.sites,
         "--scale", args.scale, "--force"], env, "sampledb create",
    )
    if code:
        return code
    print(output.rstrip())

    print("\nChecking the databases and mail settings")
    run([python, "-m", "cioctasks", "check"], env, "cioctasks check")

    print("\nRunning the night's tasks")
    failures = 0
    for script, script_args in NIGHT:
        if not (ROOT / script).exists():
            continue
        code, _, _ = run([python, ROOT / script, *script_args], env,
                         " ".join([script, *script_args]))
        failures += code not in (0,)

    print("\nWhat happened (python -m cioctasks status):")
    status = subprocess.run([python, "-m", "cioctasks", "status"], env=env, cwd=ROOT,
                            capture_output=True, text=True, encoding="utf-8")
    print(status.stdout.rstrip())
    runs = json.loads(subprocess.run(
        [python, "-m", "cioctasks", "status", "--json"], env=env, cwd=ROOT,
        capture_output=True, text=True, encoding="utf-8").stdout or "[]")

    mails = sorted((world / "mail").glob("*.eml"))
    print("\nWhere to look:")
    print(f"  mail written as .eml        {world / 'mail'}  ({len(mails)} messages)")
    print(f"  member downloads            {world / 'VirtualServers'}/<site>/download/")
    print(f"  offline tools map           {world / 'tools' / 'offline_tools'}")
    print(f"  awstats pages               {world / 'VirtualServers'}/<site>/stats/")
    print(f"  task logs                   {world / 'logs' / 'cioctasks'}")
    print(f"  run history                 {world / 'state' / 'state.sqlite'} "
          f"({len(runs)} task/database entries)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
