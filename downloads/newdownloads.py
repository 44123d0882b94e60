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
no longer uses, which the web app refuses to serve.
"""

import argparse
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
REQUIRED = ("dbinfo", "default_flavours", "old_sites", "member_columns", "record_numbers",
            "conditions", "foreign_keys", "other_flavour_tables", "not_copied",
            "shared_tables", "skip_columns", "stats_tables")

#: Tables never copied, whatever the configuration says: the accounts of staff and of the
#: public (CIOC's volunteer profiles), their credentials, and the machines that log in.
USER_AND_CREDENTIAL_TABLES = (
    "GBL_Users", "GBL_Users_*", "VOL_Profile", "VOL_Profile_*", "*APICred*", "*APIKey*",
    "*Credential*", "*Password*", "CIC_Offline_Machines", "CIC_SecurityLevel_Machine",
)
#: A column whose name holds one of these (any case) is never copied, whatever the
#: configuration says: DownloadPasswordCIC, UPDATE_PASSWORD, PasswordHash(Salt), FBKEY
#: (the record's feedback key), SingleLoginKey, LoginKey, UnsubscribeToken,
#: GoogleMapsAPIKeyCIC, ... Flags named after them (UPDATE_PASSWORD_REQUIRED,
#: LoginRetryLimit) go too: losing a flag is better than guessing wrong.
SECRET_WORDS = ("password", "passwd", "pwd", "hash", "salt", "token", "secret", "key",
                "login", "cred")
#: Words that hold a secret word without being secrets: search keywords (BSrchKeywords,
#: KeywordType) and accreditation (ACCREDITED).
NOT_SECRET_WORDS = ("keyword", "accredit")
#: How many foreign keys a table may be away from a table with its own member rule.
MAX_DEPTH = 4
#: What --plan adds to the rule of a table whose NULL member (or key) rows are kept.
SHARED_ROWS = "with rows shared by all members"
#: The reason given for a table no rule and no list decides: nothing copies it.
NO_RULE = "nothing ties its rows to a member and it is not a shared reference table"


def is_secret_column(name):
    """True if a column's name looks like it holds a password, hash, salt, token, key or
    login."""
    lowered = name.lower()
    for word in NOT_SECRET_WORDS:
        lowered = lowered.replace(word, " ")
    return any(word in lowered for word in SECRET_WORDS)


def is_user_or_credential_table(name):
    return _matches(name, USER_AND_CREDENTIAL_TABLES)


def _matches(name, patterns):
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def load_config(path):
    """Read a downloads configuration file; raise ConfigError naming what is wrong."""
    try:
        values = runpy.run_path(str(path))
    except FileNotFoundError:
        raise cioctasks.ConfigError(f"no downloads configuration {path}") from None
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


# -- the rules ----------------------------------------------------------------------------

class Scope:
    """How the rows of one member are kept in a table: ``condition`` (SQL over the table's
    own columns, with ``{MemberID}``), the ``rule`` that gave it, and ``keys``: columns
    whose condition is exactly ``column IN (subquery)``, so that a table referring to one
    of them can use the subquery itself."""

    def __init__(self, kind, rule, condition, keys=None, strict=True):
        self.kind = kind  # "configured", "member", "number" or "foreign key"
        self.rule = rule
        self.condition = condition
        self.keys = keys or {}
        self.strict = strict  # False: keeps rows shared by every member too


class Decision:
    """What happens to one table in one flavour's download."""

    def __init__(self, table, flavour, copied, rule, condition=None, stripped=()):
        self.table = table
        self.flavour = flavour
        self.copied = copied
        self.rule = rule  # how its rows are kept, or why it is not copied
        self.condition = condition  # None for a table copied whole
        self.stripped = tuple(stripped)

    def line(self):
        if not self.copied:
            return f"{self.flavour} {self.table}: not copied: {self.rule}"
        where = f"WHERE {self.condition}" if self.condition else "every row"
        without = f" without {', '.join(self.stripped)}" if self.stripped else ""
        return f"{self.flavour} {self.table}: copied ({self.rule}){without}: {where}"


def quote(name):
    return dbcopy.quote(name)


