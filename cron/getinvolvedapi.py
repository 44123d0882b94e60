"""Sync volunteer opportunities to getinvolved.ca for every agency that has it set up.

sp_VOL_GetInvolved_Enabled lists the agencies; sp_VOL_GetInvolved_Sync gives each one's
opportunities. Only opportunities whose content changed since the last sync are sent
(--full sends all), in JSON-RPC 2.0 batches of at most 100 to the agency's
GetInvolvedSite, with HTTP Basic authentication (GetInvolvedUser, GetInvolvedToken);
opportunities no longer listed are withdrawn. Progress is recorded after each batch, so
a failed run resumes where it stopped. Timeouts, 429 and 5xx replies are retried with
backoff, as Retry-After asks; then that agency fails and the others go on. A 401 fails that agency only.
The contract is documented in the README ("getinvolved.ca contract").

CIOC removed GetInvolved in October 2022 (commit aff3c04): a database without its
procedures is skipped with one line, not failed; one whose login may not run them fails.
On a database from before the removal, only the agency's own positions are sent: the last
line of the procedure's WHERE clause (``... AND DELETION_DATE IS NULL OR DELETION_DATE >
GETDATE()``) has no parentheses, so it also returns every position, of any member or
agency, whose deletion date is still to come.
"""

import itertools
import sys
from urllib.parse import urlsplit

import cioctasks
from cioctasks import procs, udl, urls

BATCH = 100
PROCEDURES = procs.TASK_PROCEDURES["getinvolvedapi"]
_ids = itertools.count(1)

# The procedure's WHERE clause as it was meant (deletion date parenthesised), with its
# views' rule that a non-public position is not shown: the positions that are the agency's
# own. Plain SQL that SQL Server and the sample both run, with the login's SELECT rights.
OWN_POSITIONS = """
    SELECT DISTINCT vo.VNUM FROM VOL_Opportunity vo
    INNER JOIN GBL_Agency a ON a.AgencyCode = vo.RECORD_OWNER
    INNER JOIN VOL_Opportunity_Description vod ON vod.VNUM = vo.VNUM AND vod.LangID = 0
    WHERE vo.MemberID = ? AND a.GetInvolvedUser = ? AND a.GetInvolvedToken = ?
      AND a.GetInvolvedSite = ?
      AND EXISTS (SELECT * FROM VOL_OP_CommunitySet cs
                  WHERE cs.VNUM = vo.VNUM AND cs.CommunitySetID = a.GetInvolvedCommunitySet)
      AND (vod.DELETION_DATE IS NULL OR vod.DELETION_DATE > ?)
      AND vod.NON_PUBLIC = 0"""


class SyncError(cioctasks.TaskError):
    """An agency whose sync cannot go on this run."""


def _text(value):
    if value is None:
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat(sep=" ") if hasattr(value, "hour") else value.isoformat()
    return str(value)


def names(entries):
    """Given a name list as procs.decode_xml gives it (``<NAMES><NAME Name="..."/></NAMES>``
    -> [{"Name": "..."}]; [] for NULL), return the names, in order, each once."""
    found = []
    for entry in entries or ():
        name = " ".join((entry.get("Name") or "").split())
        if name and name not in found:
            found.append(name)
    return found


def view_of(view_info, culture):
    """The ViewInfo entry of that culture, else the first (the member's default view)."""
    entries = view_info or [{}]
    return next((e for e in entries if e.get("Culture") == culture), entries[0])


def opportunities_of(rows):
    """Turn the procedure's rows (one per opportunity and org-name culture) into one object
    per opportunity, sorted by VNUM, the shape the contract sends:
    {id, languages: {culture: {...}}}."""
    by_vnum = {}
    for row in rows:
        view = view_of(row.get("ViewInfo"), row["Culture"])
        view_type = str(view.get("ViewType") or "").strip() or None
        entry = by_vnum.setdefault(row["VNUM"], {"id": row["VNUM"], "languages": {}})
        entry["languages"][row["Culture"]] = {
            "title": row["OP_NAME"],
            "organization": " ".join((row["ORG_NAME_FULL"] or "").split()),
            "duties": row["DUTIES"],
            "communities": names(row["COMMUNITIES"]),
            "interests": names(row["INTERESTS"]),
            "skills": names(row["SKILLS"]),
            "display_until": _text(row["DISPLAY_UNTIL"]),
            "deletion_date": _text(row["DELETION_DATE"]),
            "url": urls.opportunity(view.get("AccessURL"), row["VNUM"], view_type),
        }
    return [by_vnum[vnum] for vnum in sorted(by_vnum)]


