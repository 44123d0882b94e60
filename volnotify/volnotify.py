"""Mail volunteers the new and changed positions that match their saved profile.

sp_VOL_Profile_Notify_Enabled lists every member; those with UseVolunteerProfiles set are
processed. For each, sp_VOL_Profile_Notify gives the positions created or changed since the
member's last notification, the profiles that asked for new or changed ones and the
member's mail settings, in that order. The profiles are read as they arrive, PROFILES_AT_ONCE
at a time: each lot is matched against the positions and its matched profiles are kept
aside in a temporary file (the settings come last), so memory does not grow with the number
of profiles. Then, a lot at a time, NotifyNew is read from VOL_Profile (the procedure
returns only NotifyUpdated) and each profile gets one message (English or French, text and
HTML) listing its matching positions, new ones first, with an unsubscribe link and a
List-Unsubscribe header, over one SMTP connection per member. Messages go in batches: each
batch is stored in the outbox's journal with the note that its profiles are done, then that
note goes into the run state, and only then are the messages handed over; so a rerun after
a crash records and sends the stored messages as they were (same Message-ID) and builds
only the rest; sp_VOL_Profile_Notify_Done runs once the member's messages are all through.
Messages go in the order the procedure returns the profiles (CIOC's has no ORDER BY for
them; the sample's orders them by ProfileID): nothing depends on it, since what was sent is
recorded per profile.
"""

import contextlib
import sys
from pathlib import Path

import cioctasks
from cioctasks import urls

sys.path.insert(0, str(Path(__file__).resolve().parent))
import matching  # noqa: E402  (a sibling module of this script)

TEMPLATES = Path(__file__).resolve().parent
#: Messages stored, recorded and handed over together: the journal's and the run state's
#: fsyncs are paid once per batch, and no more than a batch is held in memory.
BATCH = 200
SUBJECTS = {
    "en_CA": "Volunteer positions matching your profile",
    "fr_CA": "Occasions de bénévolat correspondant à votre profil",
}


def one_line(text):
    return " ".join(str(text or "").split())


def culture_of(profile_row):
    return "fr_CA" if str(profile_row.get("Culture") or "").lower().startswith("fr") else "en_CA"


def for_culture(entries, culture):
    """The entry of a per-culture column for a culture, else the first one."""
    wanted = culture.replace("_", "-").lower()
    for entry in entries or []:
        if str(entry.get("Culture", "")).lower() == wanted:
            return entry
    return (entries or [{}])[0]


def guid_key(value):
    """A uniqueidentifier as pyodbc or the sample gives it (with or without braces, any case,
    or a uuid.UUID) in one form, for comparing."""
    return str(value or "").strip().strip("{}").upper()


def braced_token(value):
    """The unsubscribe token as unsubscribe.asp takes it (at most 38 characters): the GUID in
    braces, upper case; raise ValueError if it is not a GUID."""
    import uuid

    try:
        return "{" + str(uuid.UUID(guid_key(value))).upper() + "}"
    except ValueError:
        raise ValueError("not an unsubscribe token") from None


def position(opportunity, culture, base_url):
    """What the link templates show of one position, in the profile's language.

    The link goes through the ViewInfo entry of that culture (else the first: the member's
    default view): ``https://<AccessURL>/volunteer/record/<VNUM>``, plus ``?UseVOLVw=`` when
    the entry names a ViewType (the procedure leaves it out for the default view and for a
    view with its own domain). The opportunity's own AccessURL column is always NULL in
    CIOC; the member's BaseURL is the last resort."""
    row = opportunity.row
    name = for_culture(row.get("OP_NAME"), culture)
    org = for_culture(row.get("ORG_NAME"), culture)
    view = for_culture(row.get("ViewInfo"), culture)
    levels = [one_line(org.get(f"ORG_LEVEL_{n}")) for n in range(1, 6)]
    view_type = str(view.get("ViewType") or "").strip() or None
    return {
        "title": one_line(name.get("POSITION_TITLE")) or row["VNUM"],
        "organization": ", ".join(level for level in levels if level),
        "url": urls.opportunity(view.get("AccessURL") or row.get("AccessURL") or base_url,
                                row["VNUM"], view_type),
        "new": opportunity.new,
    }