class Schema:
    """The tables of a source database, their columns (with nullability) and the foreign
    keys between them, from the catalog and the facts of CIOC's schema."""

    def __init__(self, columns, foreign_keys):
        self.columns = columns  # {table: [dbcopy.Column]}
        self.foreign_keys = foreign_keys  # {table: [(columns, parent, referenced columns)]}

    def names(self, table):
        return [c.name for c in self.columns[table]]

    def nullable(self, table, column):
        return next(c.nullable for c in self.columns[table] if c.name == column)

    @classmethod
    def read(cls, source, tables, config):
        """The schema present in ``source``: its tables (``tables``) and columns from the
        catalog; foreign keys from cioc_schema.json and the configuration's
        ``foreign_keys``, where both tables and all their columns exist."""
        return cls.build(dbcopy.list_columns(source, tables), config)

    @classmethod
    def build(cls, columns, config):
        from cioctasks.sampledb import schema as facts

        known = facts.tables()
        # A column is NOT NULL when the database or CIOC's schema says so (the SQLite
        # driver reports every INTEGER PRIMARY KEY as nullable).
        for table, table_columns in columns.items():
            strict = {c["name"] for c in known.get(table, {}).get("columns", ())
                      if c.get("null") is False}
            for column in table_columns:
                column.nullable = column.nullable and column.name not in strict
        declared = [(table, fk["columns"], fk["table"], fk["ref"])
                    for table, facts_table in known.items()
                    for fk in facts_table.get("foreign_keys") or ()]
        declared += [(table, list(own), parent, list(ref))
                     for table, own, parent, ref in config["foreign_keys"]]
        foreign_keys = {}
        for table, own, parent, ref in declared:
            if table not in columns or parent not in columns or parent == table:
                continue
            present = {c.name for c in columns[table]}
            parent_present = {c.name for c in columns[parent]}
            if not (set(own) <= present and set(ref) <= parent_present):
                continue
            key = (tuple(own), parent, tuple(ref))
            if key not in foreign_keys.setdefault(table, []):
                foreign_keys[table].append(key)
        return cls(columns, foreign_keys)


def _own_scope(config, schema, table):
    """The scope a table has from its own columns or the configuration, or None."""
    for pattern, condition in config["conditions"].items():
        if fnmatch.fnmatchcase(table, pattern):
            return Scope("configured", f"configured for {pattern}", condition)
    names = schema.names(table)
    for column in config["member_columns"]:
        if column in names:
            condition = f"{quote(column)} = {{MemberID}}"
            if schema.nullable(table, column):
                # NULL: a value CIOC shares with every member (a checklist entry, a
                # template, a field); each member's records use those too.
                return Scope("member", f"member column {column}; {SHARED_ROWS}",
                             f"({condition} OR {quote(column)} IS NULL)", strict=False)
            return Scope("member", f"member column {column}", condition)
    for column, subquery in config["record_numbers"].items():
        if column in names:
            return Scope("number", f"record number {column}",
                         f"{quote(column)} IN ({subquery})", keys={column: subquery})
    return None


def compute_scopes(config, schema):
    """Return {table: Scope} for every table whose rows can be kept to one member.

    A configured condition or a member column decides alone: the row says whose it is.
    A table with the member's record or opportunity number also needs each of its foreign
    keys to tables with a rule to be NULL or lead to a row of the member (or a row shared
    by all). Any other table is kept through its foreign keys (at most MAX_DEPTH keys away
    from a member column or number): each is NULL or leads to a row of the member or a
    shared row, and at least one leads to a row of the member's own. A row that joins one
    member's rows to another member's is nobody's to take.
    """
    owners = {}
    candidates = [t for t in sorted(schema.columns) if not is_user_or_credential_table(t)]
    for table in candidates:
        scope = _own_scope(config, schema, table)
        if scope is not None:
            owners[table] = scope
    depth_of = {table: 0 for table in owners}
    for depth in range(1, MAX_DEPTH + 1):
        reached = [t for t in candidates if t not in depth_of and any(
            depth_of.get(parent, MAX_DEPTH + 1) < depth
            for _, parent, _ in schema.foreign_keys.get(t, ()))]
        if not reached:
            break
        for table in reached:
            depth_of[table] = depth
    building = set()

    def owner(table):
        """Whose rows: the Scope saying which rows of ``table`` are the member's."""
        if table in owners:
            return owners[table]
        if table in building:
            return None  # a cycle of foreign keys: that key does not scope
        building.add(table)
        try:
            scope = _tied_scope(schema, table, None, depth_of, owner)
        finally:
            building.discard(table)
        if scope is not None:
            owners[table] = scope
        return scope

    scopes = {}
    for table in sorted(depth_of):
        scope = owner(table)
        if scope is not None and scope.kind == "number":
            scope = _tied_scope(schema, table, scope, depth_of, owner)
        if scope is not None:
            scopes[table] = scope
    return scopes


