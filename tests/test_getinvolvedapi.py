"""getinvolvedapi against a local service that implements the README's contract.

Current CIOC databases have no GetInvolved feature (CIOC removed it in 2022): the `world`
fixture's sites are such databases and are skipped. ``old_world`` builds ciocdemo as a
database from before the removal (``sampledb.create(..., getinvolved=...)``); its
ciocnord stays current.
"""

import datetime
import json
import sqlite3
import sys

import pytest

from conftest import ROOT, assert_no_traceback, connect, make_world, run_command
from getinvolved_site import GetInvolvedSite

SCRIPT = ROOT / "cron" / "getinvolvedapi.py"
FAST = ["--retries", "0", "--backoff", "0", "--timeout", "5"]
NOT_IN_THIS_VERSION = "the GetInvolved feature is not in this CIOC version"
sys.path.insert(0, str(ROOT / "cron"))
import getinvolvedapi  # noqa: E402


@pytest.fixture
def old_world(tmp_path, monkeypatch):
    """A two-site sample world whose ciocdemo is a CIOC database from before GetInvolved was
    removed; its settings set in os.environ, ``old_world.env`` for subprocesses."""
    return make_world(tmp_path, monkeypatch, getinvolved=("ciocdemo",))


def agencies(world, site="ciocdemo"):
    """(MemberID, GetInvolvedUser, GetInvolvedToken) of each set of credentials, as
    sp_VOL_GetInvolved_Enabled lists them (member 1's two agencies share one)."""
    with sqlite3.connect(world.database(site)) as connection:
        return connection.execute(
            "SELECT DISTINCT MemberID, GetInvolvedUser, GetInvolvedToken FROM GBL_Agency "
            "WHERE GetInvolvedUser IS NOT NULL ORDER BY MemberID").fetchall()


def sync_rows(world, member_id, site="ciocdemo"):
    """What sp_VOL_GetInvolved_Sync returns for the member's credentials."""
    with connect(world, site) as database:
        (enabled,) = database.call("sp_VOL_GetInvolved_Enabled")
        agency = next(a for a in enabled if a["MemberID"] == member_id)
        (rows,) = database.call("sp_VOL_GetInvolved_Sync", agency["MemberID"],
                                agency["GetInvolvedUser"], agency["GetInvolvedToken"],
                                agency["GetInvolvedSite"])
    return rows


def add_opportunities(world, count, site="ciocdemo"):
    """Copy positions of member 1's GetInvolved agency ``count`` times, so batches fill up."""
    from cioctasks.sampledb import schema

    with sqlite3.connect(world.database(site)) as connection:
        code = connection.execute("SELECT AgencyCode FROM GBL_Agency WHERE MemberID = 1 "
                                  "AND GetInvolvedUser IS NOT NULL").fetchone()[0]
        num = connection.execute("SELECT NUM FROM GBL_BaseTable_Description WHERE LangID = 0 "
                                 "ORDER BY NUM LIMIT 1").fetchone()[0]
        inserter = schema.Inserter(connection)
        vnums = [f"X{number:06}" for number in range(1, count + 1)]
        inserter.insert("VOL_Opportunity", [dict(VNUM=v, MemberID=1, NUM=num, RECORD_OWNER=code)
                                            for v in vnums])
        inserter.insert("VOL_Opportunity_Description", [
            dict(VNUM=v, LangID=0, POSITION_TITLE=f"Copy {v}") for v in vnums])
        inserter.insert("VOL_OP_CM", [dict(VNUM=v, CM_ID=1) for v in vnums])
        inserter.insert("VOL_OP_CommunitySet", [dict(VNUM=v, CommunitySetID=1) for v in vnums])


@pytest.fixture
def site(old_world, httpserver):
    (member, user, token), _ = agencies(old_world)
    service = GetInvolvedSite(httpserver, user, token)
    old_world.env["CIOC_GETINVOLVED_URL"] = service.url
    return service


def run(world, *args, database="ciocdemo"):
    selected = ["-a", database] if database else []
    return run_command([sys.executable, SCRIPT, *selected, *FAST, *args], world.env)


