"""Mail a digest of the errors new in each site's Python error logs since the last run.

Reads <CIOC_LOG_ROOT>/<site>/python/error.log and its midnight rotations
(error.log.YYYY-MM-DD). An entry is a line starting with its time ("2026-11-22
14:03:11,123 <request URL>") and the traceback lines under it. Entries are grouped by
signature (exception type, message with numbers, quoted values and GUIDs blurred,
innermost frame) with count, first and last time, a sample URL and a sample traceback;
one digest per site goes to CIOC_ERROR_EMAIL_<SITE> (comma list) or else
CIOC_TASK_NOTIFY_EMAIL. No new errors, no mail.

Each file's read position (by file identity, so a rotated file is followed under its new
name) moves when the digest is stored in the outbox's journal, before the server gets it;
a run killed after that sends the stored digest again as it was (same Message-ID) and does
not build another one from the same errors: every error is reported once. A
truncated or replaced file is read from its start; a last line without its newline waits
for the next run. The first run on a site reads only today's and yesterday's files.
--since / --days / --hours / --minutes rescan a window without moving any position.
"""

import datetime
import re
import sys
import time
from pathlib import Path

import cioctasks
from cioctasks.errorlog import HEAD, ROTATED, Digest, head_hash, identity, scan


def log_files(folder):
    """The site's error log files, oldest first ({date}: path, today's last)."""
    found = []
    for path in folder.glob("error.log*"):
        match = ROTATED.match(path.name)
        if match and path.is_file() and not path.is_symlink():
            found.append((match.group(1) or "9999-99-99", path))
    return [path for _, path in sorted(found)]


def collect(folder, positions, first_run, since=None):
    """Read what is new; return (digest, new positions)."""
    digest = Digest()
    new_positions = {}
    yesterday = (datetime.date.today() - datetime.timedelta(days=1)).isoformat()
    for path in log_files(folder):
        try:
            key, size = identity(path)
            known = positions.get(key)
            same = bool(known) and known["offset"] <= size and \
                head_hash(path, known["head_length"]) == known["head"]
        except OSError:
            continue
        if since is not None:
            scan(path, 0, digest, since)
            continue
        if same:
            start = known["offset"]
        elif first_run and ROTATED.match(path.name).group(1) and \
                ROTATED.match(path.name).group(1) < yesterday:
            start = size  # history before the first run is not news
        else:
            start = 0  # a new file, or one truncated or replaced since the last run
        offset = scan(path, start, digest) if start < size else start
        length = min(HEAD, offset)
        new_positions[key] = {"name": path.name, "offset": offset, "head_length": length,
                              "head": head_hash(path, length)}
    return digest, new_positions


def task(context, site):
    from cioctasks import config

    settings, args = context.settings, context.args
    folder = Path(settings.log_root) / site / "python"
    variable = "CIOC_ERROR_EMAIL_" + re.sub(r"\W", "_", site.upper())
    recipients = config.setting_emails(settings, variable) or (
        [settings.task_notify_email] if settings.task_notify_email else [])
    if not recipients:
        raise cioctasks.ConfigError(f"neither {variable} nor CIOC_TASK_NOTIFY_EMAIL is set")
    since = rescan_start(args)
    key = f"positions:{site}"
    stored = context.state.get(context.task, key)
    digest, positions = collect(folder, stored or {}, stored is None, since)

    def record():  # the positions move with the stored digest, before the server has it
        if since is None:
            context.state.set(context.task, key, positions)

    status = "no mail"
    if digest.entries:
        from cioctasks import mail  # only with something to send: the idle run stays light

        # A rescan is new work: its own Message-ID.
        identity = (context.task, site, stored, positions, since, since and time.time())
        message = mail.Message(
            to=recipients, sender=settings.task_notify_email or recipients[0],
            subject=f"[cioctasks] {site}: {digest.entries} errors in {len(digest.groups)} kinds",
            text=digest.text(site), identity=identity)
        with context.mailer.session() as session:
            status = session.send(message, record)
        context.log.info("digest of %d errors %s to %s", digest.entries, status,
                         ", ".join(recipients))
        for line in context.mailer.problems:  # a queued digest is not delivered
            context.problem(line)
    elif not context.dry_run:
        record()
    what = "rescanned" if since else "new"
    summary = f"{digest.entries} {what} errors in {len(digest.groups)} kinds"
    if status == "spooled":
        return summary  # the problem above says it is queued, and why
    verb = {"no mail": "no mail", "dry-run": "would mail"}.get(status, "mailed")
    return f"{summary}; {verb}"


def rescan_start(args):
    if args.since:
        return args.since.strftime("%Y-%m-%d %H:%M:%S,000")
    span = datetime.timedelta(days=args.days or 0, hours=args.hours or 0, minutes=args.minutes or 0)
    if not span:
        return None
    return (datetime.datetime.now() - span).strftime("%Y-%m-%d %H:%M:%S,000")


def add_arguments(parser):
    window = parser.add_argument_group("rescan a window (no read position moves)")
    window.add_argument("--since", type=datetime.datetime.fromisoformat,
                        metavar="'YYYY-MM-DD hh:mm:ss'", help="rescan the errors since this moment")
    window.add_argument("--days", type=cioctasks.number(0, 3650),
                        help="rescan the errors of the last N days")
    window.add_argument("--hours", type=cioctasks.number(0, 24 * 3650),
                        help="rescan the errors of the last N hours")
    window.add_argument("--minutes", type=cioctasks.number(0, 24 * 60 * 3650),
                        help="rescan the errors of the last N minutes")


if __name__ == "__main__":
    sys.exit(cioctasks.run(task, add_arguments, per_database=True))
