"""Build each member's download of its records (CIC and VOL), or with -s its yearly stats,
as a database file packed in a password archive in the site's download folder.

Nothing is copied by default. A table goes into a member's download only when a rule keeps
the rows of that member (a member column such as MemberID or MemberID_Cache, a record or
opportunity number, or foreign keys to a table so kept) or when config/downloads.py lists it
as a shared reference table. User and credential tables are never copied, nor any column
whose name looks like a password, hash, salt, token, key or login, whatever the
configuration says. --plan prints the decision for every table and flavour.

For each member using a flavour (UseCIC, UseVOL): copy the tables into a new database file
in the work folder, pack it with the member's password, read the archive back, then replace
<site>/download/<DB>CIC<MemberID>.zip (or VOL, or <DB>Stats<YYYY>CIC<MemberID>.zip), the
file the web app serves as downloads/<DB>CIC.zip. A download that fails at any step leaves
the previous one in place. Files of earlier versions the web app never serves
(<DB>CIC<MemberID>.sqlite or .7z) are removed, and so is the file of a flavour the member
no longer uses, which the web app refuses to serve. A full disk fails that download in one
line naming the file or folder; the other members and databases go on.

An archive is written private (0600) under a temporary name, .<file>.<pid>.tmp, and gets
its published mode only when whole. What a killed run left (such temporary archives of a
process that is gone, database files in the work folder) is removed by the next run.
"""

import argparse
import sys
from pathlib import Path

import cioctasks
from cioctasks import files

# The sibling modules (dbcopy, rules) and the archive library are imported where they are
# used, so that --help and a run that finds the lock held start fast.
sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "config" / "downloads.py"
REQUIRED = ("dbinfo", "default_flavours", "old_sites", "member_columns", "record_numbers",
            "conditions", "foreign_keys", "other_flavour_tables", "not_copied",
            "shared_tables", "skip_columns", "stats_tables")

def load_config(path):
    """Read a downloads configuration file; raise ConfigError naming what is wrong."""
    import runpy

    try:
        values = runpy.run_path(str(path))
    except FileNotFoundError:
        raise cioctasks.ConfigError(f"no downloads configuration {path}") from None
    except SystemExit as exit:  # sys.exit() or exit() in the file: its code is no exit code of ours
        raise cioctasks.ConfigError(
            f"{path}: it calls sys.exit({exit.code!r}) while it is read"[:300]) from None
    except Exception as error:
        raise cioctasks.ConfigError(
            f"{path}: {error.__class__.__name__}: {error}"[:300]) from None
    if values.get("archive_format", "zip") != "zip":
        raise cioctasks.ConfigError(
            f"{path}: archive_format {values['archive_format']!r}: the web app serves only "
            "the .zip download (remove archive_format)")
    missing = [name for name in REQUIRED if name not in values]
    if missing:
        raise cioctasks.ConfigError(
            f"{path}: missing {', '.join(missing)} (a configuration from before the "
            "download rules: start again from config/downloads.py)")
    for pattern, condition in values["conditions"].items():
        if "{MemberID}" not in condition:
            raise cioctasks.ConfigError(
                f"{path}: the condition for {pattern} does not use {{MemberID}}, so it "
                "cannot keep one member's rows")
    return values


# -- the downloads -------------------------------------------------------------------------

def download_name(site, flavour, member_id, stats, year):
    return f"{site}Stats{year}{flavour}{member_id}" if stats else f"{site}{flavour}{member_id}"


#: Forms of a member download that earlier versions published and the web app never serves.
STALE_SUFFIXES = (".sqlite", ".7z")
#: The files of the work folder: a download's database (and a journal SQLite may leave).
WORK_SUFFIXES = (".sqlite", ".sqlite-journal")


def password_for(config, site, member, flavour):
    """The member's download password, else the site's from ``old_sites``; a password of
    spaces only protects nothing and counts as none."""
    for password in (member.get(f"DownloadPassword{flavour}"),
                     config["old_sites"].get(site, {}).get(flavour)):
        if password and str(password).strip():
            return password
    return None


