"""volnotify: the matching rules at their boundaries, the messages, nothing twice."""

import datetime
import re
import sqlite3
import sys
import uuid
from decimal import Decimal
from pathlib import Path

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
    return {"VNUM": vnum, "MemberID": 1, "AccessURL": None,
            **{flag: flag in schedule for flag in matching.FLAGS},
            "MIN_AGE": None if min_age is None else Decimal(str(min_age)),
            "MAX_AGE": None if max_age is None else Decimal(str(max_age)),
            "COMMUNITIES": communities or None, "INTERESTS": interests or None,
            "OP_NAME": op_name or descs(f'<DESC POSITION_TITLE="Driver" Culture="en-CA" '
                                        f'NEWLY_CREATED="{int(new)}" CHANGED="{int(changed)}"/>'),
            "ORG_NAME": descs('<DESC ORG_LEVEL_1="Meals &amp; More" Culture="en-CA"/>'),
            "ViewInfo": view_info or descs('<DESC AccessURL="site.cioc.ca" Culture="en-CA"/>')}


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


def mail_of(profile_rows, notify_new, opportunity_rows, settings_row=SETTINGS):
    """{Email: message text} for what volnotify sends one member's profiles, from the
    procedure's result sets and each profile's NotifyNew, by the script's own functions."""
    renderer = volnotify.Renderer()
    profiles = [matching.Profile(row, notify_new[row["ProfileID"]]) for row in profile_rows]
    opportunities = [matching.Opportunity(row) for row in opportunity_rows]
    found = matching.match_all(profiles, opportunities)
    by_rules = {}
    for p_index, profile_ in enumerate(profiles):
        matched = [i for i, o in enumerate(opportunities) if matching.matches(profile_, o)]
        if matched:
            by_rules[p_index] = matched
    assert found == by_rules  # the indexed matcher and the rules agree
    messages = {}
    for p_index, o_indexes in found.items():
        message = volnotify.build_message(renderer, settings_row, profiles[p_index],
                                          [opportunities[i] for i in o_indexes])
        messages[message.recipients[0]] = message.text
    return messages


NEW_ONLY, CHANGED_ONLY, BOTH = "{00000000-0000-4000-8000-000000000001}", \
    "{00000000-0000-4000-8000-000000000002}", "{00000000-0000-4000-8000-000000000003}"


def test_notify_new_gets_new_positions_and_notify_updated_gets_changed_ones():
    positions = [
        opportunity_row("V1", op_name=descs(
            '<DESC POSITION_TITLE="Front desk" Culture="en-CA" NEWLY_CREATED="1" CHANGED="0"/>',
            '<DESC POSITION_TITLE="Accueil &amp; aide" Culture="fr-CA" '
            'NEWLY_CREATED="1" CHANGED="0"/>')),
        # Created long ago, its description changed in the window.
        opportunity_row("V2", op_name=descs(
            '<DESC POSITION_TITLE="Driver" Culture="en-CA" NEWLY_CREATED="0" CHANGED="1"/>')),
        # Created and changed in the window: new, not changed.
        opportunity_row("V3", op_name=descs(
            '<DESC POSITION_TITLE="Gardener" Culture="en-CA" NEWLY_CREATED="1" CHANGED="1"/>')),
        # Only its French description is new: the position is new.
        opportunity_row("V4", op_name=descs(
            '<DESC POSITION_TITLE="Cook" Culture="en-CA" NEWLY_CREATED="0" CHANGED="0"/>',
            '<DESC POSITION_TITLE="Cuisinier" Culture="fr-CA" NEWLY_CREATED="1" CHANGED="1"/>')),
    ]
    profiles = [profile_row(profile_id=NEW_ONLY, email="new@example.org", updated=False,
                            culture="fr-CA"),
                profile_row(profile_id=CHANGED_ONLY, email="changed@example.org", updated=True),
                profile_row(profile_id=BOTH, email="both@example.org", updated=True)]
    sent = mail_of(profiles, {NEW_ONLY: True, CHANGED_ONLY: False, BOTH: True}, positions)

    assert "* Accueil & aide - Meals & More (nouvelle)" in sent["new@example.org"]
    assert "Gardener" in sent["new@example.org"] and "Cuisinier" in sent["new@example.org"]
    assert "Driver" not in sent["new@example.org"]
    assert "* Driver - Meals & More (updated)" in sent["changed@example.org"]
    for title in ("Front desk", "Gardener", "Cook"):
        assert title not in sent["changed@example.org"]
    listed = [line for line in sent["both@example.org"].splitlines() if line.startswith("* ")]
    assert [line.split(" - ")[0] for line in listed] == [
        "* Front desk", "* Gardener", "* Cook", "* Driver"]  # new ones first