class Renderer:
    """The jinja2 templates beside this script: text as is, HTML autoescaped."""

    def __init__(self, folder=TEMPLATES):
        import jinja2

        self.markup = jinja2.utils.markupsafe.Markup
        self.environment = jinja2.Environment(
            loader=jinja2.FileSystemLoader(folder), keep_trailing_newline=True,
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",),
                                                default_for_string=False),
        )
        self._templates = {}

    def templates(self, culture):
        """The four compiled templates of a culture, loaded once, each with its globals."""
        if culture not in self._templates:
            self._templates[culture] = tuple(
                (template, dict(template.globals)) for template in (
                    self.environment.get_template(f"{kind}_{culture}.{extension}")
                    for kind in ("linktmpl", "emailtmpl") for extension in ("txt", "html")))
        return self._templates[culture]

    @staticmethod
    def _render(compiled, values):
        """What ``Template.render(values)`` returns, without merging the template's globals
        into a new dict for every call (half the time of rendering a short template)."""
        template, template_globals = compiled
        context = template.new_context({**template_globals, **values}, shared=True)
        return "".join(template.root_render_func(context))

    def render(self, culture, first_name, positions, unsubscribe_url):
        text_link, html_link, text_mail, html_mail = self.templates(culture)
        values = {"first_name": first_name, "count": len(positions),
                  "unsubscribe_url": unsubscribe_url}
        text = self._render(text_mail, {
            **values, "links": [self._render(text_link, p) for p in positions]})
        html = self._render(html_mail, {
            **values, "links": [self.markup(self._render(html_link, p)) for p in positions]})
        return text, html


def build_message(renderer, settings_row, profile, chosen, identity=None):
    """The message for one profile (a matching.Profile or a Recipient: its ``row`` holds
    the MAIL_COLUMNS); raise ValueError (or mail.HeaderError) if it cannot be.
    ``identity`` names the work, for a Message-ID that a rebuild of it keeps."""
    from cioctasks import mail  # email and ssl: loaded once there is mail to make

    row = profile.row
    culture = culture_of(row)
    ordered = sorted(chosen, key=lambda o: (not o.new, o.vnum))
    positions = [position(o, culture, settings_row.get("BaseURL")) for o in ordered]
    unsubscribe = urls.unsubscribe(settings_row.get("BaseURL"), row["Email"],
                                   braced_token(row.get("UnsubscribeToken")))
    text, html = renderer.render(culture, one_line(row.get("FirstName")), positions, unsubscribe)
    sender = settings_row.get("DefaultEmailVOLProfile") or settings_row.get("DefaultEmailVOL")
    return mail.Message(
        to=row["Email"], subject=SUBJECTS[culture], text=text, html=html, sender=sender,
        sender_name=one_line(settings_row.get("DefaultEmailNameVOL")) or None,
        headers={"List-Unsubscribe": f"<{unsubscribe}>"}, identity=identity,
    )


def window_of(database, member_id):
    """What identifies this member's notification window until it is marked done."""
    rows = database.query("SELECT LastVolProfileEmailDate FROM STP_Member WHERE MemberID = ?",
                          member_id)
    value = rows[0]["LastVolProfileEmailDate"] if rows else None
    return value.isoformat() if value else "never"


#: Profiles read, matched and spilled at a time, and looked up at a time in VOL_Profile
#: (an IN list of this many parameters: under SQL Server's 2,100 and SQLite's 999).
PROFILES_AT_ONCE = 500
#: The columns of a profile's row its message needs: all that is kept of a matched profile
#: until the member's mail settings arrive.
MAIL_COLUMNS = ("ProfileID", "FirstName", "Email", "Culture", "UnsubscribeToken")
#: The lengths an IN list of profile IDs is padded to (the last one: PROFILES_AT_ONCE).
IN_LENGTHS = (10, 50, 200, PROFILES_AT_ONCE)


class Recipient:
    """A matched profile as its message needs it: ``row`` (MAIL_COLUMNS), ``profile_id``
    and ``found``, the indexes of its positions (new ones before NotifyNew is known)."""

    __slots__ = ("row", "profile_id", "found")

    def __init__(self, row, found):
        self.row = row
        self.profile_id = row["ProfileID"]
        self.found = found


