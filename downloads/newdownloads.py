"""Build each member's download of its records (CIC and VOL), or with -s its yearly stats,
as a database file packed in a password archive in the site's download folder.

For each member using a flavour: copy the configured tables (config/downloads.py) into a new
database file in the work folder, pack it with the member's password, read the archive
back with the password, then replace <site>/download/<DB>CIC<MemberID>.zip (or VOL, or
<DB>Stats<YYYY>CIC<MemberID>.zip) atomically. A member set to DownloadUncompressed gets the
database file itself. A download that fails at any step leaves the previous one in place.
"""

import datetime
import fnmatch
import runpy
import sys
from pathlib import Path

import cioctasks
from cioctasks import archive, files

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dbcopy  # noqa: E402  (a sibling module of this script)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "config" / "downloads.py"
REQUIRED = ("dbinfo", "default_flavours", "archive_format", "old_sites", "skip_tables",
            "skip_columns", "stats_tables", "conditions")


def load_config(path):
    """Read a downloads configuration file; raise ConfigError naming what is wrong."""
    try:
        values = runpy.run_path(str(path))
    except FileNotFoundError:
        raise cioctasks.ConfigError(f"no downloads configuration {path}") from None
    except Exception as error:
        raise cioctasks.ConfigError(
            f"{path}: {error.__class__.__name__}: {error}"[:300]) from None
    missing = [name for name in REQUIRED if name not in values]
    if missing:
        raise cioctasks.ConfigError(f"{path}: missing {', '.join(missing)}")
    if values["archive_format"] not in archive.FORMATS:
        raise cioctasks.ConfigError(f"{path}: archive_format must be zip or 7z")
    return values


class Copier:
    """What a condition function is given: the source and the member being copied."""

    def __init__(self, source, member_id, flavour):
        self.source = source
        self.member_id = member_id
        self.flavour = flavour
        self._tables = {}

    def describe(self, table):
        if table not in self._tables:
            self._tables[table] = dbcopy.describe(self.source, table)
        return self._tables[table]

    def columns(self, table):
        return [c.name for c in self.describe(table).columns]


def condition_for(config, copier, tables, table, year):
    for pattern, condition in config["conditions"]:
        if fnmatch.fnmatchcase(table, pattern):
            if callable(condition):
                condition = condition(copier, tables, table)
            if condition is None:
                return None
            return condition.format(MemberID=int(copier.member_id), Year=int(year),
                                    NextYear=int(year) + 1)
    return None


def plan_for(config, copier, tables, flavour, stats, year):
    """Return [(table, condition, skip_columns)] for one member's download."""
    if stats:
        chosen = [t for t in config["stats_tables"].get(flavour, []) if t in tables]
    else:
        skip = config["skip_tables"].get(flavour, [])
        chosen = [t for t in tables if not any(fnmatch.fnmatchcase(t, p) for p in skip)]
    plan = []
    for table in chosen:
        columns = [pattern for table_pattern, patterns in
                   config["skip_columns"].get(flavour, {}).items()
                   if fnmatch.fnmatchcase(table, table_pattern) for pattern in patterns]
        plan.append((table, condition_for(config, copier, tables, table, year), tuple(columns)))
    return plan


def download_name(site, flavour, member_id, stats, year):
    return f"{site}Stats{year}{flavour}{member_id}" if stats else f"{site}{flavour}{member_id}"


def password_for(config, site, member, flavour):
    """The member's download password, else the site's from ``old_sites``; a password of
    spaces only protects nothing and counts as none."""
    for password in (member.get(f"DownloadPassword{flavour}"),
                     config["old_sites"].get(site, {}).get(flavour)):
        if password and str(password).strip():
            return password
    return None


def build_download(context, config, source, tables, site, member, flavour, stats, year):
    """Build, pack and publish one member's download; return a short description."""
    member_id = member["MemberID"]
    name = download_name(site, flavour, member_id, stats, year)
    folder = Path(context.settings.virtualservers_base) / site / "download"
    uncompressed = bool(member.get("DownloadUncompressed"))
    password = None if uncompressed else password_for(config, site, member, flavour)
    if not uncompressed and not password:
        raise cioctasks.TaskError(f"member {member_id}: no {flavour} download password; "
                                  "the previous download is left in place")
    copier = Copier(source, member_id, flavour)
    plan = plan_for(config, copier, tables, flavour, stats, year)
    if context.dry_run:
        return f"{name}: would copy {len(plan)} tables"
    work = Path(context.settings.state_dir) / "downloads" / site
    work.mkdir(parents=True, exist_ok=True)
    database_file = work / f"{name}.sqlite"
    try:
        target = dbcopy.SqliteTarget(database_file)
        try:
            counts = dbcopy.copy_database(source, target, plan, context.log)
        finally:
            target.close()
        if uncompressed:
            files.publish(database_file, folder / f"{name}.sqlite")
            size = (folder / f"{name}.sqlite").stat().st_size
        else:
            suffix = "." + config["archive_format"]
            size = archive.pack(folder / f"{name}{suffix}", [database_file], password)
    finally:
        if database_file.exists():
            database_file.unlink()
    return f"{name}: {len(counts)} tables, {sum(counts.values())} rows, {size} bytes"


def prepare(context):
    """Read the configuration once, before the databases: a bad one is exit 2, one line."""
    return load_config(context.args.config)


def task(context, site):
    args = context.args
    config = context.prepared
    info = next((i for i in config["dbinfo"] if i.dbname.lower() == site.lower()), None)
    if info is not None and info.skip:
        return "skipped by the downloads configuration"
    flavours = info.flavours if info else config["default_flavours"]
    year = args.year or datetime.date.today().year
    built = 0
    with context.connect(site) as source:
        members = source.query("SELECT * FROM STP_Member ORDER BY MemberID")
        if args.member:
            members = [m for m in members if m["MemberID"] in args.member]
            if not members:
                raise cioctasks.TaskError(f"no member {', '.join(map(str, args.member))}")
        tables = dbcopy.list_tables(source)
        for member in members:
            for flavour in flavours:
                if flavour == "VOL" and not member.get("UseVOL", True):
                    continue
                try:
                    done = build_download(context, config, source, tables, site, member,
                                          flavour, args.stats, year)
                except (cioctasks.TaskError, OSError) as error:
                    context.problem(f"{site} member {member['MemberID']} {flavour}: {error}")
                    continue
                context.log.info("%s", done)
                built += 1
    kind = f"stats {year}" if args.stats else "record"
    verb = "would build" if context.dry_run else "built"
    return f"{verb} {built} {kind} downloads"


def add_arguments(parser):
    parser.add_argument("-s", "--stats", action="store_true",
                        help="the yearly stats downloads instead of the record downloads")
    parser.add_argument("--year", type=cioctasks.number(1990, 2100), help="the year of the stats (default this year)")
    parser.add_argument("--member", type=cioctasks.number(1, 2**31 - 1), action="append", default=[], metavar="ID",
                        help="only this member (repeatable)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                        help="the downloads configuration (default config/downloads.py)")


if __name__ == "__main__":
    # The stats downloads are their own task in the run history, status and pings, but
    # share the record downloads' lock: both build in the same work folder.
    sys.exit(cioctasks.run(
        task, add_arguments, per_database=True, prepare=prepare, name="newdownloads",
        name_of=lambda args: "newdownloads_stats" if args.stats else "newdownloads",
        lock="newdownloads"))
