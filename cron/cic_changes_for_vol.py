"""Mail volunteer record owners when an organization record linked to their opportunities
became non-public or got a deletion date.

Each run reports the changes in one window of whole minutes: from the end of the last
successful run's window (first run: 24 hours back; --since overrides) to the start of the
minute one minute before now, so a change still being committed is left to the next run.
sp_VOL_NUMChanged_l takes its start as a smalldatetime, which keeps whole minutes only,
and has no end: it is called with the window's start, and the records whose NON_PUBLIC or
DELETION_DATE changes all fall after the window's end wait for the next run. Each agency's
UpdateEmailVOL gets one message listing its changed records, in English and French as the
records' languages require. The window is stored before the first message and moves on
only once every message is sent or spooled. Each agency is recorded as mailed once its
message is stored in the outbox's journal and before the server gets it: a rerun after a
crash reports the same window, sends a stored message as it was (same Message-ID) and
skips the agencies already recorded, so each change is built into one message only.
"""

import datetime
import re
import sys
from pathlib import Path

import cioctasks
from cioctasks import urls

TEMPLATES = Path(__file__).resolve().parent / "templates"
FIRST_RUN = datetime.timedelta(hours=24)
#: How far a window's end stays behind the run: a history row written by a transaction
#: that had not committed when the run read it still falls in a later window.
SETTLE = datetime.timedelta(minutes=1)


def minute_of(moment):
    """The whole minute at or before ``moment``: the precision of @MODIFIED_DATE
    (smalldatetime), so the procedure gets the window's start exactly, not rounded."""
    return moment.replace(second=0, microsecond=0)


def window_end(now):
    """The end of a window run at ``now``: the start of the minute one minute back."""
    return minute_of(now - SETTLE)


def one_line(text):
    """Database text as one display line: no CR/LF, no runs of spaces."""
    return " ".join(str(text or "").split())


def group_by_agency(rows):
    """Group NUMChanged rows by record owner: {owner: [rows]}, in the procedure's order."""
    agencies = {}
    for row in rows:
        agencies.setdefault(row["RECORD_OWNER"], []).append(row)
    return agencies


def recipients_of(update_email):
    """The addresses of an UpdateEmailVOL value (which may list several)."""
    return [a for a in re.split(r"[;,\s]+", update_email or "") if a]


def render(agency, rows, base_urls, since, now):
    """Return the text of one agency's message."""
    import jinja2

    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                                     keep_trailing_newline=True, autoescape=False)
    sections = {}
    for lang_id, culture in ((0, "en_CA"), (2, "fr_CA")):
        records = [{
            "name": one_line(row["ORG_NAME_FULL"]),
            "num": row["NUM"],
            "non_public": bool(row["NON_PUBLIC"]),
            "deletion_date": row["DELETION_DATE"].date().isoformat() if row["DELETION_DATE"] else None,
            "deleted": bool(row["DELETION_DATE"] and row["DELETION_DATE"] <= now),
            "opportunities": row["OpportunityCount"],
            "url": urls.record(base_urls.get(row["NUM"]), row["NUM"]),
        } for row in rows if row["LangID"] == lang_id]
        if records:
            sections[culture] = environment.get_template(
                f"cic_changes_{culture}.txt").render(records=records)
    return environment.get_template("cic_changes_message.txt").render(
        agency=agency, since=since.strftime("%Y-%m-%d %H:%M"),
        english=sections.get("en_CA"), french=sections.get("fr_CA"))


def build_message(agency, rows, base_urls, since, now, identity=None):
    """Return the mail.Message for one agency; raise mail.HeaderError for bad addresses.
    ``identity`` names the work, for a Message-ID that a rebuild of it keeps."""
    from cioctasks import mail  # email and ssl: loaded once there is mail to make

    first = rows[0]
    count = len({row["NUM"] for row in rows})
    french_only = all(row["LangID"] == 2 for row in rows)
    subject = (f"{count} dossier(s) d'organisme modifié(s) ({agency})" if french_only else
               f"{count} organization record(s) changed ({agency})")
    return mail.Message(
        to=recipients_of(first["UpdateEmailVOL"]), subject=subject,
        text=render(agency, rows, base_urls, since, now),
        sender=first["DefaultEmailVOL"], sender_name=one_line(first["DefaultEmailNameVOL"]),
        identity=identity,
    )


def base_urls_of(database, nums):
    """Map each record number to its member's base URL."""
    urls = {}
    nums = sorted(set(nums))
    for start in range(0, len(nums), 500):
        chunk = nums[start:start + 500]
        marks = ", ".join("?" for _ in chunk)
        for row in database.query(
                "SELECT bt.NUM, m.BaseURLVOL FROM GBL_BaseTable bt "
                f"JOIN STP_Member m ON m.MemberID = bt.MemberID WHERE bt.NUM IN ({marks})", *chunk):
            urls[row["NUM"]] = row["BaseURLVOL"]
    return urls