def status_rows(world):
    result = run_command([sys.executable, "-m", "cioctasks", "status", "--json"], world.env)
    assert result.returncode in (0, 1), result.stderr
    return [r for r in json.loads(result.stdout) if r["task"] == "getinvolvedapi"]


def test_a_first_sync_sends_every_opportunity_then_only_changes(old_world, site):
    site.credentials = None  # accept both agencies
    first = run(old_world)
    assert first.returncode == 0, first.stderr
    assert_no_traceback(first)
    assert site.opportunities
    sent = len(site.opportunities)
    opportunity = next(iter(site.opportunities.values()))
    english = opportunity["languages"]["en-CA"]
    assert english["url"].startswith("https://ciocdemo") and "/volunteer/record/" in english["url"]
    assert english["communities"] and all(c.endswith(", Ontario") for c in english["communities"])
    with sqlite3.connect(old_world.database("ciocdemo")) as connection:
        org_cultures = {}
        for vnum, culture in connection.execute(
                "SELECT vo.VNUM, l.Culture FROM VOL_Opportunity vo JOIN GBL_BaseTable_Description "
                "btd ON btd.NUM = vo.NUM JOIN STP_Language l ON l.LangID = btd.LangID"):
            org_cultures.setdefault(vnum, set()).add(culture)
    # One language per language of the organization's name; the position's text is English.
    assert all(set(o["languages"]) == org_cultures[o["id"]] for o in site.opportunities.values())
    assert {"en-CA", "fr-CA"} in [set(o["languages"]) for o in site.opportunities.values()]
    second = run(old_world)
    assert "sent 0, withdrew 0" in second.stdout
    vnum = sorted(site.opportunities)[0]
    with sqlite3.connect(old_world.database("ciocdemo")) as connection:
        connection.execute("UPDATE VOL_Opportunity_Description SET DUTIES = 'Nouvelles tâches' "
                           "WHERE VNUM = ?", (vnum,))
        gone = sorted(site.opportunities)[1]
        connection.execute("UPDATE VOL_Opportunity_Description SET NON_PUBLIC = 1 WHERE VNUM = ?",
                           (gone,))
    third = run(old_world)
    assert "sent 1, withdrew 1" in third.stdout, third.stdout
    assert gone not in site.opportunities and len(site.opportunities) == sent - 1
    full = run(old_world, "--full")
    assert f"sent {sent - 1}," in full.stdout


def test_the_procedure_s_xml_name_lists_are_sent_as_names(old_world, site):
    site.credentials = None
    with sqlite3.connect(old_world.database("ciocdemo")) as connection:
        connection.execute("UPDATE VOL_GetInvolved_Interest SET GIInterestName = "
                           "'Arts & \"Culture\" <en> plein air' WHERE GIInterestID = 1")
        connection.execute("UPDATE GBL_Community_Name SET Name = 'Orléans & Cumberland' "
                           "WHERE LangID = 0 AND CM_ID = 1")
    add_opportunities(old_world, 1)  # in community 1; its interests come next
    with sqlite3.connect(old_world.database("ciocdemo")) as connection:
        connection.execute("INSERT INTO VOL_OP_AI (VNUM, AI_ID) SELECT 'X000001', AI_ID "
                           "FROM VOL_Interest_GetInvolved_Map WHERE GIInterestID = 1")
        connection.executemany("INSERT INTO VOL_OP_CM (VNUM, CM_ID) VALUES ('X000001', ?)",
                               [(cm_id,) for cm_id in range(2, 7)])
    result = run(old_world)
    assert result.returncode == 0, result.stderr
    english = site.opportunities["X000001"]["languages"]["en-CA"]
    assert len(english["communities"]) == 4  # the procedure's TOP 4, of 6
    assert english["communities"][0] == "Orléans & Cumberland, Ontario"
    assert 'Arts & "Culture" <en> plein air' in english["interests"]
    every = [o["languages"][c] for o in site.opportunities.values() for c in o["languages"]]
    assert all(isinstance(name, str) and "<NAME" not in name and "&amp;" not in name
               for language in every
               for name in language["communities"] + language["interests"] + language["skills"])
    assert any(language["skills"] for language in every)