def _tied_scope(schema, table, number_scope, depth_of, owner):
    """The Scope of a table without a member column: its number's (``number_scope``, or
    None) and its foreign keys' to tables with a rule; None when it has neither."""
    parts, strict_ties, other_ties, via = [], [], [], []
    if number_scope is not None:
        parts.append(number_scope.condition)
    keys = dict(number_scope.keys) if number_scope is not None else {}
    for own, parent, ref in schema.foreign_keys.get(table, ()):
        if parent not in depth_of:
            continue
        parent_scope = owner(parent)
        if parent_scope is None:
            continue
        test = _reference(table, own, parent, ref, parent_scope)
        nullable = [c for c in own if schema.nullable(table, c)]
        tie = " AND ".join(f"{quote(c)} IS NOT NULL" for c in nullable) or "1 = 1"
        (strict_ties if parent_scope.strict else other_ties).append(tie)
        if nullable:
            test = "(" + " OR ".join(f"{quote(c)} IS NULL" for c in nullable) + f" OR {test})"
        elif len(own) == 1 and not keys:
            keys[own[0]] = _subquery(parent, ref[0], parent_scope)
        if test not in parts:
            parts.append(test)
            via.append(parent)
    if not parts:
        return None
    strict = number_scope is not None or bool(strict_ties)
    ties = strict_ties or other_ties
    if number_scope is None and "1 = 1" not in ties:
        # every key may be NULL: one at least must lead to the member's (or a shared) row
        parts.append("(" + " OR ".join(f"({t})" for t in ties) + ")")
    rules = [number_scope.rule] if number_scope is not None else []
    if via:
        rules.append("foreign key to " + ", ".join(dict.fromkeys(via)))
    rule = " and ".join(rules) + ("" if strict else f"; {SHARED_ROWS}")
    return Scope("foreign key", rule, " AND ".join(parts), keys if len(parts) == 1 else {},
                 strict)


def _subquery(parent, column, scope):
    """SELECT of a parent's column over the parent's rows of the member."""
    if column in scope.keys:
        return scope.keys[column]
    return f"SELECT {quote(column)} FROM {quote(parent)} WHERE {scope.condition}"


def _reference(table, own, parent, ref, scope):
    """The condition that a row's foreign key ``own`` leads to a kept row of ``parent``."""
    if len(own) == 1:
        return f"{quote(own[0])} IN ({_subquery(parent, ref[0], scope)})"
    for column, referenced in zip(own, ref):
        if referenced in scope.keys:  # the parent is kept by that column alone
            return f"{quote(column)} IN ({scope.keys[referenced]})"
    joins = " AND ".join(f"{quote(parent)}.{quote(r)} = {quote(table)}.{quote(c)}"
                         for c, r in zip(own, ref))
    return f"EXISTS (SELECT 1 FROM {quote(parent)} WHERE {joins} AND ({scope.condition}))"


def decide(config, schema, scopes, table, flavour):
    """The Decision for one table in one flavour's record download."""
    if is_user_or_credential_table(table):
        return Decision(table, flavour, False, "a user or credential table: never copied")
    other = config["other_flavour_tables"].get(flavour, ())
    if _matches(table, other):
        return Decision(table, flavour, False, f"not part of the {flavour} download")
    for pattern, reason in config["not_copied"]:
        if fnmatch.fnmatchcase(table, pattern):
            return Decision(table, flavour, False, reason)
    if table in scopes:
        scope = scopes[table]
        rule, condition = scope.rule, scope.condition
    elif _matches(table, config["shared_tables"]):
        rule, condition = "shared reference table", None
    else:
        return Decision(table, flavour, False, NO_RULE)
    stripped = stripped_columns(config, schema.names(table), table, flavour)
    if len(stripped) == len(schema.columns[table]):
        return Decision(table, flavour, False, "every column looks secret")
    return Decision(table, flavour, True, rule, condition, stripped)