def changed_in_window(database, since, until):
    """The (NUM, LangID) of the records with a NON_PUBLIC or DELETION_DATE change (the
    history entries sp_VOL_NUMChanged_l looks for) after ``since`` up to ``until``."""
    rows = database.query_rows(
        "SELECT DISTINCT h.NUM, h.LangID FROM GBL_BaseTable_History h "
        "JOIN GBL_FieldOption fo ON h.FieldID = fo.FieldID "
        "AND fo.FieldName IN ('NON_PUBLIC', 'DELETION_DATE') "
        "WHERE h.MODIFIED_DATE > ? AND h.MODIFIED_DATE <= ?", since, until)
    return {(row[0], row[1]) for row in rows}


def notify(context, name, database, since, until, now, rescan=False):
    """Send each agency its message for the changes in the window (since, until]; return
    (agencies mailed, agencies skipped, rows listed, rows left to the next window).

    ``rescan`` (--since): mail every agency and record nothing."""
    from cioctasks import mail  # email and ssl: loaded once there is mail to make

    (rows,) = database.call("sp_VOL_NUMChanged_l", since)
    in_window = changed_in_window(database, since, until)
    listed = [row for row in rows if (row["NUM"], row["LangID"]) in in_window]
    later = len(rows) - len(listed)
    agencies = group_by_agency(listed)
    base_urls = base_urls_of(database, [row["NUM"] for row in listed])
    key_prefix = f"sent:{name}:{since.isoformat()}:"
    done = {} if rescan else context.state.items(context.task, key_prefix)
    sent = skipped = 0
    with context.mailer.session() as session:
        for agency, agency_rows in agencies.items():
            key = key_prefix + agency
            if key in done:
                context.log.info("%s: already mailed by an earlier run", agency)
                skipped += 1
                continue
            # A rescan is new work: its own Message-ID, and nothing recorded.
            identity = (context.task, key, until.isoformat(), now.isoformat() if rescan else "")

            def record(key=key):  # before the server has it: see mail.Session
                context.state.set(context.task, key, "stored")

            try:
                message = build_message(agency, agency_rows, base_urls, since, now, identity)
                status = session.send(message, None if rescan else record)
            except (mail.HeaderError, mail.Refused) as error:
                context.problem(f"{agency}: {error}")
                continue
            context.log.info("%s: %d records, %s to %s", agency, len(agency_rows), status,
                             ", ".join(message.recipients))
            sent += 1
    return sent, skipped, len(listed), later


def window_of(context, name, now):
    """Return (since, until, resumed): the window this run reports on, in whole minutes.

    The window is stored before the first message goes out, so a rerun after a crash
    reports on the same window and recognises the agencies already mailed. A start stored
    with seconds (by an older version) is taken back to its minute: at worst a change is
    mailed twice, never missed.
    """
    pending_key = f"window:{name}"
    pending = context.state.get(context.task, pending_key)
    if pending:
        since, until = (minute_of(datetime.datetime.fromisoformat(part))
                        for part in pending.split("|"))
        context.log.info("resuming the run of the window %s to %s", since, until)
        return since, until, True
    stored = context.state.get(context.task, f"since:{name}")
    since = minute_of(datetime.datetime.fromisoformat(stored) if stored else now - FIRST_RUN)
    until = window_end(now)
    if until > since and not context.dry_run:
        context.state.set(context.task, pending_key, f"{since.isoformat()}|{until.isoformat()}")
    return since, until, False


def task(context, name, now=None):
    """Report the changes of the next window of database ``name``. ``now``: the run's
    clock (default: this machine's), so tests can place a run between changes."""
    now = now or datetime.datetime.now().replace(microsecond=0)
    rescan = bool(context.args.since)
    if rescan:
        since, until = minute_of(context.args.since), window_end(now)
    else:
        since, until, _ = window_of(context, name, now)
    if until <= since:
        return f"nothing to report yet: the window starting {since:%Y-%m-%d %H:%M} is not over"
    with context.connect(name) as database:
        _, skipped, rows, later = notify(context, name, database, since, until, now, rescan)
    # A refused address is reported and kept in outbox/failed; it does not hold the window
    # back, or every later night would wait on it.
    if not context.dry_run and not rescan:
        finished = [*context.state.items(context.task, f"sent:{name}:"), f"window:{name}"]
        context.state.set_many(context.task, {f"since:{name}": until.isoformat()},
                               delete=finished)
    mailer = context.mailer
    done = f"would mail {mailer.would_send}" if context.dry_run else f"mailed {mailer.sent}"
    summary = (f"{rows} changed record rows from {since:%Y-%m-%d %H:%M} to "
               f"{until:%Y-%m-%d %H:%M}; {done} agencies")
    if skipped:
        summary += f" ({skipped} already mailed before a crash)"
    if later:
        summary += f"; {later} rows of later changes left to the next run"
    for line in mailer.problems:  # queued mail, refused recipients: not delivered
        context.problem(line)
    return summary


def parse_since(text):
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not a date and time: {text!r}") from None


def add_arguments(parser):
    parser.add_argument("--since", type=parse_since, metavar="'YYYY-MM-DD hh:mm'",
                        help="report the changes since this minute instead, to the end of "
                             "the current window (the stored window is left as it is)")


if __name__ == "__main__":
    sys.exit(cioctasks.run(task, add_arguments, per_database=True))
