"""A whole sample site tree: databases reached through real UTF-16 UDL files, the web app's
download folders, server logs, and a ``.env`` pointing every ``CIOC_*`` variable into it.
"""

import dataclasses
import datetime
import os
import random
import shutil
import sqlite3
import zipfile
from pathlib import Path
from typing import List

from cioctasks.errors import ConfigError
from cioctasks.sampledb import generate, legacy, schema

SITE_NAMES = ["ciocdemo", "ciocnord", "ciocsud", "ciocest", "ciocouest"]
EXPORT_KINDS = ["mrv2.xml", "sh.xml", "exc.htm", "exc.csv", "mrv2.zip", "exc.zip"]
LOGINS = ["jdoe", "Marie Claire", "admin", "R. Lévesque"]


@dataclasses.dataclass
class World:
    directory: Path
    sites: List[str]
    scale: str
    seed: int

    @property
    def env_file(self):
        return self.directory / ".env"

    def database(self, site):
        return self.directory / "databases" / f"{site}.sqlite"

    def udl(self, site):
        return self.directory / "UDLs" / site / "cron_job_runner.udl"

    def environ(self):
        """The CIOC_* variables of this world, as the .env file sets them."""
        return {
            "CIOC_TOOLS_PATH": str(self.directory / "tools"),
            "CIOC_VIRTUALSERVERS_BASE": str(self.directory / "VirtualServers"),
            "CIOC_LOG_ROOT": str(self.directory / "logs"),
            "CIOC_UDL_BASE": str(self.directory / "UDLs"),
            "CIOC_STATE_DIR": str(self.directory / "state"),
            "CIOC_MAIL_BACKEND": "file",
            "CIOC_MAIL_DIR": str(self.directory / "mail"),
            "CIOC_MAIL_OUTBOX": str(self.directory / "state" / "outbox"),
            "CIOC_TASK_NOTIFY_EMAIL": "tasks@example.org",
            "CIOC_GEOIP_DIR": str(self.directory / "tools" / "geoip"),
            "CIOC_ODBC_DRIVER": "SQLite3",
        }


def site_names(count):
    return [SITE_NAMES[i] if i < len(SITE_NAMES) else f"ciocsite{i + 1}" for i in range(count)]


def write_udl(path, database_path):
    init = ("Provider=MSDASQL.1;Persist Security Info=False;"
            f'Extended Properties="Driver=SQLite3;Database={database_path}"')
    text = "[oledb]\r\n; Everything after this line is an OLE DB initstring\r\n" + init + "\r\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-16"))  # UTF-16 LE with its BOM, as Windows writes them


def build_database(path, site, scale, rng, now, getinvolved=False):
    """Write one site's database. ``getinvolved``: build it as a CIOC database from before
    the GetInvolved feature was removed (``sampledb.legacy``)."""
    if path.exists():
        path.unlink()
    extra = legacy.extra_tables() if getinvolved else None
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=OFF")
        connection.execute("PRAGMA synchronous=OFF")
        schema.create_all(connection, extra)
        generator = generate.Generator(connection, site, scale, rng, now, extra)
        generator.run()
        if getinvolved:
            legacy.populate(generator)
        schema.create_indexes(connection, extra)
        connection.execute("PRAGMA journal_mode=DELETE")
    finally:
        connection.close()


def _touch(path, moment):
    stamp = moment.timestamp()
    os.utime(path, (stamp, stamp))