def test_a_profile_with_chosen_times_does_not_get_a_position_without_any():
    unscheduled = opportunity_row("V1", schedule=())
    evenings = opportunity_row("V2", schedule=("SCH_TU_Evening",))
    any_time, mornings, tuesdays = (
        profile_row(profile_id=f"{{00000000-0000-4000-8000-00000000000{n}}}",
                    email=f"p{n}@example.org", schedule=flags)
        for n, flags in ((1, ()), (2, ("SCH_M_Morning",)),
                         (3, ("SCH_M_Morning", "SCH_TU_Evening"))))
    sent = mail_of([any_time, mornings, tuesdays],
                   {row["ProfileID"]: True for row in (any_time, mornings, tuesdays)},
                   [unscheduled, evenings])
    assert "/volunteer/record/V1" in sent["p1@example.org"]
    assert "/volunteer/record/V2" in sent["p1@example.org"]
    assert "p2@example.org" not in sent  # neither has a Monday morning
    assert "/volunteer/record/V1" not in sent["p3@example.org"]
    assert "/volunteer/record/V2" in sent["p3@example.org"]


def test_ages_and_lists_come_as_the_procedure_types_them():
    position = opportunity(min_age=Decimal("16.00"), max_age=Decimal("17.00"),
                           communities="4,12,40", interests="7")
    assert position.communities == {4, 12, 40} and position.interests == {7}
    assert matching.matches(profile(communities="12", interests=None, age=Decimal("17.92")),
                            position)
    assert not matching.matches(profile(communities="12", age=Decimal("18.00")), position)
    # The sample's driver gives a computed decimal as text when it steps through rows.
    for age, fits in (("17.92", True), ("18.00", False)):
        row = {**profile_row(communities="12"), "AGE": age}
        assert matching.matches(matching.Profile(row, True), position) is fits
    assert not matching.matches(profile(communities=None), position)
    assert opportunity(communities=None, interests=None).interests == frozenset()


VIEW_INFO = descs('<DESC AccessURL="ciocdemo.cioc.ca" Culture="en-CA"/>',
                  '<DESC ViewType="12" AccessURL="other.host/path" Culture="fr-CA"/>')


@pytest.mark.parametrize("culture, view_info, expected", [
    ("en-CA", VIEW_INFO, "https://ciocdemo.cioc.ca/volunteer/record/V1"),
    ("fr-CA", VIEW_INFO, "https://other.host/path/volunteer/record/V1?UseVOLVw=12"),
    # No entry in the profile's culture: the first one, the member's default view.
    ("fr-CA", descs('<DESC AccessURL="ciocdemo.cioc.ca/" Culture="en-CA"/>'),
     "https://ciocdemo.cioc.ca/volunteer/record/V1"),
    ("en-CA", descs('<DESC ViewType="7" AccessURL="http://old.example.org" Culture="en-CA"/>'),
     "http://old.example.org/volunteer/record/V1?UseVOLVw=7"),
])
def test_links_go_through_the_view_of_the_profiles_language(culture, view_info, expected):
    row = profile_row(culture=culture)
    sent = mail_of([row], {row["ProfileID"]: True}, [opportunity_row("V1", view_info=view_info)])
    links = [line.strip() for line in sent["zoe@example.org"].splitlines()
             if "/volunteer/record/" in line]
    assert links == [expected]


@pytest.mark.parametrize("token", [
    "{B978427F-FCD8-44A2-B55F-407122566787}", "B978427F-FCD8-44A2-B55F-407122566787",
    "b978427f-fcd8-44a2-b55f-407122566787", " {b978427f-fcd8-44a2-b55f-407122566787} ",
])
def test_the_unsubscribe_link_has_the_token_in_braces_whatever_the_driver_gives(token):
    row = profile_row(token=token, email="zoe.roy@example.org")
    message = volnotify.build_message(volnotify.Renderer(), SETTINGS,
                                      matching.Profile(row, True), [opportunity()])
    expected = ("https://ciocdemo.cioc.ca/volunteer/profile/unsubscribe.asp?"
                "email=zoe.roy%40example.org&token=%7BB978427F-FCD8-44A2-B55F-407122566787%7D")
    assert message.headers["List-Unsubscribe"] == f"<{expected}>"
    assert message.text.rstrip().endswith(expected)