def stripped_columns(config, names, table, flavour):
    """The columns left out of a table: secret-looking ones, and the configuration's."""
    patterns = [pattern for table_pattern, column_patterns in
                config["skip_columns"].get(flavour, {}).items()
                if fnmatch.fnmatchcase(table, table_pattern) for pattern in column_patterns]
    return [n for n in names if is_secret_column(n) or _matches(n, patterns)]


def record_plan(config, schema, flavour, scopes=None):
    """Return the Decision of every table of ``schema`` for one flavour, by name."""
    scopes = compute_scopes(config, schema) if scopes is None else scopes
    return [decide(config, schema, scopes, table, flavour) for table in sorted(schema.columns)]


def stats_plan(config, schema, flavour):
    """The Decisions of the yearly stats download: the configured tables, that year's rows
    of the member, without secret-looking columns."""
    plan = []
    for table, condition in config["stats_tables"].get(flavour, {}).items():
        if table not in schema.columns:
            continue
        stripped = stripped_columns(config, schema.names(table), table, flavour)
        plan.append(Decision(table, flavour, True, "stats of the year", condition, stripped))
    return plan


def fill(condition, member_id, year):
    """A condition with the member and the year put in."""
    if condition is None:
        return None
    for name, value in (("{MemberID}", member_id), ("{Year}", year),
                        ("{NextYear}", int(year) + 1)):
        condition = condition.replace(name, str(int(value)))
    return condition


def copy_plan(decisions, member_id, year):
    """[(table, condition, skipped columns)] for dbcopy.copy_database."""
    return [(d.table, fill(d.condition, member_id, year), d.stripped)
            for d in decisions if d.copied]


# -- the downloads -------------------------------------------------------------------------

def download_name(site, flavour, member_id, stats, year):
    return f"{site}Stats{year}{flavour}{member_id}" if stats else f"{site}{flavour}{member_id}"


#: Forms of a member download that earlier versions published and the web app never serves.
STALE_SUFFIXES = (".sqlite", ".7z")


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


def build_download(context, source, plan, site, member, flavour, stats, year, described):
    """Build, pack and publish one member's download as the .zip the web app serves;
    return a short description."""
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
    copies = copy_plan(plan, member_id, year)
    if context.dry_run:
        return f"{name}.zip: would copy {len(copies)} tables{removed}"
    work = Path(context.settings.state_dir) / "downloads" / site
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
    args, config = context.args, context.prepared
    with context.connect(site) as source:
        members = read_members(source, args.member)
        schema = Schema.read(source, dbcopy.list_tables(source), config)
    lines = []
    member_id = args.member[0] if len(args.member) == 1 else None
    scopes = compute_scopes(config, schema)
    counts = []
    for flavour in flavours:
        decisions = (stats_plan(config, schema, flavour) if args.stats
                     else record_plan(config, schema, flavour, scopes))
        for decision in decisions:
            if member_id is not None and decision.condition:
                decision.condition = fill(decision.condition, member_id, year)
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
    args = context.args
    config = context.prepared
    flavours = flavours_of(config, site)
    if flavours is None:
        if args.plan:
            print(f"{site}: skipped by the downloads configuration", flush=True)
        return "skipped by the downloads configuration"
    year = args.year or datetime.date.today().year
    if args.plan:
        return show_plan(context, site, flavours, year)
    built = 0
    folder = Path(context.settings.virtualservers_base) / site / "download"
    with context.connect(site) as source:
        members = read_members(source, args.member)
        schema = Schema.read(source, dbcopy.list_tables(source), config)
        scopes = compute_scopes(config, schema)
        plans = {flavour: stats_plan(config, schema, flavour) if args.stats
                 else record_plan(config, schema, flavour, scopes) for flavour in flavours}
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
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--plan", action="store_true")
    try:
        return parser.parse_known_args(argv)[0].plan
    except SystemExit:  # an ambiguous abbreviation: the real parser reports it
        return False


if __name__ == "__main__":
    # The stats downloads are their own task in the run history, status and pings, but
    # share the record downloads' lock: both build in the same work folder.
    sys.exit(cioctasks.run(
        task, add_arguments, per_database=True, prepare=prepare, name="newdownloads",
        name_of=lambda args: "newdownloads_stats" if args.stats else "newdownloads",
        lock="newdownloads", command=planning(sys.argv[1:])))