def remove_files(context, folder, names):
    """Delete the files ``names`` of ``folder`` that exist; return the names removed."""
    removed = []
    for name in names:
        path = folder / name
        if not (path.exists() or path.is_symlink()):
            continue
        if context.dry_run:
            context.log.info("(dry run) would remove %s", path)
        else:
            try:
                files.safe_delete(path, folder)
            except (ValueError, OSError) as error:
                context.problem(f"cannot remove {path}: {error}")
                continue
            context.log.info("removed %s", path)
        removed.append(name)
    return removed


def work_folder(context, site):
    """Where a site's download databases are built, before they are packed."""
    return Path(context.settings.state_dir) / "downloads" / site


def remove_leftovers(context, site, folder, work):
    """Remove what killed runs left behind: in the download folder, the temporary archives
    (``.<DB>CIC<MemberID>.zip.<pid>.tmp``) of processes that are gone; in the work folder,
    every database file, since only a run holding this task's lock (this one) writes
    there. Nothing else is touched."""
    import re

    ours = re.compile(re.escape(site) + r".+\.(?:zip|7z)", re.IGNORECASE)
    files.remove_leftovers(folder, ours, context.log, context.dry_run)
    try:
        stale = sorted(p for p in work.iterdir() if p.name.endswith(WORK_SUFFIXES))
    except OSError:
        return  # no work folder yet
    for path in stale:
        if context.dry_run:
            context.log.info("(dry run) would remove %s, left by a killed run", path)
            continue
        try:
            files.safe_delete(path, work)
        except (ValueError, OSError) as error:
            context.log.warning("cannot remove %s, left by a killed run: %s", path, error)
            continue
        context.log.info("removed %s, left by a killed run", path)


def build_download(context, source, plan, site, member, flavour, stats, year, described):
    """Build, pack and publish one member's download as the .zip the web app serves;
    return a short description."""
    import dbcopy
    import rules
    from cioctasks import archive

    member_id = member["MemberID"]
    name = download_name(site, flavour, member_id, stats, year)
    folder = Path(context.settings.virtualservers_base) / site / "download"
    # Whatever DownloadUncompressed says: it only changes the web app's exports.
    stale = remove_files(context, folder, [name + suffix for suffix in STALE_SUFFIXES])
    removed = f"; removed {', '.join(stale)}" if stale else ""
    password = password_for(context.prepared, site, member, flavour)
    if not password:
        raise cioctasks.TaskError(f"member {member_id}: no {flavour} download password; "
                                  f"the previous download is left in place{removed}")
    copies = rules.copy_plan(plan, member_id, year)
    if context.dry_run:
        return f"{name}.zip: would copy {len(copies)} tables{removed}"
    work = work_folder(context, site)
    work.mkdir(parents=True, exist_ok=True)
    database_file = work / f"{name}.sqlite"
    try:
        target = dbcopy.SqliteTarget(database_file)
        try:
            counts = dbcopy.copy_database(source, target, copies, context.log, described)
        finally:
            target.close()
        size = archive.pack(folder / f"{name}.zip", [database_file], password,
                            archive_format="zip")
    finally:
        if database_file.exists():
            database_file.unlink()
    return (f"{name}.zip: {len(counts)} tables, {sum(counts.values())} rows, "
            f"{size} bytes{removed}")


def prepare(context):
    """Read the configuration once, before the databases: a bad one is exit 2, one line."""
    return load_config(context.args.config)


def flavours_of(config, site):
    """The flavours of a database, or None when the configuration skips it."""
    info = next((i for i in config["dbinfo"] if i.dbname.lower() == site.lower()), None)
    if info is not None and info.skip:
        return None
    return info.flavours if info else config["default_flavours"]


def uses(member, flavour):
    """True if the member uses the module (UseCIC, UseVOL): the web app serves a member's
    download of a flavour only then."""
    return bool(member.get(f"Use{flavour}", True))


def read_members(source, wanted):
    members = source.query("SELECT * FROM STP_Member ORDER BY MemberID")
    if wanted:
        members = [m for m in members if m["MemberID"] in wanted]
        if not members:
            raise cioctasks.TaskError(f"no member {', '.join(map(str, wanted))}")
    return members