def write_downloads(folder, site, rng, now):
    """Member downloads the web app links to, and export files of various ages."""
    folder.mkdir(parents=True, exist_ok=True)
    for member_id in range(1, generate.MEMBERS + 1):
        names = [f"{site}CIC{member_id}.zip", f"{site}VOL{member_id}.zip",
                 f"{site}Stats{now.year - 1}CIC{member_id}.zip"]
        for name in names:
            with zipfile.ZipFile(folder / name, "w") as archive:
                archive.writestr("readme.txt", f"Previous download of {site}, member {member_id}\n")
            _touch(folder / name, now - datetime.timedelta(days=rng.uniform(20, 60)))
    for number, login in enumerate(LOGINS * 3):
        age = rng.uniform(8, 40) if number % 2 == 0 else rng.uniform(0.1, 5)
        moment = now - datetime.timedelta(days=age)
        kind = EXPORT_KINDS[number % len(EXPORT_KINDS)]
        name = f"{login.replace(' ', '_')}_{moment:%y%m%d%H%M%S}{kind}"
        (folder / name).write_text(f"<export of {login}/>\n", encoding="utf-8")
        _touch(folder / name, moment)
    (folder / "readme.html").write_text("<p>Not an export: never culled.</p>\n", encoding="utf-8")


TRACEBACKS = [
    ("KeyError", "'ViewType'", "cioc/web/vol/record.py", "view_record", "view = request.viewdata['ViewType']"),
    ("pyodbc.OperationalError", "('HYT00', '[HYT00] Login timeout expired (0) (SQLDriverConnect)')",
     "cioc/core/connection.py", "get_connection", "conn = pyodbc.connect(self.connstr)"),
    ("ValueError", "invalid literal for int() with base 10: 'abc{n}'", "cioc/web/cic/search.py",
     "search", "page = int(request.params.get('Page', 1))"),
    ("UnicodeDecodeError", "'utf-8' codec can't decode byte 0xe9 in position {n}: invalid continuation byte",
     "cioc/web/import_/upload.py", "parse_upload", "text = data.decode('utf-8')"),
]


def _entry(rng, moment, site):
    kind, message, path, function, line = rng.choice(TRACEBACKS)
    url = f"https://{site}.cioc.ca/volunteer/record/V{rng.randint(1, 9999):06}?UseVOLVw={rng.randint(1, 30)}"
    message = message.replace("{n}", str(rng.randint(1, 500)))
    return (
        f"{moment:%Y-%m-%d %H:%M:%S},{moment.microsecond // 1000:03d} {url}\n"
        "Traceback (most recent call last):\n"
        '  File "/opt/cioc/venv/lib/python3.11/site-packages/pyramid/router.py", line 270, in invoke_request\n'
        "    response = handle_request(request)\n"
        f'  File "/opt/cioc/{path}", line {rng.randint(20, 400)}, in {function}\n'
        f"    {line}\n"
        f"{kind}: {message}\n"
    )


def write_logs(folder, site, rng, now):
    """Python error and console logs (midnight rotation) and Apache access logs."""
    python = folder / "python"
    python.mkdir(parents=True, exist_ok=True)
    for days_back in range(0, 4):
        day = (now - datetime.timedelta(days=days_back)).date()
        name = "error.log" if days_back == 0 else f"error.log.{day:%Y-%m-%d}"
        start = datetime.datetime.combine(day, datetime.time())
        span = (now - start).total_seconds() if days_back == 0 else 86399
        moments = sorted(start + datetime.timedelta(seconds=rng.uniform(0, span))
                         for _ in range(rng.randint(4, 9)))
        (python / name).write_text("".join(_entry(rng, m, site) for m in moments), encoding="utf-8")
        console = python / f"console.log.{day:%Y-%m-%d}"
        console.write_text("".join(
            f"{m:%Y-%m-%d %H:%M:%S},{m.microsecond // 1000:03d} WARNING [cioc.web][MainThread] "
            f"slow request {rng.randint(2, 30)}s\n" for m in moments), encoding="utf-8")
        if days_back:
            end = start + datetime.timedelta(days=1, seconds=-1)
            _touch(python / name, end)
            _touch(console, end)
    pages = ["/", "/volunteer/", "/volunteer/record/V000012", "/record/CIO00042",
             "/volunteer/search.asp", "/styles/main.css", "/images/logo.png"]
    agents = ['Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36',
              "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"]
    for days_back in range(1, 11):
        day = (now - datetime.timedelta(days=days_back)).date()
        start = datetime.datetime.combine(day, datetime.time())
        lines = []
        for second in sorted(rng.uniform(0, 86399) for _ in range(rng.randint(40, 80))):
            moment = start + datetime.timedelta(seconds=second)
            page = rng.choice(pages)
            lines.append(
                f"10.1.{rng.randint(0, 255)}.{rng.randint(1, 254)} - - "
                f"[{moment:%d/%b/%Y:%H:%M:%S} -0500] \"GET {page} HTTP/1.1\" 200 "
                f"{rng.randint(200, 40000)} \"-\" \"{rng.choice(agents)}\"\n")
        path = folder / f"access.log.{day:%Y%m%d}"
        path.write_text("".join(lines), encoding="utf-8")
        _touch(path, start + datetime.timedelta(days=1, seconds=-1))


