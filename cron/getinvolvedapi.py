"""Sync volunteer opportunities to getinvolved.ca for every agency that has it set up.

sp_VOL_GetInvolved_Enabled lists the agencies; sp_VOL_GetInvolved_Sync gives each one's
opportunities. Only opportunities whose content changed since the last sync are sent
(--full sends all), in JSON-RPC 2.0 batches of at most 100 to the agency's
GetInvolvedSite, with HTTP Basic authentication (GetInvolvedUser, GetInvolvedToken);
opportunities no longer listed are withdrawn. Progress is recorded after each batch, so
a failed run resumes where it stopped. Timeouts and 5xx replies are retried with backoff;
then that agency fails and the others go on. A 401 fails that agency only.
The contract is documented in the README ("getinvolved.ca contract").
"""

import itertools
import sys
import time
from urllib.parse import urlsplit

import cioctasks
from cioctasks import udl, urls

BATCH = 100
_ids = itertools.count(1)


class SyncError(cioctasks.TaskError):
    """An agency whose sync cannot go on this run."""


def _text(value):
    if value is None:
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat(sep=" ") if hasattr(value, "hour") else value.isoformat()
    return str(value)


def _list(value):
    return [part.strip() for part in (value or "").split(";") if part.strip()]


def opportunities_of(rows):
    """Turn the procedure's rows (one per opportunity and culture) into one object per
    opportunity, the shape the contract sends: {id, languages: {culture: {...}}}."""
    by_vnum = {}
    for row in rows:
        view = (row.get("ViewInfo") or [{}])[0]
        entry = by_vnum.setdefault(row["VNUM"], {"id": row["VNUM"], "languages": {}})
        entry["languages"][row["Culture"]] = {
            "title": row["OP_NAME"],
            "organization": " ".join((row["ORG_NAME_FULL"] or "").split()),
            "duties": row["DUTIES"],
            "communities": _list(row["COMMUNITIES"]),
            "interests": _list(row["INTERESTS"]),
            "skills": _list(row["SKILLS"]),
            "display_until": _text(row["DISPLAY_UNTIL"]),
            "deletion_date": _text(row["DELETION_DATE"]),
            "url": urls.opportunity(view.get("AccessURL"), row["VNUM"], view.get("ViewType")),
        }
    return list(by_vnum.values())


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
    """A JSON-RPC 2.0 client for one agency, with retries and backoff."""

    def __init__(self, site, user, token, timeout, retries, backoff, log):
        import requests

        self.site = check_site(site)
        self.session = requests.Session()
        self.session.auth = (user, token)
        self.session.headers["User-Agent"] = f"cioctasks/{cioctasks.__version__}"
        self.timeout, self.retries, self.backoff, self.log = timeout, retries, backoff, log
        self.secrets = [token]

    def call(self, method, params):
        import requests

        request_id = next(_ids)
        body = {"jsonrpc": "2.0", "method": method, "params": params, "id": request_id}
        for attempt in range(self.retries + 1):
            try:
                response = self.session.post(self.site, json=body, timeout=self.timeout)
            except (requests.Timeout, requests.ConnectionError) as error:
                problem = f"{method}: {error.__class__.__name__}"
            else:
                if response.status_code == 401:
                    raise SyncError(f"{method}: the site refused the user and token (401)")
                if response.status_code < 500:
                    return self._result(method, request_id, response)
                problem = f"{method}: HTTP {response.status_code}"
            if attempt < self.retries:
                delay = self.backoff * (2 ** attempt)
                self.log.warning("%s; retrying in %.1fs", problem, delay)
                time.sleep(delay)
        raise SyncError(f"{problem} after {self.retries + 1} attempts")

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


def sync_agency(context, database, agency, client):
    """Send one agency's changed opportunities and withdraw the ones gone; return counts."""
    (rows,) = database.call("sp_VOL_GetInvolved_Sync", agency["MemberID"],
                            agency["GetInvolvedUser"], agency["GetInvolvedToken"],
                            agency["GetInvolvedSite"])
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