def test_name_lists_are_decoded_from_xml_written_as_the_old_procedure_wrote_it():
    from cioctasks import procs

    row = {
        "VNUM": "V000042",
        "COMMUNITIES": '<NAMES><NAME Name="Orléans, Ontario"/><NAME Name="A &amp; B, Ontario"/>'
                       "</NAMES>",
        "INTERESTS": '<NAMES><NAME Name="Arts &amp; Culture"/><NAME Name="Seniors"/></NAMES>',
        "SKILLS": None,
        "OP_NAME": "Driver", "ORG_NAME_FULL": "Food  Bank,\r\nOttawa", "DUTIES": "Drive",
        "DISPLAY_UNTIL": datetime.datetime(2030, 1, 2, 3, 4), "DELETION_DATE": None,
        "ViewInfo": '<DESCS><DESC AccessURL="vol.example.org" Culture="en-CA"/>'
                    '<DESC ViewType="12" AccessURL="vol.example.org" Culture="fr-CA"/></DESCS>',
        "Culture": "fr-CA",
    }
    (decoded,) = procs.normalize(procs.get("sp_VOL_GetInvolved_Sync"), [[row]])
    (opportunity,) = getinvolvedapi.opportunities_of(decoded)
    french = opportunity["languages"]["fr-CA"]
    assert french["communities"] == ["Orléans, Ontario", "A & B, Ontario"]
    assert french["interests"] == ["Arts & Culture", "Seniors"]
    assert french["skills"] == []
    assert french["organization"] == "Food Bank, Ottawa"
    assert french["display_until"] == "2030-01-02 03:04:00"
    assert french["url"] == "https://vol.example.org/volunteer/record/V000042?UseVOLVw=12"


def test_only_the_agency_s_own_positions_are_sent_though_the_procedure_returns_others(
        old_world, site):
    site.credentials = None
    (first_member, first_user, _), (_, second_user, _) = agencies(old_world)
    future = (datetime.datetime.now() + datetime.timedelta(days=20)).strftime(
        "%Y-%m-%d %H:%M:00.000")
    member_2_position = sync_rows(old_world, 2)[0]["VNUM"]
    with sqlite3.connect(old_world.database("ciocdemo")) as connection:
        # Member 2's position, shared with member 1 (so member 1's views show it) and
        # deleted in 20 days.
        connection.execute("INSERT INTO GBL_SharingProfile (ProfileID, MemberID, ShareMemberID, "
                           "Active, CanUseAnyView) VALUES (10, 2, 1, 1, 1)")
        connection.execute("INSERT INTO VOL_OP_SharingProfile (VNUM, ProfileID, "
                           "ShareMemberID_Cache) VALUES (?, 10, 1)", (member_2_position,))
        connection.execute("INSERT INTO VOL_OP_CommunitySet (VNUM, CommunitySetID) VALUES (?, 1)",
                           (member_2_position,))
        # Member 1's position of an agency that has no GetInvolved credentials.
        other_agency = connection.execute(
            "SELECT vo.VNUM FROM VOL_Opportunity vo JOIN GBL_Agency a "
            "ON a.AgencyCode = vo.RECORD_OWNER WHERE vo.MemberID = 1 "
            "AND a.GetInvolvedUser IS NULL ORDER BY vo.VNUM LIMIT 1").fetchone()[0]
        connection.execute("UPDATE VOL_Opportunity_Description SET DELETION_DATE = ? "
                           "WHERE VNUM IN (?, ?)", (future, member_2_position, other_agency))
    returned = {r["VNUM"] for r in sync_rows(old_world, first_member)}
    assert {member_2_position, other_agency} <= returned  # the procedure's WHERE lets them in
    result = run(old_world)
    assert result.returncode == 0, result.stderr
    posted = {}
    for method, params, user in site.calls:
        for opportunity in params.get("opportunities", ()):
            posted.setdefault(opportunity["id"], set()).add(user)
    assert other_agency not in posted
    assert posted[member_2_position] == {second_user}  # its own agency still sends it
    own = {r["VNUM"] for r in sync_rows(old_world, first_member)} - {member_2_position,
                                                                      other_agency}
    assert {v for v, users in posted.items() if first_user in users} == own
    log = (old_world.directory / "logs" / "cioctasks" / "getinvolvedapi.log").read_text(
        encoding="utf-8")
    assert "left out 2 positions that are not its own" in log


