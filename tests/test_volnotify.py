"""volnotify: the matching rules at their boundaries, the messages, nothing twice."""

import datetime
import re
import sqlite3
import sys
from decimal import Decimal

import pytest
from hypothesis import given, settings, strategies as st

from cioctasks import mail, procs
from cioctasks.sampledb import schema
from conftest import ROOT, assert_no_traceback, mails, mails_of_a_run, run_command
from smtpserver import SMTPServer

sys.path.insert(0, str(ROOT / "volnotify"))
import matching  # noqa: E402
import volnotify  # noqa: E402

SCRIPT = ROOT / "volnotify" / "volnotify.py"


def descs(*elements):
    """FOR XML PATH('DESC'), ROOT('DESCS') text of sp_VOL_Profile_Notify, decoded as both
    backends decode it."""
    return procs.decode_xml("<DESCS>" + "".join(elements) + "</DESCS>")


def opportunity_row(vnum="V1", communities="1", interests=None, min_age=None, max_age=None,
                    new=True, changed=False, schedule=(), op_name=None, view_info=None):
    """A row of sp_VOL_Profile_Notify's first result set, with its columns and types."""
    row = {"VNUM": vnum, "MemberID": 1, "AccessURL": None,
           **{flag: flag in schedule for flag in matching.FLAGS},
           "MIN_AGE": None if min_age is None else Decimal(str(min_age)),
           "MAX_AGE": None if max_age is None else Decimal(str(max_age)),
           "COMMUNITIES": communities or None, "INTERESTS": interests or None,
           "OP_NAME": op_name or descs(f'<DESC POSITION_TITLE="Driver" Culture="en-CA" '
                                       f'NEWLY_CREATED="{int(new)}" CHANGED="{int(changed)}"/>'),
           "ORG_NAME": descs('<DESC ORG_LEVEL_1="Meals &amp; More" Culture="en-CA"/>'),
           "ViewInfo": view_info or descs('<DESC AccessURL="site.cioc.ca" Culture="en-CA"/>')}
    return row


def opportunity(*args, **kwargs):
    return matching.Opportunity(opportunity_row(*args, **kwargs))


def profile_row(communities="1", interests=None, age=None, schedule=(), updated=False,
                culture="en-CA", profile_id="{0F8FAD5B-D9CB-469F-A165-70867728950E}",
                email="zoe@example.org", token="{B978427F-FCD8-44A2-B55F-407122566787}"):
    """A row of sp_VOL_Profile_Notify's second result set: no NotifyNew column."""
    return {"MemberID": 1, "ProfileID": profile_id, "FirstName": "Zoé", "LastName": "Roy",
            "Email": email, "NotifyUpdated": updated,
            **{flag: flag in schedule for flag in matching.FLAGS},
            "AGE": None if age is None else Decimal(str(age)),
            "COMMUNITIES": communities or None, "INTERESTS": interests or None,
            "Culture": culture, "UnsubscribeToken": token}


def profile(communities="1", interests=None, age=None, schedule=(), new=True, updated=False):
    return matching.Profile(profile_row(communities, interests, age, schedule, updated), new)


SETTINGS = {"BaseURL": "ciocdemo.cioc.ca", "DefaultEmailVOL": "benevolat@example.org",
            "DefaultEmailNameVOL": "Centre d'action bénévole", "DefaultEmailVOLProfile": None}


def text_of(message):
    return message.as_email().get_body(("plain",)).get_content() \
        if hasattr(message, "as_email") else message.text


@pytest.mark.parametrize("profile_communities, opportunity_communities, expected", [
    ("1,2", "2,9", True), ("1", "2", False), ("", "1", False),
    ("7", "3,7,12", True),  # the opportunity's list already holds parents and children
])
def test_communities_must_be_shared(profile_communities, opportunity_communities, expected):
    assert matching.matches(profile(profile_communities),
                            opportunity(communities=opportunity_communities)) is expected


