"""getinvolvedapi against a local service that implements the README's contract."""

import sqlite3
import sys

import pytest

from conftest import ROOT, assert_no_traceback, run_command
from getinvolved_site import GetInvolvedSite

SCRIPT = ROOT / "cron" / "getinvolvedapi.py"
FAST = ["--retries", "0", "--backoff", "0", "--timeout", "5"]


def agencies(world, site="ciocdemo"):
    with sqlite3.connect(world.database(site)) as connection:
        return connection.execute(
            "SELECT MemberID, GetInvolvedUser, GetInvolvedToken FROM GBL_Agency "
            "WHERE GetInvolvedUser IS NOT NULL ORDER BY MemberID").fetchall()


def add_opportunities(world, count, site="ciocdemo"):
    """Copy a synced opportunity of member 1 ``count`` times, so batches fill up."""
    with sqlite3.connect(world.database(site)) as connection:
        code = connection.execute("SELECT AgencyCode FROM GBL_Agency WHERE MemberID = 1 "
                                  "AND GetInvolvedUser IS NOT NULL").fetchone()[0]
        connection.execute(f"""
            WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {count})
            INSERT INTO VOL_Opportunity (VNUM, MemberID, NUM, RECORD_OWNER)
            SELECT 'X' || printf('%06d', i), 1, (SELECT NUM FROM GBL_BaseTable LIMIT 1), ? FROM n""",
                           (code,))
        connection.execute("""INSERT INTO VOL_Opportunity_Description (VNUM, LangID, POSITION_TITLE)
                              SELECT VNUM, 0, 'Copy ' || VNUM FROM VOL_Opportunity WHERE VNUM LIKE 'X%'""")
        connection.execute("INSERT INTO VOL_OP_CM SELECT VNUM, 1 FROM VOL_Opportunity WHERE VNUM LIKE 'X%'")


@pytest.fixture
def site(world, httpserver):
    (member, user, token), _ = agencies(world)
    service = GetInvolvedSite(httpserver, user, token)
    world.env["CIOC_GETINVOLVED_URL"] = service.url
    return service


def run(world, *args):
    return run_command([sys.executable, SCRIPT, "-a", "ciocdemo", *FAST, *args], world.env)


def test_a_first_sync_sends_every_opportunity_then_only_changes(world, site):
    site.credentials = None  # accept both agencies
    first = run(world)
    assert first.returncode == 0, first.stderr
    assert_no_traceback(first)
    assert site.opportunities
    sent = len(site.opportunities)
    opportunity = next(iter(site.opportunities.values()))
    english = opportunity["languages"]["en-CA"]
    assert english["url"].startswith("https://ciocdemo") and "/volunteer/record/" in english["url"]
    assert all(c.endswith(", Ontario") for c in english["communities"])
    second = run(world)
    assert "sent 0, withdrew 0" in second.stdout
    vnum = sorted(site.opportunities)[0]
    with sqlite3.connect(world.database("ciocdemo")) as connection:
        connection.execute("UPDATE VOL_Opportunity_Description SET DUTIES = 'Nouvelles tâches' "
                           "WHERE VNUM = ?", (vnum,))
        gone = sorted(site.opportunities)[1]
        connection.execute("UPDATE VOL_Opportunity_Description SET NON_PUBLIC = 1 WHERE VNUM = ?",
                           (gone,))
    third = run(world)
    assert "sent 1, withdrew 1" in third.stdout, third.stdout
    assert gone not in site.opportunities and len(site.opportunities) == sent - 1
    full = run(world, "--full")
    assert f"sent {sent - 1}," in full.stdout


def test_batches_hold_at_most_100_and_a_failed_batch_resumes_where_it_stopped(world, site):
    add_opportunities(world, 250)
    site.failures = [None, "500"]
    failed = run(world)
    assert failed.returncode == 1
    assert_no_traceback(failed)
    assert "HTTP 500 after 1 attempts" in failed.stderr
    first_batch = {o["id"] for o in site.calls[0][1]["opportunities"]}
    assert len(first_batch) == 100
    site.calls.clear()
    resumed = run(world)
    assert resumed.returncode == 1  # the second agency still has the wrong credentials
    resent = {o["id"] for method, params, _ in site.calls if method == "opportunities.upsert"
              for o in params["opportunities"]}
    assert not resent & first_batch
    assert all(len(params["opportunities"]) <= 100 for method, params, _ in site.calls
               if method == "opportunities.upsert")


def test_a_refused_token_fails_that_agency_only(world, site):
    result = run(world)
    assert result.returncode == 1
    (_, first_user, _), (_, second_user, second_token) = agencies(world)
    assert f"agency {second_user}: opportunities.upsert: the site refused the user and token (401)" in result.stderr
    assert "1 of 2 agencies synced" in result.stdout
    assert {user for _, _, user in site.calls} == {first_user}
    log = (world.directory / "logs" / "cioctasks" / "getinvolvedapi.log").read_text(encoding="utf-8")
    assert second_token not in log + result.stdout + result.stderr


def test_a_timeout_is_retried_then_succeeds(world, site):
    site.credentials = None
    site.failures = ["timeout"]
    result = run_command([sys.executable, SCRIPT, "-a", "ciocdemo", "--retries", "2",
                          "--backoff", "0", "--timeout", "0.5"], world.env)
    assert result.returncode == 0, result.stderr
    assert site.opportunities


def test_a_json_rpc_error_fails_the_agency_with_its_message(world, site):
    site.credentials = None
    site.failures = ["error"]
    result = run(world)
    assert result.returncode == 1
    assert "the site answered error -32000: quota exceeded" in result.stderr


def test_a_dry_run_posts_nothing(world, site):
    result = run(world, "-n")
    assert result.returncode == 0
    assert "would send" in result.stdout
    assert site.calls == []


def test_a_site_that_is_not_https_gets_no_credentials(world):
    with sqlite3.connect(world.database("ciocdemo")) as connection:
        connection.execute("UPDATE GBL_Agency SET GetInvolvedSite = 'http://evil.example.org/rpc' "
                           "WHERE GetInvolvedUser IS NOT NULL")
    result = run(world)
    assert result.returncode == 1
    assert "GetInvolvedSite is not an https URL" in result.stderr