def test_a_database_without_getinvolved_is_skipped_in_one_line_and_shown_skipped(world):
    result = run(world, database=None)
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result)
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    for line, name in zip(lines, ("ciocdemo", "ciocnord")):
        assert line.startswith(f"{name}: skipped (") and NOT_IN_THIS_VERSION in line
    assert result.stderr == ""
    assert not list((world.directory / "mail").glob("*.eml"))
    rows = status_rows(world)
    assert {(r["database"], r["status"], r["failed"]) for r in rows} == {
        ("ciocdemo", "skipped", False), ("ciocnord", "skipped", False)}
    assert all(NOT_IN_THIS_VERSION in r["summary"] for r in rows)


def test_an_old_database_syncs_while_a_current_one_is_skipped(old_world, site):
    site.credentials = None
    result = run(old_world, database=None)
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result)
    demo, nord = result.stdout.splitlines()
    assert demo.startswith("ciocdemo: ok (") and "2 of 2 agencies synced" in demo
    assert nord.startswith("ciocnord: skipped (") and NOT_IN_THIS_VERSION in nord
    assert site.opportunities
    assert {(r["database"], r["status"]) for r in status_rows(old_world)} == {
        ("ciocdemo", "ok"), ("ciocnord", "skipped")}


def test_a_procedure_the_login_may_not_run_fails_that_database(old_world, site):
    # SQL Server says so through HAS_PERMS_BY_NAME; the sample has no permissions to deny.
    code = ("import runpy, sys\n"
            "from cioctasks import db\n"
            "state = db.Database.procedure_state\n"
            "db.Database.procedure_state = lambda self, name: (\n"
            "    'denied' if name == 'sp_VOL_GetInvolved_Sync' and state(self, name) == 'ok'\n"
            "    else state(self, name))\n"
            "sys.argv = sys.argv[1:]\n"
            "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    result = run_command([sys.executable, "-c", code, SCRIPT, *FAST], old_world.env)
    assert result.returncode == 1
    assert_no_traceback(result)
    assert ("this login may not EXECUTE sp_VOL_GetInvolved_Sync "
            "(CIOC grants it to cioc_maintenance_role)" in result.stderr)
    assert "getinvolvedapi: failed: ciocdemo" in result.stderr
    assert "ciocnord: skipped" in result.stdout
    assert site.calls == []
    statuses = {(r["database"], r["status"], r["failed"]) for r in status_rows(old_world)}
    assert statuses == {("ciocdemo", "failed", True), ("ciocnord", "skipped", False)}


def test_batches_hold_at_most_100_and_a_failed_batch_resumes_where_it_stopped(old_world, site):
    add_opportunities(old_world, 250)
    site.failures = [None, "500"]
    failed = run(old_world)
    assert failed.returncode == 1
    assert_no_traceback(failed)
    assert "HTTP 500 after 1 attempts" in failed.stderr
    first_batch = {o["id"] for o in site.calls[0][1]["opportunities"]}
    assert len(first_batch) == 100
    site.calls.clear()
    resumed = run(old_world)
    assert resumed.returncode == 1  # the second agency still has the wrong credentials
    resent = {o["id"] for method, params, _ in site.calls if method == "opportunities.upsert"
              for o in params["opportunities"]}
    assert not resent & first_batch
    assert all(len(params["opportunities"]) <= 100 for method, params, _ in site.calls
               if method == "opportunities.upsert")


def test_a_refused_token_fails_that_agency_only(old_world, site):
    result = run(old_world)
    assert result.returncode == 1
    (_, first_user, _), (_, second_user, second_token) = agencies(old_world)
    assert f"agency {second_user}: opportunities.upsert: the site refused the user and token (401)" in result.stderr
    assert "1 of 2 agencies synced" in result.stdout
    assert {user for _, _, user in site.calls} == {first_user}
    log = (old_world.directory / "logs" / "cioctasks" / "getinvolvedapi.log").read_text(encoding="utf-8")
    assert second_token not in log + result.stdout + result.stderr


def test_a_timeout_is_retried_then_succeeds(old_world, site):
    site.credentials = None
    site.failures = ["timeout"]  # answered only after the client has given up on it
    result = run_command([sys.executable, SCRIPT, "-a", "ciocdemo", "--retries", "1",
                          "--backoff", "0", "--timeout", "2"], old_world.env)
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result)
    assert site.gave_up == [True]
    assert site.opportunities
    log = old_world.directory / "logs" / "cioctasks" / "getinvolvedapi.log"
    assert "ReadTimeout; retrying" in log.read_text(encoding="utf-8")