@pytest.mark.parametrize("token", [None, "", "not-a-guid", "{B978427F-FCD8-44A2-B55F}"])
def test_a_profile_without_a_real_token_gets_no_message(token):
    with pytest.raises(ValueError):
        volnotify.build_message(volnotify.Renderer(), SETTINGS,
                                matching.Profile(profile_row(token=token), True), [opportunity()])


def at(days_ago, hour=12):
    day = datetime.date.today() - datetime.timedelta(days=days_ago)
    return schema.stamp(datetime.datetime.combine(day, datetime.time(hour)))


def add_position(connection, vnum, titles, created, updated, community, **flags):
    """A position of member 1 in the sample database, shown in its views."""
    (num,) = connection.execute(
        "SELECT NUM FROM GBL_BaseTable WHERE MemberID = 1 ORDER BY NUM").fetchone()
    schema.insert(connection, "VOL_Opportunity", VNUM=vnum, MemberID=1, NUM=num,
                  CREATED_DATE=created, MODIFIED_DATE=updated, **flags)
    for lang_id, title in titles.items():
        schema.insert(connection, "VOL_Opportunity_Description", VNUM=vnum, LangID=lang_id,
                      POSITION_TITLE=title, CREATED_DATE=created, UPDATE_DATE=updated)
    schema.insert(connection, "VOL_OP_CM", VNUM=vnum, CM_ID=community)
    schema.insert(connection, "VOL_OP_CommunitySet", VNUM=vnum, CommunitySetID=1)


def add_profile(connection, email, new, updated, community, lang_id=0, **values):
    """A verified, active profile of member 1 in the sample database, in one community."""
    guids = ["{" + str(uuid.uuid4()).upper() + "}" for _ in range(2)]
    row = schema.insert(connection, "VOL_Profile", ProfileID=guids[0], UnsubscribeToken=guids[1],
                        MemberID=1, Email=email, FirstName="Zoé", LastName="Roy",
                        LangID=lang_id, NotifyNew=new, NotifyUpdated=updated,
                        Verified=1, Active=1, Blocked=0, **values)
    schema.insert(connection, "VOL_Profile_CM", ProfileID=row["ProfileID"], CM_ID=community)
    return row


def test_the_real_procedure_path_mails_new_and_changed_positions_to_who_asked(world):
    community = 9001  # used by no other position or profile of the sample
    with sqlite3.connect(world.database("ciocdemo")) as connection:
        schema.insert(connection, "GBL_Community", CM_ID=community)
        add_position(connection, "VTNEW", {0: "Front desk", 2: "Accueil & aide"},
                     created=at(1), updated=at(1), community=community)
        add_position(connection, "VTCHG", {0: "Driver"}, created=at(100), updated=at(1),
                     community=community)
        add_position(connection, "VTOLD", {0: "Archivist"}, created=at(100), updated=at(30),
                     community=community)
        add_profile(connection, "new.only@example.org", 1, 0, community, lang_id=2)
        changed = add_profile(connection, "changed.only@example.org", 0, 1, community)
        add_profile(connection, "both@example.org", 1, 1, community)
        add_profile(connection, "neither@example.org", 0, 0, community)
        add_profile(connection, "mondays@example.org", 1, 1, community, SCH_M_Morning=1)
        # SQL Server gives a uniqueidentifier without braces
        connection.execute("UPDATE VOL_Profile SET UnsubscribeToken = lower(substr("
                           "UnsubscribeToken, 2, 36)) WHERE ProfileID = ?",
                           (changed["ProfileID"],))

    sent = {m["To"].addresses[0].addr_spec: m
            for m in mails_of_a_run(world, SCRIPT, "-a", "ciocdemo", "--member", "1")}
    texts = {to: m.get_body(("plain",)).get_content().replace("\r\n", "\n")
             for to, m in sent.items()}
    assert {"neither@example.org", "mondays@example.org"}.isdisjoint(sent)

    assert sent["new.only@example.org"]["Subject"] == volnotify.SUBJECTS["fr_CA"]
    assert "* Accueil & aide" in texts["new.only@example.org"]
    assert "(nouvelle)\n  https://ciocdemo.cioc.ca/volunteer/record/VTNEW\n" in \
        texts["new.only@example.org"]
    assert "Driver" not in texts["new.only@example.org"]

    assert "* Driver" in texts["changed.only@example.org"]
    assert "(updated)\n  https://ciocdemo.cioc.ca/volunteer/record/VTCHG\n" in \
        texts["changed.only@example.org"]
    assert "Front desk" not in texts["changed.only@example.org"]
    token = changed["UnsubscribeToken"]
    unsubscribe = sent["changed.only@example.org"]["List-Unsubscribe"]
    assert f"token=%7B{token.strip('{}')}%7D>" in unsubscribe  # braced again

    listed = re.findall(r"^\* (\S+(?: \S+)?) - .* \((new|updated)\)$", texts["both@example.org"],
                        re.MULTILINE)
    assert listed == [("Front desk", "new"), ("Driver", "updated")]
    for text in texts.values():
        assert "Archivist" not in text  # changed before the window


