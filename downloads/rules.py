"""The rules of a member's download: which tables go in, which rows, without which columns.

Nothing is copied by default (see config/downloads.py for the order of the rules). Given
the configuration and the schema of the source database, ``record_plan`` decides every
table for one flavour: copied (with the rule, the row condition with ``{MemberID}`` and the
columns stripped) or not copied, and why. User and credential tables and secret-looking
columns are refused here, whatever the configuration says.
"""

import fnmatch
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dbcopy  # noqa: E402  (a sibling module)

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