class Spill:
    """Matched profiles kept in an unnamed temporary file, in chunks, until the member's
    mail settings (the procedure's last result set) arrive: memory holds one chunk, however
    many profiles a member has. The file is gone when closed, or when the process dies."""

    def __init__(self, folder):
        import tempfile

        try:
            folder.mkdir(parents=True, exist_ok=True)
            self.file = tempfile.TemporaryFile(prefix="volnotify-", dir=folder)
        except OSError as error:
            raise cioctasks.TaskError(f"cannot keep matched profiles in {folder}: "
                                      f"{error.strerror or error}") from None
        self.folder = folder

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        # What is still buffered cannot be written on a full disk: it is not needed now.
        with contextlib.suppress(OSError):
            self.file.close()

    def _failed(self, error):
        """The one-line failure of a spill the disk refused (full, gone)."""
        return cioctasks.TaskError(f"cannot keep matched profiles in {self.folder}: "
                                   f"{error.strerror or error}")

    def write(self, recipients):
        import pickle

        if not recipients:
            return
        try:
            pickle.dump([(r.row, r.found) for r in recipients], self.file, protocol=5)
        except OSError as error:
            raise self._failed(error) from None

    def chunks(self):
        """Yield the chunks written, in order, each a list of Recipients."""
        import pickle

        try:
            self.file.seek(0)  # writes what is still buffered: a full disk shows here
        except OSError as error:
            raise self._failed(error) from None
        while True:
            try:
                chunk = pickle.load(self.file)
            except EOFError:
                return
            yield [Recipient(row, found) for row, found in chunk]


def read_member(database, member_id, spill):
    """Run sp_VOL_Profile_Notify for one member, streaming its profiles: return
    (opportunities, number of profiles read, the mail settings row or None). Each batch of
    profiles is matched as it arrives (NotifyNew taken as set: ``wanted`` applies it) and
    its matched profiles go to ``spill``."""
    opportunities, settings_rows, profiles = [], [], 0
    for index, rows in database.call_batches("sp_VOL_Profile_Notify", member_id,
                                             size=PROFILES_AT_ONCE):
        if index == 0:
            opportunities.extend(matching.Opportunity(row) for row in rows)
        elif index == 1:
            profiles += len(rows)
            batch = [matching.Profile(row, True) for row in rows]
            found = matching.match_all(batch, opportunities)
            spill.write([Recipient({c: batch[i].row.get(c) for c in MAIL_COLUMNS}, found[i])
                         for i in sorted(found)])
        elif index == 2:
            settings_rows.extend(rows)
    return opportunities, profiles, (settings_rows or [None])[0]


def notify_new_of(database, member_id, recipients):
    """{guid_key(ProfileID): NotifyNew} for some of the member's profiles: the procedure
    returns the profiles with NotifyNew or NotifyUpdated set, but only NotifyUpdated."""
    if not recipients:
        return {}
    ids = [r.profile_id for r in recipients]
    # The list padded (its last ID repeated) to one of a few lengths: SQL Server then
    # caches a few plans for this statement, not one for every number of profiles.
    length = next(n for n in IN_LENGTHS if n >= len(ids))
    ids += ids[-1:] * (length - len(ids))
    marks = ", ".join("?" * length)
    rows = database.query(f"SELECT ProfileID, NotifyNew FROM VOL_Profile WHERE MemberID = ? "
                          f"AND ProfileID IN ({marks})", member_id, *ids)
    return {guid_key(row["ProfileID"]): matching.flag(row["NotifyNew"]) for row in rows}


def wanted(recipients, opportunities, notify_new):
    """Yield (recipient, its positions) for those with any left once new positions go only
    to profiles with NotifyNew (a profile gone from VOL_Profile since gets none)."""
    for recipient in recipients:
        takes_new = notify_new.get(guid_key(recipient.profile_id), False)
        chosen = [opportunities[i] for i in recipient.found
                  if takes_new or not opportunities[i].new]
        if chosen:
            yield recipient, chosen