@pytest.mark.parametrize("profile_interests, opportunity_interests, expected", [
    ("", "4", True), ("", "", True), ("4,5", "5", True), ("4", "6", False), ("4", "", False),
])
def test_interests_matter_only_when_the_profile_has_some(profile_interests, opportunity_interests, expected):
    assert matching.matches(profile(interests=profile_interests),
                            opportunity(interests=opportunity_interests)) is expected


@pytest.mark.parametrize("age, min_age, max_age, expected", [
    (None, 18, 25, True),
    (18.0, 18, None, True), (17.99, 18, None, False),
    (25.0, None, 25, True), (25.99, None, 25, True), (26.0, None, 25, False),
    (17.5, None, 17.5, True), (17.6, None, 17.5, False),  # a fractional MAX_AGE is exact
    (30.0, None, None, True), (12.0, 14, 65, False),
])
def test_age_limits_at_their_boundaries(age, min_age, max_age, expected):
    assert matching.matches(profile(age=age), opportunity(min_age=min_age, max_age=max_age)) is expected


@pytest.mark.parametrize("profile_flags, opportunity_flags, expected", [
    ((), ("SCH_M_Morning",), True), ((), (), True),
    (("SCH_M_Morning",), (), False),  # chosen times exclude a position with none
    (("SCH_M_Morning", "SCH_F_Evening"), ("SCH_F_Evening",), True),
    (("SCH_M_Morning",), ("SCH_M_Evening",), False),
])
def test_a_profile_with_chosen_times_needs_a_position_with_one_of_them(profile_flags, opportunity_flags, expected):
    assert matching.matches(profile(schedule=profile_flags),
                            opportunity(schedule=opportunity_flags)) is expected


def test_new_positions_go_to_who_wants_new_and_changed_to_who_wants_changes():
    new, changed = opportunity(new=True), opportunity(new=False, changed=True)
    assert matching.matches(profile(new=True, updated=False), new)
    assert not matching.matches(profile(new=True, updated=False), changed)
    assert matching.matches(profile(new=False, updated=True), changed)
    assert not matching.matches(profile(new=False, updated=True), new)


ids = st.sets(st.integers(1, 6), max_size=3).map(lambda s: ",".join(map(str, sorted(s))))
flags = st.sets(st.sampled_from(matching.FLAGS[:4]), max_size=2)
ages = st.one_of(st.none(), st.sampled_from([12.0, 17.5, 17.9, 18.0, 25.0, 25.5, 26.0, 70.0]))
limits = st.one_of(st.none(), st.sampled_from([14.0, 17.5, 18.0, 25.0]))
profiles_strategy = st.lists(st.builds(profile, ids, ids, ages, flags, st.booleans(), st.booleans()),
                             max_size=25)
opportunities_strategy = st.lists(st.builds(opportunity, st.just("V"), ids, ids, limits, limits,
                                            st.booleans(), st.booleans(), flags), max_size=25)


@settings(max_examples=300, deadline=None)
@given(profiles_strategy, opportunities_strategy)
def test_the_indexed_matcher_agrees_with_the_rules_pair_by_pair(profiles, opportunities):
    expected = {}
    for p_index, p in enumerate(profiles):
        for o_index, o in enumerate(opportunities):
            if matching.matches(p, o):
                expected.setdefault(p_index, []).append(o_index)
    found = {k: sorted(v) for k, v in matching.match_all(profiles, opportunities).items()}
    assert found == expected