def content_hash(opportunity):
    import hashlib
    import json

    text = json.dumps(opportunity, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_site(site):
    """Return the site URL if it is one we may post credentials to; raise SyncError if not."""
    parts = urlsplit(site or "")
    local = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if parts.scheme != "https" and not (parts.scheme == "http" and local):
        raise SyncError(f"GetInvolvedSite is not an https URL: {site!r}"[:200])
    return site


class Client:
    """A JSON-RPC 2.0 client for one agency, with retries and backoff (cioctasks.httpretry)."""

    def __init__(self, site, user, token, timeout, retries, backoff, log):
        from cioctasks import httpretry

        self.site = check_site(site)
        # POST is retried: every call is an idempotent upsert or withdraw of whole
        # opportunities, so a call that reached the site before its reply was lost does
        # no harm when sent again.
        self.session = httpretry.session(retries, backoff, ["POST"], log)
        self.session.auth = (user, token)
        self.session.headers["User-Agent"] = f"cioctasks/{cioctasks.__version__}"
        self.timeout, self.retries = timeout, retries
        self.secrets = [token]

    def call(self, method, params):
        import requests

        from cioctasks import httpretry

        request_id = next(_ids)
        body = {"jsonrpc": "2.0", "method": method, "params": params, "id": request_id}
        try:
            response = self.session.post(self.site, json=body, timeout=self.timeout)
        except requests.RequestException as error:
            raise SyncError(f"{method}: {httpretry.cause(error, self.timeout)} after "
                            f"{self.retries + 1} attempts") from None
        if response.status_code == 401:
            raise SyncError(f"{method}: the site refused the user and token (401)")
        if response.status_code in httpretry.RETRIED:
            raise SyncError(f"{method}: HTTP {response.status_code} after "
                            f"{httpretry.attempts(response)} attempts")
        return self._result(method, request_id, response)

    def _result(self, method, request_id, response):
        if response.status_code != 200:
            raise SyncError(f"{method}: HTTP {response.status_code}")
        try:
            reply = response.json()
        except ValueError:
            raise SyncError(f"{method}: the reply is not JSON") from None
        if not isinstance(reply, dict) or reply.get("jsonrpc") != "2.0" or reply.get("id") != request_id:
            raise SyncError(f"{method}: not a JSON-RPC 2.0 reply to this call")
        if "error" in reply:
            error = reply["error"] if isinstance(reply["error"], dict) else {}
            message = udl.mask(str(error.get("message", "error"))[:200], self.secrets)
            raise SyncError(f"{method}: the site answered error {error.get('code')}: {message}")
        if "result" not in reply:
            raise SyncError(f"{method}: the reply has no result")
        return reply["result"]


def require_feature(database):
    """Raise Skipped if this database's CIOC version has no GetInvolved procedures (CIOC
    removed them in 2022), TaskError if the login may not run them."""
    states = {name: database.procedure_state(name) for name in PROCEDURES}
    denied = [name for name, state in states.items() if state == "denied"]
    if denied:  # as `check` says: a grant missing is a failure, whatever else is missing
        raise cioctasks.TaskError(f"this login may not EXECUTE {', '.join(denied)} "
                                  "(CIOC grants it to cioc_maintenance_role)")
    missing = [name for name, state in states.items() if state != "ok"]
    if missing:
        raise cioctasks.Skipped("the GetInvolved feature is not in this CIOC version "
                                f"(CIOC removed it in 2022: no {', '.join(missing)})")


def own_positions(database, agency, now):
    """The VNUMs of the positions that sp_VOL_GetInvolved_Sync is meant to list for this
    agency (its member, an owner with these credentials and community set, not deleted by
    ``now``, public)."""
    rows = database.query_rows(OWN_POSITIONS, agency["MemberID"], agency["GetInvolvedUser"],
                               agency["GetInvolvedToken"], agency["GetInvolvedSite"], now)
    return {row[0] for row in rows}


def positions_of(context, database, agency):
    """The agency's rows of sp_VOL_GetInvolved_Sync, the other ones it returns left out."""
    import datetime

    (rows,) = database.call("sp_VOL_GetInvolved_Sync", agency["MemberID"],
                            agency["GetInvolvedUser"], agency["GetInvolvedToken"],
                            agency["GetInvolvedSite"])
    own = own_positions(database, agency, datetime.datetime.now().replace(microsecond=0))
    kept = [row for row in rows if row["VNUM"] in own]
    others = {row["VNUM"] for row in rows} - own
    if others:
        context.log.info("member %s agency %s: left out %d positions that are not its own: %s",
                         agency["MemberID"], agency["GetInvolvedUser"], len(others),
                         ", ".join(sorted(others)[:10]) + (", ..." if len(others) > 10 else ""))
    return kept


def sync_agency(context, database, agency, client):
    """Send one agency's changed opportunities and withdraw the ones gone; return counts."""
    rows = positions_of(context, database, agency)
    prefix = f"{context.database}:{agency['MemberID']}:{agency['GetInvolvedUser']}:"
    known = context.state.items(context.task, prefix)
    opportunities = opportunities_of(rows)
    hashes = {o["id"]: content_hash(o) for o in opportunities}
    changed = [o for o in opportunities
               if context.args.full or known.get(prefix + o["id"]) != hashes[o["id"]]]
    gone = sorted(key[len(prefix):] for key in known if key[len(prefix):] not in hashes)
    if context.dry_run:
        return len(changed), len(gone)
    for start in range(0, len(changed), BATCH):
        batch = changed[start:start + BATCH]
        client.call("opportunities.upsert", {"opportunities": batch})
        context.state.set_many(context.task, {prefix + o["id"]: hashes[o["id"]] for o in batch})
    for start in range(0, len(gone), BATCH):
        batch = gone[start:start + BATCH]
        client.call("opportunities.withdraw", {"ids": batch})
        for vnum in batch:
            context.state.delete(context.task, prefix + vnum)
    return len(changed), len(gone)


def task(context, name):
    from cioctasks import config

    args = context.args
    # For a test site or a local stand-in: replaces every agency's GetInvolvedSite.
    override = config.setting_text(context.settings, "CIOC_GETINVOLVED_URL")
    sent = withdrawn = agencies = 0
    with context.connect(name) as database:
        require_feature(database)
        (enabled,) = database.call("sp_VOL_GetInvolved_Enabled")
        for agency in enabled:
            label = f"member {agency['MemberID']} agency {agency['GetInvolvedUser']}"
            try:
                client = Client(override or agency["GetInvolvedSite"], agency["GetInvolvedUser"],
                                agency["GetInvolvedToken"], args.timeout, args.retries,
                                args.backoff, context.log)
                changed, gone = sync_agency(context, database, agency, client)
            except SyncError as error:
                context.problem(f"{label}: {error}")
                continue
            context.log.info("%s: %d sent, %d withdrawn", label, changed, gone)
            sent, withdrawn, agencies = sent + changed, withdrawn + gone, agencies + 1
    verb = "would send" if context.dry_run else "sent"
    return f"{agencies} of {len(enabled)} agencies synced; {verb} {sent}, withdrew {withdrawn}"


def add_arguments(parser):
    from cioctasks import runner

    parser.add_argument("--full", action="store_true", help="send every opportunity again")
    runner.add_retry_arguments(parser, timeout=30, backoff=2)


if __name__ == "__main__":
    sys.exit(cioctasks.run(task, add_arguments, per_database=True))
