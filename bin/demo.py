"""Build the sample world in ./demo, run every task against it as two nights would (on the
second, the getinvolved.ca stand-in refuses the login: one expected failure), and show
what happened. Run through bin/demo (or bin\\demo.cmd), which installs what is missing first.

    python bin/demo.py [--dir DIR] [--sites N] [--scale small|medium|large]

Each run builds the world again from scratch: DIR is replaced only when it holds a sample
world (python -m cioctasks.sampledb create writes a .cioctasks-sample-world file into it);
a DIR that is a file or holds anything else is left alone, with exit 2. The world stays in
DIR afterwards for you to look at: mail as .eml files, downloads, logs, the status page.
"""

import argparse
import contextlib
import hashlib
import http.server
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import threading
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

#: What the second night adds: getinvolvedapi sends everything again, so that it meets the
#: stand-in's refusal (incremental, it would have nothing new to send).
NIGHT_2_ARGS = {"cron/getinvolvedapi.py": ["--full", "--retries", "0"]}

EXIT_MEANING = {0: "ok", 1: "some work failed", 2: "usage/config error", 70: "internal error",
                75: "locked"}


class GetInvolvedStandIn(http.server.BaseHTTPRequestHandler):
    """A local stand-in for getinvolved.ca that speaks the README's contract, so the demo
    shows a real sync without the network. It keeps what it is sent in ``received``."""

    received = {}
    #: When set, every request is refused as a wrong login would be (HTTP 401).
    refuse = False

    def do_POST(self):
        if self.refuse:
            self.send_error(401)
            return
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        params = body.get("params", {})
        if body.get("method") == "opportunities.upsert":
            for opportunity in params.get("opportunities", []):
                self.received[opportunity["id"]] = opportunity
            result = {"upserted": len(params.get("opportunities", []))}
        else:
            for vnum in params.get("ids", []):
                self.received.pop(vnum, None)
            result = {"withdrawn": len(params.get("ids", []))}
        reply = json.dumps({"jsonrpc": "2.0", "id": body.get("id"), "result": result}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        """Quiet: the demo prints its own summary."""


def start_getinvolved_stand_in():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), GetInvolvedStandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/rpc"


def geolite_tarball(edition):
    """A small GeoLite2-shaped database of ``edition`` in a .tar.gz as MaxMind ships it.
    Written with mmdb-writer (installed with the test extras)."""
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    writer = MMDBWriter(ip_version=4, database_type=edition)
    writer.insert_network(IPSet(["8.8.8.0/24"]), {"country": {"iso_code": "US"},
                                                   "city": {"names": {"en": "Mountain View"}}})
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{edition}.mmdb"
        writer.to_db_file(str(path))
        data = path.read_bytes()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo(f"{edition}_{time.strftime('%Y%m%d')}/{edition}.mmdb")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class MaxMindStandIn(http.server.BaseHTTPRequestHandler):
    """A local stand-in for MaxMind's download service: /<edition>/download?suffix=tar.gz
    and ?suffix=tar.gz.sha256, behind HTTP Basic auth (any account and key)."""

    archives = {}

    def do_GET(self):
        edition, _, query = self.path.lstrip("/").partition("/download?suffix=")
        archive = self.archives.get(edition)
        if archive is None or not self.headers.get("Authorization", "").startswith("Basic "):
            self.send_error(404 if archive is None else 401)
            return
        body = (f"{hashlib.sha256(archive).hexdigest()}  {edition}.tar.gz\n".encode()
                if query == "tar.gz.sha256" else archive)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        """Quiet: the demo prints its own summary."""


def start_maxmind_stand_in():
    """Serve GeoLite2-City and -Country; None when mmdb-writer is not installed."""
    try:
        MaxMindStandIn.archives = {e: geolite_tarball(e) for e in ("GeoLite2-City", "GeoLite2-Country")}
    except ImportError:
        return None, None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), MaxMindStandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


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


