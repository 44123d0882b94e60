"""Update the JSON map of domain names the CIOC offline tools use to find a site's
secure host: {secure_host: [every host name of the site]}.

Across the selected databases, sp_STP_OfflineTools_Domains gives each member's names. Per
(member, SecondaryName) group, the secure host is the first name exactly one label under
the wildcard-certificate domain (CIOC_OFFLINE_TOOLS_SECURE_DOMAIN, default cioc.ca); the
list holds every name of the group, lowercased, deduplicated, sorted. A group with no such
name is reported and left out; a name claimed by two groups is reported, not guessed. The
file is written atomically, only when its content changes. Databases not read this run
(not selected with -a, or failing) keep their entries.
"""

import re
import sys
from pathlib import Path

import cioctasks

HOST = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$")
OWNERS = "hosts"  # watermark key prefix: which secure hosts each database contributed


def is_secure_name(host, secure_domain):
    """True if ``host`` is exactly one label under ``secure_domain``."""
    suffix = "." + secure_domain
    return host.endswith(suffix) and "." not in host[: -len(suffix)] and len(host) > len(suffix)


def build_map(groups, secure_domain):
    """Given {(database, MemberID, SecondaryName): [domain names in procedure order]},
    return (mapping, origin, notes, errors).

    ``origin`` maps each secure host to its group; ``notes`` are groups left out for want of
    a secure name; ``errors`` are names claimed by two groups or that are not host names.
    """
    notes, errors = [], []
    cleaned = {}
    claims = {}
    for key, names in groups.items():
        hosts = []
        for name in names:
            host = (name or "").strip().lower().rstrip(".")
            if not HOST.match(host):
                errors.append(f"{describe(key)}: not a host name: {name!r}"[:200])
                continue
            if host not in hosts:
                hosts.append(host)
                claims.setdefault(host, []).append(key)
        cleaned[key] = hosts
    contested = {host for host, keys in claims.items() if len(keys) > 1}
    for host in sorted(contested):
        errors.append(f"{host} is claimed by {' and '.join(map(describe, claims[host]))}: left out")
    mapping, origin = {}, {}
    for key, hosts in cleaned.items():
        hosts = [h for h in hosts if h not in contested]
        secure = next((h for h in hosts if is_secure_name(h, secure_domain)), None)
        if secure is None:
            if hosts:
                notes.append(f"{describe(key)}: no name directly under {secure_domain}: "
                             f"{', '.join(hosts)} left out")
            continue
        mapping[secure] = sorted(hosts)
        origin[secure] = key
    return mapping, origin, notes, errors


def describe(key):
    name, member_id, secondary = key
    return f"{name} member {member_id}" + (" (secondary names)" if secondary else "")


def read_groups(database, name):
    """Return {(database, MemberID, SecondaryName): [domains]} from the procedure."""
    (rows,) = database.call("sp_STP_OfflineTools_Domains")
    groups = {}
    for row in rows:
        key = (name, row["MemberID"], bool(row["SecondaryName"]))
        groups.setdefault(key, []).append(row["DomainName"])
    return groups


def read_map(path):
    import json

    try:
        with open(path, encoding="utf-8") as handle:
            value = json.load(handle)
        return value if isinstance(value, dict) else {}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {}  # a damaged map is rebuilt whole


def task(context):
    import json

    from cioctasks import db, files  # after --help: they load the ODBC layer

    settings, args = context.settings, context.args
    output = Path(args.output or Path(settings.tools_path) / "offline_tools"
                  / "ot_secure_host_mapping.json")
    names = db.select_databases(settings.udl_base, args.database)
    groups, read = {}, []
    for name in names:
        try:
            with context.connect(name) as database:
                groups.update(read_groups(database, name))
            read.append(name)
        except cioctasks.TaskError as error:
            context.problem(f"{name}: {error}")
    mapping, origin, notes, errors = build_map(groups, settings.offline_tools_secure_domain)
    for note in notes:
        context.log.warning("%s", note)
    for error in errors:
        context.problem(error)

    old = read_map(output)
    owned = {name: set(context.state.get(context.task, f"{OWNERS}:{name}", [])) for name in read}
    replaced = set().union(*owned.values()) if owned else set()
    kept = {host: hosts for host, hosts in old.items() if host not in replaced}
    new = dict(kept)
    new.update(mapping)
    added = sorted(set(new) - set(old))
    removed = sorted(set(old) - set(new))
    text = json.dumps(new, sort_keys=True, indent=2) + "\n"
    changed = not output.exists() or output.read_text(encoding="utf-8", errors="replace") != text
    if changed and not context.dry_run:
        files.atomic_write(output, text)
    if not context.dry_run:
        for name in read:
            hosts = sorted(host for host, key in origin.items() if key[0] == name)
            context.state.set(context.task, f"{OWNERS}:{name}", hosts)
    verb = "would write" if context.dry_run else "wrote"
    what = f"{verb} {output}" if changed else f"{output} unchanged"
    return (f"{len(new)} secure hosts from {len(read)} databases; {what}; "
            f"added: {', '.join(added) or 'none'}; removed: {', '.join(removed) or 'none'}")


def add_arguments(parser):
    parser.add_argument("-a", "--database", action="append", default=[], metavar="NAME",
                        help="read this database only (repeatable; default: every database)")
    parser.add_argument("--output", metavar="FILE",
                        help="the map to write (default <CIOC_TOOLS_PATH>/offline_tools/"
                             "ot_secure_host_mapping.json)")


if __name__ == "__main__":
    sys.exit(cioctasks.run(task, add_arguments))