def show_plan(context, site, flavours, year):
    """Print what each flavour's download copies from ``site``, table by table, and which
    member downloads are built; return the summary."""
    import dbcopy
    import rules

    args, config = context.args, context.prepared
    with context.connect(site) as source:
        members = read_members(source, args.member)
        schema = rules.Schema.read(source, dbcopy.list_tables(source), config)
    lines = []
    member_id = args.member[0] if len(args.member) == 1 else None
    scopes = rules.compute_scopes(config, schema)
    counts = []
    for flavour in flavours:
        decisions = (rules.stats_plan(config, schema, flavour) if args.stats
                     else rules.record_plan(config, schema, flavour, scopes))
        for decision in decisions:
            if member_id is not None and decision.condition:
                decision.condition = rules.fill(decision.condition, member_id, year)
            elif decision.condition:
                decision.condition = decision.condition.replace(
                    "{Year}", str(year)).replace("{NextYear}", str(year + 1))
            lines.append(f"{site} {decision.line()}")
        copied = sum(d.copied for d in decisions)
        counts.append(f"{flavour} {copied} copied, {len(decisions) - copied} not")
        for member in members:
            name = download_name(site, flavour, member["MemberID"], args.stats, year)
            if uses(member, flavour):
                link = download_name(site, flavour, "", args.stats, year)
                lines.append(f"{site} {flavour} member {member['MemberID']}: download/{name}.zip "
                             f"(the web app's downloads/{link}.zip)")
            else:
                lines.append(f"{site} {flavour} member {member['MemberID']}: no download: "
                             f"Use{flavour} is off (download/{name}.zip is removed)")
    print("\n".join(lines), flush=True)
    return f"{len(schema.columns)} tables: " + "; ".join(counts)


def task(context, site):
    import dbcopy
    import rules

    args = context.args
    config = context.prepared
    flavours = flavours_of(config, site)
    if flavours is None:
        if args.plan:
            print(f"{site}: skipped by the downloads configuration", flush=True)
        return "skipped by the downloads configuration"
    import datetime

    year = args.year or datetime.date.today().year
    if args.plan:
        return show_plan(context, site, flavours, year)
    built = 0
    folder = Path(context.settings.virtualservers_base) / site / "download"
    remove_leftovers(context, site, folder, work_folder(context, site))
    with context.connect(site) as source:
        members = read_members(source, args.member)
        schema = rules.Schema.read(source, dbcopy.list_tables(source), config)
        scopes = rules.compute_scopes(config, schema)
        plans = {flavour: rules.stats_plan(config, schema, flavour) if args.stats
                 else rules.record_plan(config, schema, flavour, scopes) for flavour in flavours}
        described = {}
        for member in members:
            for flavour in flavours:
                member_id = member["MemberID"]
                if not uses(member, flavour):
                    name = download_name(site, flavour, member_id, args.stats, year)
                    removed = remove_files(context, folder, [
                        name + suffix for suffix in (".zip", *STALE_SUFFIXES)])
                    context.log.info("%s: Use%s is off: no download%s", name, flavour,
                                     f"; removed {', '.join(removed)}" if removed else "")
                    continue
                try:
                    done = build_download(context, source, plans[flavour], site, member,
                                          flavour, args.stats, year, described)
                except (cioctasks.TaskError, OSError) as error:
                    context.problem(f"{site} member {member_id} {flavour}: {error}")
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
    parser.add_argument("--plan", action="store_true",
                        help="print, for every table and flavour, what the download copies "
                             "(rule, row condition, columns left out) or why not; build nothing")


def planning(argv):
    """True when the command line asks for --plan (argparse's abbreviations included):
    the plan is a read-only audit, run without the lock or run history."""
    # A fixed width: argparse's own formatter would import shutil to ask the terminal's.
    parser = argparse.ArgumentParser(
        add_help=False, formatter_class=lambda prog: argparse.HelpFormatter(prog, width=80))
    parser.add_argument("--plan", action="store_true")
    try:
        return parser.parse_known_args(argv)[0].plan
    except SystemExit:  # an ambiguous abbreviation: the real parser reports it
        return False


if __name__ == "__main__":
    # The stats downloads are their own task in the run history, status and pings, but
    # share the record downloads' lock: both build in the same work folder. Building a
    # download is Python work (rows, SQLite, zip): with -j each database has its process.
    sys.exit(cioctasks.run(
        task, add_arguments, per_database=True, prepare=prepare, name="newdownloads",
        name_of=lambda args: "newdownloads_stats" if args.stats else "newdownloads",
        lock="newdownloads", command=planning(sys.argv[1:]), parallel="processes"))