def notify_member(context, database, member_id, renderer):
    """Mail one member's profiles; return (messages handed to the mailer, profiles matched)."""
    with Spill(context.settings.state_dir) as spill:
        opportunities, profiles, settings_row = read_member(database, member_id, spill)
        if settings_row is None:
            raise cioctasks.TaskError(f"member {member_id}: no mail settings returned")
        prefix = f"{context.database}:{member_id}:{window_of(database, member_id)}:"
        sent = matched = 0
        # The session first: it records and sends what a killed run left in its journal,
        # so the records read next are whole.
        with context.mailer.session() as session:
            batch = []
            for chunk in spill.chunks():
                needs = [r for r in chunk if any(opportunities[i].new for i in r.found)]
                notify_new = notify_new_of(database, member_id, needs)
                # What an earlier, killed run of this window already sent these profiles.
                already = context.state.get_many(
                    context.task, [prefix + str(r.profile_id) for r in chunk])
                for recipient, chosen in wanted(chunk, opportunities, notify_new):
                    matched += 1
                    key = prefix + str(recipient.profile_id)
                    done = set(already.get(key, []))
                    chosen = [o for o in chosen if o.vnum not in done]
                    if not chosen:
                        continue
                    vnums = sorted(done | {o.vnum for o in chosen})
                    try:
                        message = build_message(renderer, settings_row, recipient, chosen,
                                                identity=(context.task, key, vnums))
                    except ValueError as error:
                        context.problem(f"member {member_id} profile {recipient.profile_id}: {error}")
                        continue
                    batch.append((message, {key: vnums}))
                    if len(batch) == BATCH:
                        sent += send(context, session, batch, member_id)
                        batch = []
            sent += send(context, session, batch, member_id)
    if not context.dry_run:
        database.call("sp_VOL_Profile_Notify_Done", member_id)
        context.state.delete_prefix(context.task, prefix)
    context.log.info("member %s: %d positions, %d profiles, %d messages", member_id,
                     len(opportunities), profiles, sent)
    return sent, matched


def send(context, session, batch, member_id):
    """Hand a batch of messages to the session (see mail.Session.send_batch); return how
    many went (or would go, in a dry run)."""
    from cioctasks import mail

    if not batch:
        return 0
    sent = 0
    results = session.send_batch(batch, context.state, context.task)
    for (_, records), (_, status) in zip(batch, results):
        if isinstance(status, mail.Refused):
            profile_id = next(iter(records)).rsplit(":", 1)[-1]
            context.problem(f"member {member_id} profile {profile_id}: {status}")
        else:
            sent += 1
    return sent


def task(context, name):
    from cioctasks import mail

    renderer = Renderer()
    members = 0
    with context.connect(name) as database:
        (enabled,) = database.call("sp_VOL_Profile_Notify_Enabled")
        # The procedure lists every member; only those using volunteer profiles get mail.
        member_ids = [row["MemberID"] for row in enabled
                      if matching.flag(row["UseVolunteerProfiles"])]
        if context.args.member:
            member_ids = [m for m in member_ids if m in context.args.member]
        for member_id in member_ids:
            try:
                notify_member(context, database, member_id, renderer)
            except mail.StoreError as error:  # no message can be kept: stop this database
                raise cioctasks.TaskError(f"{error} ({mailed(context)})") from None
            except cioctasks.TaskError as error:
                context.problem(str(error))
                continue
            members += 1
    for line in context.mailer.problems:  # queued mail, refused recipients: not delivered
        context.problem(line)
    return f"{members} members, {mailed(context)}"


def mailed(context):
    """What the mailer did in this run, counted message by message: "mailed N volunteers"."""
    mailer = context.mailer
    if context.dry_run:
        return f"would mail {mailer.would_send} volunteers"
    return f"mailed {mailer.sent} volunteers"


def add_arguments(parser):
    parser.add_argument("--member", type=cioctasks.number(1, 2**31 - 1), action="append", default=[], metavar="ID",
                        help="only this member (repeatable)")


if __name__ == "__main__":
    sys.exit(cioctasks.run(task, add_arguments, per_database=True, parallel="processes"))
