"""Mail volunteer record owners when an organization record linked to their opportunities
became non-public or got a deletion date.

Calls sp_VOL_NUMChanged_l with the start of the last successful run (first run: 24 hours
back; --since overrides), and mails each agency's UpdateEmailVOL one message listing its
changed records, in English and French as the records' languages require. The start time
moves forward only once every message is sent or spooled; a rerun after a crash sends
nothing twice and misses nothing.
"""

import datetime
import re
import sys
from pathlib import Path

import cioctasks
from cioctasks import urls

TEMPLATES = Path(__file__).resolve().parent / "templates"
FIRST_RUN = datetime.timedelta(hours=24)


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


def build_message(agency, rows, base_urls, since, now):
    """Return the mail.Message for one agency; raise mail.HeaderError for bad addresses."""
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


def notify(context, name, database, since, now):
    """Send each agency its message; return (agencies mailed, agencies skipped, rows listed)."""
    from cioctasks import mail  # email and ssl: loaded once there is mail to make

    (rows,) = database.call("sp_VOL_NUMChanged_l", since)
    agencies = group_by_agency(rows)
    base_urls = base_urls_of(database, [row["NUM"] for row in rows])
    key_prefix = f"sent:{name}:{since.isoformat()}:"
    done = context.state.items(context.task, key_prefix)
    sent = skipped = 0
    with context.mailer.session() as session:
        for agency, agency_rows in agencies.items():
            key = key_prefix + agency
            if key in done:
                context.log.info("%s: already mailed by an earlier run", agency)
                skipped += 1
                continue
            try:
                message = build_message(agency, agency_rows, base_urls, since, now)
                status = session.send(message)
            except (mail.HeaderError, mail.Refused) as error:
                context.problem(f"{agency}: {error}")
                continue
            context.log.info("%s: %d records, %s to %s", agency, len(agency_rows), status,
                             ", ".join(message.recipients))
            if not context.dry_run:
                context.state.set(context.task, key, status)
            sent += 1
    return sent, skipped, len(rows)


def window_of(context, name, now):
    """Return (since, until, resumed): the window this run reports on.

    The window is stored before the first message goes out, so a rerun after a crash
    reports on the same start time and recognises the agencies already mailed.
    """
    pending_key = f"window:{name}"
    pending = context.state.get(context.task, pending_key)
    if pending:
        since, until = (datetime.datetime.fromisoformat(part) for part in pending.split("|"))
        context.log.info("resuming the run that started at %s", until)
        return since, until, True
    stored = context.state.get(context.task, f"since:{name}")
    since = datetime.datetime.fromisoformat(stored) if stored else now - FIRST_RUN
    if not context.dry_run:
        context.state.set(context.task, pending_key, f"{since.isoformat()}|{now.isoformat()}")
    return since, now, False


def task(context, name):
    now = datetime.datetime.now().replace(microsecond=0)
    if context.args.since:
        since, until = context.args.since, now
    else:
        since, until, _ = window_of(context, name, now)
    with context.connect(name) as database:
        sent, skipped, rows = notify(context, name, database, since, now)
    # A refused address is reported and kept in outbox/failed; it does not hold the start
    # time back, or every later night would wait on it.
    if not context.dry_run and not context.args.since:
        # Agencies mailed before a crash saw the changes up to the crashed run's start
        # only: the next window starts there, so a later change is never missed (at worst
        # an agency mailed in the rerun sees a change a second time).
        finished = [*context.state.items(context.task, f"sent:{name}:"), f"window:{name}"]
        context.state.set_many(context.task,
                               {f"since:{name}": (until if skipped else now).isoformat()},
                               delete=finished)
    verb = "would mail" if context.dry_run else "mailed"
    return f"{rows} changed record rows since {since:%Y-%m-%d %H:%M}; {verb} {sent} agencies"


def parse_since(text):
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not a date and time: {text!r}") from None


def add_arguments(parser):
    parser.add_argument("--since", type=parse_since, metavar="'YYYY-MM-DD hh:mm:ss'",
                        help="report changes since this time instead (the stored start "
                             "time is left as it is)")


if __name__ == "__main__":
    sys.exit(cioctasks.run(task, add_arguments, per_database=True))