def test_volunteers_get_one_message_each_in_their_language(world):
    sent = mails_of_a_run(world, SCRIPT, "-a", "ciocdemo")
    french = [m for m in sent if m["Subject"] == volnotify.SUBJECTS["fr_CA"]]
    assert french
    body = french[0].get_body(("plain",)).get_content()
    assert body.startswith("Bonjour ") and "Pour ne plus recevoir ces messages : https://" in body
    for message in sent:
        unsubscribe = message["List-Unsubscribe"]
        assert unsubscribe.startswith("<https://ciocdemo") and "unsubscribe.asp?email=" in unsubscribe
        assert "token=%7B" in unsubscribe
        assert message["From"].addresses[0].addr_spec == "profils@ciocdemo1.example.org" or \
            message["From"].addresses[0].addr_spec == "benevolat@ciocdemo2.example.org"
        text = message.get_body(("plain",)).get_content()
        links = [line.strip() for line in text.splitlines() if "/volunteer/record/" in line]
        assert links and all("?UseVOLVw=" in link for link in links)
        kinds = [line for line in text.splitlines() if line.startswith("* ")]
        flags = ["(new)" in k or "(nouvelle)" in k for k in kinds]
        assert flags == sorted(flags, reverse=True)  # new ones first
    with sqlite3.connect(world.database("ciocdemo")) as connection:
        dates = connection.execute("SELECT LastVolProfileEmailDate FROM STP_Member").fetchall()
    assert all(d[0] is not None for d in dates)
    again = run_command([sys.executable, SCRIPT, "-a", "ciocdemo"], world.env)
    assert "mailed 0 volunteers" in again.stdout


def test_html_is_escaped_and_titles_with_markup_stay_text(world):
    with sqlite3.connect(world.database("ciocdemo")) as connection:
        connection.execute("UPDATE VOL_Opportunity_Description SET POSITION_TITLE = "
                           "'<script>alert(1)</script> & Co'")
    run_command([sys.executable, SCRIPT, "-a", "ciocdemo"], world.env)
    html = mails(world)[0].get_body(("html",)).get_content()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co" in html


def test_a_bad_address_fails_that_message_only(world):
    with SMTPServer() as server:
        env = dict(world.env, CIOC_MAIL_BACKEND="smtp", CIOC_MAIL_PORT=str(server.port))
        with sqlite3.connect(world.database("ciocdemo")) as connection:
            first = run_command([sys.executable, SCRIPT, "-a", "ciocdemo", "-n"], env)
            assert first.returncode == 0
            addresses = [r[0] for r in connection.execute("SELECT Email FROM VOL_Profile")]
        server.refuse.update(addresses[:40])
        result = run_command([sys.executable, SCRIPT, "-a", "ciocdemo"], env)
    assert result.returncode == 1
    assert_no_traceback(result)
    assert "550" in result.stderr
    assert server.messages  # the others went out
    assert server.connections == 2  # one per member


def test_a_crash_half_way_through_a_batch_then_a_rerun_sends_only_the_rest(world, monkeypatch):
    import cioctasks

    with sqlite3.connect(world.database("ciocdemo")) as connection:
        (before,) = connection.execute(
            "SELECT LastVolProfileEmailDate FROM STP_Member WHERE MemberID = 1").fetchone()
    with SMTPServer() as server:
        monkeypatch.setenv("CIOC_MAIL_BACKEND", "smtp")
        monkeypatch.setenv("CIOC_MAIL_PORT", str(server.port))
        real_send = mail.Session.send
        sent = []

        def send_then_crash(self, message):
            if len(sent) == 5:
                raise KeyboardInterrupt("power cut")
            sent.append(message)
            return real_send(self, message)

        monkeypatch.setattr(mail.Session, "send", send_then_crash)
        with pytest.raises(KeyboardInterrupt):
            cioctasks.run(volnotify.task, volnotify.add_arguments, per_database=True,
                          name="volnotify", argv=["-a", "ciocdemo", "-q", "--member", "1"])
        monkeypatch.setattr(mail.Session, "send", real_send)
        server.wait_for(5)
        with sqlite3.connect(world.database("ciocdemo")) as connection:
            (date,) = connection.execute(
                "SELECT LastVolProfileEmailDate FROM STP_Member WHERE MemberID = 1").fetchone()
        assert date == before  # the batch did not finish: the window is not marked done
        env = dict(world.env, CIOC_MAIL_BACKEND="smtp", CIOC_MAIL_PORT=str(server.port))
        rerun = run_command([sys.executable, SCRIPT, "-a", "ciocdemo", "--member", "1"], env)
        assert rerun.returncode == 0, rerun.stderr
    recipients = [r for _, rs in server.envelopes for r in rs]
    assert len(recipients) == len(set(recipients)) > 5