def test_a_503_is_retried_after_the_delay_its_retry_after_header_asks(old_world, site):
    site.credentials = None
    site.failures = ["503"]
    result = run_command([sys.executable, SCRIPT, "-a", "ciocdemo", "--retries", "1",
                          "--backoff", "0.01", "--timeout", "5"], old_world.env)
    assert result.returncode == 0, result.stderr
    assert site.opportunities
    assert 0.9 <= site.times[1] - site.times[0] < 5
    log = (old_world.directory / "logs" / "cioctasks" / "getinvolvedapi.log").read_text(
        encoding="utf-8")
    assert "POST /rpc: HTTP 503; retrying in 1 s (attempt 2 of 2)" in log


def test_a_429_is_retried_then_fails_the_agency_naming_the_status_and_attempts(old_world, site):
    site.credentials = None
    site.failures = ["429", "429", "429"]
    result = run_command([sys.executable, SCRIPT, "-a", "ciocdemo", "--retries", "2",
                          "--backoff", "0.01", "--timeout", "5"], old_world.env)
    assert result.returncode == 1
    assert_no_traceback(result)
    assert "opportunities.upsert: HTTP 429 after 3 attempts" in result.stderr
    assert "1 of 2 agencies synced" in result.stdout  # the next agency's calls went through
    log = (old_world.directory / "logs" / "cioctasks" / "getinvolvedapi.log").read_text(
        encoding="utf-8")
    assert log.count("HTTP 429; retrying") == 2


def test_a_refused_token_is_not_retried(old_world, site):
    site.credentials = None
    site.failures = ["401"]
    result = run_command([sys.executable, SCRIPT, "-a", "ciocdemo", "--retries", "3",
                          "--backoff", "0.01", "--timeout", "5"], old_world.env)
    assert result.returncode == 1
    assert "opportunities.upsert: the site refused the user and token (401)" in result.stderr
    assert len(site.times) - len(site.calls) == 1  # one refused request, none sent again
    assert "retrying" not in (old_world.directory / "logs" / "cioctasks" /
                              "getinvolvedapi.log").read_text(encoding="utf-8")


def test_a_site_that_never_answers_fails_the_agency_naming_the_timeout(old_world, site):
    site.credentials = None
    site.failures = ["timeout", "timeout"]
    result = run_command([sys.executable, SCRIPT, "-a", "ciocdemo", "--retries", "1",
                          "--backoff", "0.01", "--timeout", "1"], old_world.env)
    assert result.returncode == 1
    assert_no_traceback(result)
    assert "opportunities.upsert: no answer within 1 s after 2 attempts" in result.stderr
    assert site.gave_up == [True, True]


def test_a_json_rpc_error_fails_the_agency_with_its_message(old_world, site):
    site.credentials = None
    site.failures = ["error"]
    result = run(old_world)
    assert result.returncode == 1
    assert "the site answered error -32000: quota exceeded" in result.stderr


def test_a_dry_run_posts_nothing(old_world, site):
    result = run(old_world, "-n")
    assert result.returncode == 0
    assert "would send" in result.stdout
    assert site.calls == []


def test_a_site_that_is_not_https_gets_no_credentials(old_world):
    with sqlite3.connect(old_world.database("ciocdemo")) as connection:
        connection.execute("UPDATE GBL_Agency SET GetInvolvedSite = 'http://evil.example.org/rpc' "
                           "WHERE GetInvolvedUser IS NOT NULL")
    result = run(old_world)
    assert result.returncode == 1
    assert "GetInvolvedSite is not an https URL" in result.stderr