def test_a_member_not_using_volunteer_profiles_is_not_processed(world):
    with sqlite3.connect(world.database("ciocdemo")) as connection:
        connection.execute("UPDATE STP_Member SET UseVolunteerProfiles = 0 WHERE MemberID = 2")
    result = run_command([sys.executable, SCRIPT, "-a", "ciocdemo"], world.env)
    assert result.returncode == 0, result.stderr
    assert "1 members, mailed" in result.stdout
    senders = {m["From"].addresses[0].addr_spec for m in mails(world)}
    assert senders == {"profils@ciocdemo1.example.org"}
    with sqlite3.connect(world.database("ciocdemo")) as connection:
        (date,) = connection.execute(
            "SELECT LastVolProfileEmailDate FROM STP_Member WHERE MemberID = 2").fetchone()
    assert date is None  # its window was not marked done either


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
        # AccessURL and BaseURL are host names: the links get a scheme; the sample's views
        # are each the default view or domain-mapped, so no link names a view.
        assert links and all(re.fullmatch(r"https://[\w.-]+/volunteer/record/V\d{6}", link)
                             for link in links), links
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


def crash_after(server, count, monkeypatch):
    """Run volnotify for member 1 in this process, mailing through ``server``, and cut the
    power (KeyboardInterrupt) once ``count`` messages have gone."""
    import cioctasks

    monkeypatch.setenv("CIOC_MAIL_BACKEND", "smtp")
    monkeypatch.setenv("CIOC_MAIL_PORT", str(server.port))
    real_send = mail.Session._send_smtp
    sent = []

    def send_then_crash(self, message):
        if len(sent) == count:
            raise KeyboardInterrupt("power cut")
        sent.append(message)
        return real_send(self, message)

    monkeypatch.setattr(mail.Session, "_send_smtp", send_then_crash)
    with pytest.raises(KeyboardInterrupt):
        cioctasks.run(volnotify.task, volnotify.add_arguments, per_database=True,
                      name="volnotify", argv=["-a", "ciocdemo", "-q", "--member", "1"])
    monkeypatch.setattr(mail.Session, "_send_smtp", real_send)
    server.wait_for(count)


def test_a_crash_half_way_through_a_batch_then_a_rerun_sends_only_the_rest(world, monkeypatch):
    with sqlite3.connect(world.database("ciocdemo")) as connection:
        (before,) = connection.execute(
            "SELECT LastVolProfileEmailDate FROM STP_Member WHERE MemberID = 1").fetchone()
    with SMTPServer() as server:
        crash_after(server, 5, monkeypatch)
        with sqlite3.connect(world.database("ciocdemo")) as connection:
            (date,) = connection.execute(
                "SELECT LastVolProfileEmailDate FROM STP_Member WHERE MemberID = 1").fetchone()
        assert date == before  # the batch did not finish: the window is not marked done
        env = dict(world.env, CIOC_MAIL_BACKEND="smtp", CIOC_MAIL_PORT=str(server.port))
        rerun = run_command([sys.executable, SCRIPT, "-a", "ciocdemo", "--member", "1"], env)
        assert rerun.returncode == 0, rerun.stderr
    recipients = [r for _, rs in server.envelopes for r in rs]
    assert len(recipients) == len(set(recipients)) > 5