#: The file that makes a folder a sample world, the only kind ``create(..., force=True)`` deletes.
MARKER = ".cioctasks-sample-world"
ENV_HEADER = "# The sample world's settings (python -m cioctasks.sampledb)"


def is_sample_world(directory):
    """True when ``directory`` holds a sample world: its marker file, or (a world written
    before there was one) a .env that this module wrote for this very folder."""
    directory = Path(directory)
    if (directory / MARKER).is_file():
        return True
    try:
        lines = (directory / ".env").read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return False
    return lines[:1] == [ENV_HEADER] and f"CIOC_UDL_BASE={directory / 'UDLs'}" in lines


def prepare_folder(directory, force):
    """Make ``directory`` an empty folder to build a world in, marked as one; delete what
    it holds only when it is a sample world and ``force`` is set. Raise ConfigError (one
    line) for anything else: a file, a folder of something else, one that cannot be made."""
    try:
        if directory.exists() and not directory.is_dir():
            raise ConfigError(f"{directory} is a file, not a folder")
        if directory.is_dir() and any(directory.iterdir()):
            if not is_sample_world(directory):
                raise ConfigError(f"{directory} is not empty and not a sample world (it has "
                                  f"no {MARKER}): it is left alone; give a new or empty folder")
            if not force:
                raise ConfigError(f"{directory} is not empty (use --force to replace that "
                                  "sample world)")
            shutil.rmtree(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / MARKER).write_text(
            "A sample world of python -m cioctasks.sampledb: create --force may delete this "
            "folder and build it again.\n", encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot use the folder {directory}: "
                          f"{error.strerror or error}") from None


def create(directory, sites=2, scale="small", seed=1, force=False, now=None, getinvolved=()):
    """Write a whole sample world into ``directory`` and return its World.

    ``getinvolved``: names of sites built as CIOC databases from before GetInvolved was
    removed (with its tables, columns and procedures). Raise ConfigError for a bad scale,
    number of sites or site name, and when ``directory`` is a file, or not empty and
    either not a sample world or ``force`` not set: only a sample world is ever deleted.
    """
    if scale not in generate.SCALES:
        raise ConfigError(f"unknown scale {scale!r}: {', '.join(generate.SCALES)}")
    if not 1 <= sites <= 50:
        raise ConfigError("--sites must be between 1 and 50")
    directory = Path(directory).resolve()
    unknown = set(getinvolved) - set(site_names(sites))
    if unknown:
        raise ConfigError(f"--getinvolved {', '.join(sorted(unknown))}: not a site of this "
                          f"world ({', '.join(site_names(sites))})")
    prepare_folder(directory, force)
    now = (now or datetime.datetime.now()).replace(microsecond=0)
    world = World(directory, site_names(sites), scale, seed)
    for folder in ("tools", "state", "mail", "databases"):
        (directory / folder).mkdir(parents=True, exist_ok=True)
    for number, site in enumerate(world.sites):
        rng = random.Random(f"{seed}:{site}")
        build_database(world.database(site), site, scale, rng, now,
                       getinvolved=site in getinvolved)
        write_udl(world.udl(site), world.database(site))
        write_downloads(directory / "VirtualServers" / site / "download", site, rng, now)
        write_logs(directory / "logs" / site, site, rng, now)
    lines = [f"{key}={value}" for key, value in world.environ().items()]
    world.env_file.write_text(ENV_HEADER + "\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return world