def last_night(world):
    """Move the runs recorded so far back one day, so that the first night shows as last
    night on the status page's strips and charts. No task runs meanwhile; the logs and the
    watermarks are left as they are."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(world / "state" / "state.sqlite")) as history:
        with history:
            history.execute(
                "UPDATE runs SET started = strftime('%Y-%m-%d %H:%M:%f', started, '-1 day'),"
                " ended = strftime('%Y-%m-%d %H:%M:%f', ended, '-1 day')")


def refusal(folder):
    """Why the demo may not build its world in ``folder`` (a file, or a folder holding
    something other than a sample world), or None."""
    from cioctasks.sampledb import world

    try:
        if folder.exists() and not folder.is_dir():
            return f"--dir {folder} is a file, not a folder"
        if folder.is_dir() and any(folder.iterdir()) and not world.is_sample_world(folder):
            return (f"--dir {folder} is not empty and not a sample world (it has no "
                    f"{world.MARKER}): it is left alone; give a new or empty folder")
    except OSError as error:
        return f"--dir {folder}: {error.strerror or error}"
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(prog="bin/demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=ROOT / "demo",
                        help="where to build the sample world: a new or empty folder, or a "
                             "sample world to replace (default ./demo)")
    parser.add_argument("--sites", type=int, default=2,
                        help="how many sites (databases) the world has (default 2)")
    parser.add_argument("--scale", default="small", choices=("small", "medium", "large"),
                        help="how many records each site holds (default small)")
    args = parser.parse_args(argv)
    world = args.dir.resolve()
    refused = refusal(world)
    if refused:
        print(f"demo: error: {refused}", file=sys.stderr)
        return 2
    python = sys.executable
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIOC_")}
    env.update(PYTHONUTF8="1", CIOC_ENV_FILE=str(world / ".env"),
               CIOC_STATUS_HTML=str(world / "status.html"),
               CIOC_PROMETHEUS_FILE=str(world / "metrics" / "cioctasks.prom"))

    print(f"Building the sample world in {world} ({args.sites} sites, scale {args.scale})")
    # The second site is a CIOC database from before GetInvolved was removed, so the demo
    # shows both a sync and a current database where that task has nothing to do.
    older = ["--getinvolved", "ciocnord"] if args.sites >= 2 else []
    code, _, output = run(
        [python, "-m", "cioctasks.sampledb", "create", world, "--sites", args.sites,
         "--scale", args.scale, "--force", *older], env, "sampledb create",
    )
    if code:
        return code
    print(output.rstrip())

    print("\nChecking the databases and mail settings")
    run([python, "-m", "cioctasks", "check"], env, "cioctasks check")

    stand_in, url = start_getinvolved_stand_in()
    env["CIOC_GETINVOLVED_URL"] = url
    maxmind, maxmind_url = start_maxmind_stand_in()
    if maxmind:
        env.update(CIOC_MAXMIND_URL=maxmind_url, CIOC_MAXMIND_ACCOUNT_ID="demo",
                   CIOC_MAXMIND_LICENSE_KEY="demo-licence-key")
    print(f"\nRunning the night's tasks (stand-ins: getinvolved.ca at {url}, "
          f"MaxMind at {maxmind_url or 'none: mmdb-writer is not installed'})")
    failures = 0
    for night in (1, 2):
        if night == 2:
            last_night(world)
            print("\nThe second night: the getinvolved.ca stand-in now refuses the login "
                  "(HTTP 401) and getinvolvedapi sends everything again (--full), so it "
                  "fails for the agency: expected")
            GetInvolvedStandIn.refuse = True
        for script, script_args in NIGHT:
            if not (ROOT / script).exists():
                continue
            extra = NIGHT_2_ARGS.get(script, []) if night == 2 else []
            code, _, _ = run([python, ROOT / script, *script_args, *extra], env,
                             " ".join([script, *script_args, *extra]))
            expected = night == 2 and script in NIGHT_2_ARGS and code == 1
            failures += code not in (0,) and not expected

    print("\nWhat happened (python -m cioctasks status):")
    status = subprocess.run([python, "-m", "cioctasks", "status"], env=env, cwd=ROOT,
                            capture_output=True, text=True, encoding="utf-8")
    print(status.stdout.rstrip())
    if older:
        print("\nThe runs of one task (python -m cioctasks status --history getinvolvedapi "
              "-a ciocnord):")
        history = subprocess.run(
            [python, "-m", "cioctasks", "status", "--history", "getinvolvedapi", "-a",
             "ciocnord"], env=env, cwd=ROOT, capture_output=True, text=True, encoding="utf-8")
        print((history.stdout or history.stderr).rstrip())
    # The status page and the Prometheus file were rewritten at the end of every run
    # (CIOC_STATUS_HTML, CIOC_PROMETHEUS_FILE); the systemd timers are written beside them.
    run([python, "-m", "cioctasks", "schedule", "--systemd", world / "systemd"], env,
        "cioctasks schedule --systemd")
    runs = json.loads(subprocess.run(
        [python, "-m", "cioctasks", "status", "--json"], env=env, cwd=ROOT,
        capture_output=True, text=True, encoding="utf-8").stdout or "[]")

    stand_in.shutdown()
    if maxmind:
        maxmind.shutdown()
    mails = sorted((world / "mail").glob("*.eml"))
    print("\nWhere to look:")
    print(f"  mail written as .eml        {world / 'mail'}  ({len(mails)} messages)")
    print(f"  member downloads            {world / 'VirtualServers'}/<site>/download/")
    print(f"  offline tools map           {world / 'tools' / 'offline_tools'}")
    print(f"  awstats pages               {world / 'VirtualServers'}/<site>/stats/index.html")
    print(f"  getinvolved.ca stand-in     {len(GetInvolvedStandIn.received)} opportunities received")
    print(f"  GeoLite2 databases          {world / 'tools' / 'geoip'}")
    print(f"  status page                 {world / 'status.html'}  (getinvolvedapi on "
          "ciocnord is red: its link shows the log lines)")
    print(f"  Prometheus metrics          {world / 'metrics' / 'cioctasks.prom'}")
    print(f"  systemd timers              {world / 'systemd'}")
    print(f"  task logs                   {world / 'logs' / 'cioctasks'}")
    print(f"  run history                 {world / 'state' / 'state.sqlite'} "
          f"({len(runs)} task/database entries)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