@pytest.mark.parametrize("culture", ["en_CA", "fr_CA"])
def test_the_templates_render_as_jinja_renders_them_hostile_text_escaped_in_html(culture):
    renderer = volnotify.Renderer()
    positions = [{"title": "Aide <script>alert(1)</script> & \"co\"", "organization": "",
                  "url": "https://cioc.example/volunteer/record/V1?a=1&b=2", "new": True},
                 {"title": "Bénévole", "organization": "Centre d'action — Laval",
                  "url": "https://cioc.example/volunteer/record/V2", "new": False}]
    text, html = renderer.render(culture, "Zoé <b>", positions, "https://cioc.example/u?t=1&e=2")
    environment = renderer.environment
    values = {"first_name": "Zoé <b>", "count": 2, "unsubscribe_url": "https://cioc.example/u?t=1&e=2"}
    links = [environment.get_template(f"linktmpl_{culture}.txt").render(**p) for p in positions]
    html_links = [renderer.markup(environment.get_template(f"linktmpl_{culture}.html").render(**p))
                  for p in positions]
    assert text == environment.get_template(f"emailtmpl_{culture}.txt").render(links=links, **values)
    assert html == environment.get_template(f"emailtmpl_{culture}.html").render(links=html_links,
                                                                                **values)
    assert "&lt;script&gt;" in html and "<script>" not in html and "Zoé &lt;b&gt;" in html
    assert "<script>" in text  # plain text is not HTML


def test_profiles_read_a_few_at_a_time_then_a_crash_and_a_rerun_mail_each_volunteer_once(
        world, monkeypatch):
    """Profiles arrive, are matched and kept aside a few at a time (PROFILES_AT_ONCE) and
    messages go in batches (BATCH): a crash several batches in, and a rerun, mail exactly
    the volunteers a dry run said, each once."""
    dry = run_command([sys.executable, SCRIPT, "-a", "ciocdemo", "--member", "1", "-n"], world.env)
    expected = int(re.search(r"would mail (\d+) volunteers", dry.stdout).group(1))
    assert expected > 12
    monkeypatch.setattr(volnotify, "PROFILES_AT_ONCE", 3)
    monkeypatch.setattr(volnotify, "BATCH", 4)
    with SMTPServer() as server:
        crash_after(server, 10, monkeypatch)
        env = dict(world.env, CIOC_MAIL_BACKEND="smtp", CIOC_MAIL_PORT=str(server.port))
        rerun = run_command([sys.executable, SCRIPT, "-a", "ciocdemo", "--member", "1"], env)
        assert rerun.returncode == 0, rerun.stderr
    recipients = [r for _, rs in server.envelopes for r in rs]
    assert len(recipients) == len(set(recipients)) == expected


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_matched_profiles_kept_aside_on_a_full_disk_fail_that_member_in_one_line(tmp_path):
    import cioctasks

    with volnotify.Spill(tmp_path) as spill:
        spill.file.close()
        spill.file = open("/dev/full", "w+b")  # every write fails: no space left on device
        spill.write([volnotify.Recipient({"ProfileID": "{X}"}, [0])])  # still buffered
        with pytest.raises(cioctasks.TaskError) as error:
            list(spill.chunks())
    assert str(error.value) == f"cannot keep matched profiles in {tmp_path}: No space left on device"


def test_notify_new_is_asked_for_with_a_few_statement_texts_whatever_the_number_of_profiles():
    asked = []

    class Database:
        def query(self, sql, member_id, *ids):
            asked.append((sql, ids))
            return [{"ProfileID": i, "NotifyNew": True} for i in set(ids)]

    for count in range(1, volnotify.PROFILES_AT_ONCE + 1):
        recipients = [volnotify.Recipient({"ProfileID": f"{{P{n}}}"}, []) for n in range(count)]
        found = volnotify.notify_new_of(Database(), 1, recipients)
        assert found == {volnotify.guid_key(f"{{P{n}}}"): True for n in range(count)}
        assert asked[-1][0].count("?") == len(asked[-1][1]) + 1  # every mark has a value
    assert len({sql for sql, _ in asked}) == len(volnotify.IN_LENGTHS)
