"""cic_changes_for_vol: one message per agency, English and French, exactly once."""

import datetime
import sqlite3
import sys
import time

from cioctasks import mail
from conftest import ROOT, assert_no_traceback, mails, mails_of_a_run, run_command
from smtpserver import SMTPServer, free_port

SCRIPT = ROOT / "cron" / "cic_changes_for_vol.py"


def test_each_agency_gets_one_message_listing_its_changed_records(world):
    messages = mails_of_a_run(world, SCRIPT, "-a", "ciocdemo")
    with sqlite3.connect(world.database("ciocdemo")) as connection:
        member_of = dict(connection.execute("SELECT UpdateEmailVOL, MemberID FROM GBL_Agency"))
        base_url_of = dict(connection.execute("SELECT MemberID, BaseURLVOL FROM STP_Member"))
    for message in messages:
        member = member_of[message["To"].addresses[0].addr_spec]
        assert message["From"].addresses[0].addr_spec == f"benevolat@ciocdemo{member}.example.org"
        body = message.get_body(("plain",)).get_content()
        assert f"https://{base_url_of[member]}/record/CIO" in body
        assert "is no longer public" in body or "will be deleted on" in body
        assert "Volunteer opportunities linked to it: " in body
    assert any("Bonjour" in m.get_body(("plain",)).get_content() for m in messages)


def test_a_second_run_at_once_sends_nothing(world):
    run_command([sys.executable, SCRIPT, "-a", "ciocdemo"], world.env)
    first = len(mails(world))
    again = run_command([sys.executable, SCRIPT, "-a", "ciocdemo"], world.env)
    assert again.returncode == 0, again.stderr
    assert len(mails(world)) == first
    # The same window, or (a minute later) one with no change in it.
    assert "nothing to report yet" in again.stdout or "mailed 0 agencies" in again.stdout


def test_since_rescans_without_moving_the_start_time(world):
    run_command([sys.executable, SCRIPT, "-a", "ciocdemo"], world.env)
    first = len(mails(world))
    yesterday = (datetime.datetime.now() - datetime.timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")
    rescan = run_command([sys.executable, SCRIPT, "-a", "ciocdemo", "--since", yesterday], world.env)
    assert rescan.returncode == 0
    assert len(mails(world)) == 2 * first
    later = run_command([sys.executable, SCRIPT, "-a", "ciocdemo"], world.env)
    assert len(mails(world)) == 2 * first
    assert "nothing to report yet" in later.stdout or "mailed 0 agencies" in later.stdout


def test_a_crash_half_way_then_a_rerun_sends_each_message_once(world, monkeypatch):
    """The first run dies after its first message; the rerun sends only the rest."""
    sys.path.insert(0, str(ROOT / "cron"))
    import cic_changes_for_vol
    import cioctasks

    real_send = mail.Session.send
    calls = []

    def send_then_crash(self, message, record=None):
        if calls:
            raise KeyboardInterrupt("power cut")
        calls.append(message)
        return real_send(self, message, record)

    monkeypatch.setattr(mail.Session, "send", send_then_crash)
    try:
        cioctasks.run(cic_changes_for_vol.task, cic_changes_for_vol.add_arguments,
                      per_database=True, name="cic_changes_for_vol", argv=["-a", "ciocdemo", "-q"])
    except KeyboardInterrupt:
        pass
    monkeypatch.setattr(mail.Session, "send", real_send)
    assert len(mails(world)) == 1
    time.sleep(1.1)  # the rerun starts on a later second: it must resume the same window
    rerun = run_command([sys.executable, SCRIPT, "-a", "ciocdemo"], world.env)
    assert rerun.returncode == 0, rerun.stderr
    recipients = [m["To"] for m in mails(world)]
    assert len(recipients) == len(set(recipients)) > 1


def test_mail_for_a_server_that_is_down_is_queued_and_the_run_says_so_with_exit_1(world):
    port = free_port()
    env = dict(world.env, CIOC_MAIL_BACKEND="smtp", CIOC_MAIL_PORT=str(port))
    result = run_command([sys.executable, SCRIPT, "-a", "ciocdemo"], env)
    assert result.returncode == 1  # not delivered: monitoring sees it tonight
    assert_no_traceback(result)
    spooled = list((world.directory / "state" / "outbox").glob("*.eml"))
    assert spooled
    assert "; mailed 0 agencies; " in result.stdout
    assert (f"queued {len(spooled)} messages for the next run (mail server 127.0.0.1:{port}: "
            "connection refused)") in result.stdout
    with SMTPServer(port=port) as server:
        time.sleep(1.1)
        again = run_command([sys.executable, SCRIPT, "-a", "ciocdemo"], env)
        assert again.returncode == 0, again.stderr
        assert len(server.wait_for(len(spooled))) == len(spooled)  # sent once, by the outbox
    assert "nothing to report yet" in again.stdout or "mailed 0 agencies" in again.stdout


def test_record_names_with_line_breaks_never_reach_a_header(world):
    with SMTPServer() as server:
        env = dict(world.env, CIOC_MAIL_BACKEND="smtp", CIOC_MAIL_PORT=str(server.port))
        # Make the record whose name holds a header injection change today.
        import sqlite3

        with sqlite3.connect(world.database("ciocdemo")) as connection:
            num = connection.execute("SELECT NUM FROM GBL_BaseTable_Description WHERE "
                                     "ORG_LEVEL_2 LIKE '%Bcc:%'").fetchone()[0]
            connection.execute("UPDATE VOL_Opportunity SET NUM = ? WHERE VNUM = 'V000001'", (num,))
            connection.execute("UPDATE VOL_Opportunity_Description SET NON_PUBLIC = 0, "
                               "DELETION_DATE = NULL WHERE VNUM = 'V000001'")
            connection.execute("UPDATE VOL_Opportunity SET DISPLAY_UNTIL = NULL WHERE VNUM = 'V000001'")
            connection.execute("INSERT INTO GBL_BaseTable_History (NUM, LangID, FieldID, MODIFIED_DATE) "
                               "VALUES (?, 0, 1, ?)",
                               (num, f"{datetime.datetime.now() - datetime.timedelta(minutes=3):%Y-%m-%d %H:%M:%S.000}"))
            connection.execute("UPDATE GBL_BaseTable_Description SET NON_PUBLIC = 1 WHERE NUM = ?", (num,))
        result = run_command([sys.executable, SCRIPT, "-a", "ciocdemo"], env)
        assert result.returncode == 0, result.stderr
    envelopes = [r for _, rs in server.envelopes for r in rs]
    assert "attacker@example.com" not in envelopes
    assert all(m["Bcc"] is None for m in server.messages)
    bodies = "".join(m.get_body(("plain",)).get_content() for m in server.messages)
    assert "Intake Bcc: attacker@example.com" in bodies


def run_at(now, *argv):
    """Run the task on ciocdemo in this process with its clock at ``now``; return the exit
    code."""
    sys.path.insert(0, str(ROOT / "cron"))
    import cic_changes_for_vol
    import cioctasks

    return cioctasks.run(lambda context, name: cic_changes_for_vol.task(context, name, now=now),
                         cic_changes_for_vol.add_arguments, per_database=True,
                         name="cic_changes_for_vol", argv=["-a", "ciocdemo", "-q", *argv])


def records_to_change(world, count):
    """Records each listed in one agency's message when they change: one opportunity, shown,
    of an agency with an UpdateEmailVOL, and an English description."""
    with sqlite3.connect(world.database("ciocdemo")) as connection:
        nums = [row[0] for row in connection.execute(
            "SELECT vo.NUM FROM VOL_Opportunity vo "
            "JOIN GBL_Agency a ON a.AgencyCode = vo.RECORD_OWNER "
            "WHERE a.UpdateEmailVOL IS NOT NULL AND vo.DISPLAY_UNTIL IS NULL "
            "AND NOT EXISTS (SELECT 1 FROM VOL_Opportunity_Description vod "
            "                WHERE vod.VNUM = vo.VNUM AND vod.DELETION_DATE IS NOT NULL) "
            "AND EXISTS (SELECT 1 FROM GBL_BaseTable_Description btd "
            "            WHERE btd.NUM = vo.NUM AND btd.LangID = 0) "
            "AND (SELECT COUNT(*) FROM VOL_Opportunity x WHERE x.NUM = vo.NUM) = 1 "
            "ORDER BY vo.NUM")]
    assert len(nums) >= count
    return nums[:count]


def change(world, num, moment):
    """Write the history entry of ``num`` becoming non-public at ``moment`` (ms precision,
    as the datetime column keeps it)."""
    with sqlite3.connect(world.database("ciocdemo")) as connection:
        connection.execute(
            "INSERT INTO GBL_BaseTable_History (NUM, LangID, FieldID, MODIFIED_DATE) "
            "VALUES (?, 0, (SELECT FieldID FROM GBL_FieldOption WHERE FieldName = 'NON_PUBLIC'), ?)",
            (num, f"{moment:%Y-%m-%d %H:%M:%S}.{moment.microsecond // 1000:03d}"))


def listed(messages, nums):
    """How many times each record is listed in ``messages``."""
    bodies = "".join(m.get_body(("plain",)).get_content() for m in messages)
    return {num: bodies.count(f"(record {num})") for num in nums}


def test_changes_in_the_seconds_around_each_run_are_mailed_exactly_once(world):
    """@MODIFIED_DATE keeps whole minutes (29.998 s round down, 29.999 s up) and the
    procedure has no end: with a start holding seconds, a change seconds before a run is
    mailed twice, one seconds after it never. Whole-minute windows report each once."""
    base = (datetime.datetime.now() + datetime.timedelta(hours=1)).replace(second=0,
                                                                           microsecond=0)
    minute = datetime.timedelta(minutes=1)

    def at(minutes, seconds):
        return base + minutes * minute + datetime.timedelta(seconds=seconds)

    assert run_at(at(-1, 0)) == 0  # the sample's own changes, all before base - 1 minute
    mailed_before = len(mails(world))
    a, b, c, d, e, f, g = records_to_change(world, 7)
    for num, moment in ((a, at(0, 20)), (b, at(0, 40)), (c, at(1, 5)), (g, at(1, 0)),
                        (d, at(2, 5))):  # d: 5 seconds before the first run
        change(world, num, moment)
    assert run_at(at(2, 10)) == 0  # the window to base + 1 min
    first = mails(world)[mailed_before:]
    change(world, e, at(4, 29.999))  # 11 seconds before the second run
    assert run_at(at(4, 40)) == 0  # to base + 3 min
    second = mails(world)[mailed_before + len(first):]
    change(world, f, at(4, 50))  # 10 seconds after the second run
    assert run_at(at(8, 10)) == 0  # to base + 7 min
    third = mails(world)[mailed_before + len(first) + len(second):]
    nums = (a, b, c, d, e, f, g)
    assert listed(first + second + third, nums) == dict.fromkeys(nums, 1)
    assert listed(first, nums) == {a: 1, b: 1, c: 0, d: 0, e: 0, f: 0, g: 1}
    assert listed(second, nums) == {a: 0, b: 0, c: 1, d: 1, e: 0, f: 0, g: 0}
    assert listed(third, nums) == {a: 0, b: 0, c: 0, d: 0, e: 1, f: 1, g: 0}
    assert len(mails(world)) == mailed_before + len(first) + len(second) + len(third)


def test_a_run_in_the_same_minute_as_the_last_one_leaves_its_changes_to_the_next(world):
    from cioctasks import state

    now = datetime.datetime.now().replace(second=5, microsecond=0)
    assert run_at(now) == 0
    mailed = len(mails(world))
    stored = state.State(world.directory / "state").get("cic_changes_for_vol", "since:ciocdemo")
    (num,) = records_to_change(world, 1)
    change(world, num, now + datetime.timedelta(seconds=5))
    assert run_at(now + datetime.timedelta(seconds=45)) == 0  # its window would be empty
    assert len(mails(world)) == mailed
    assert state.State(world.directory / "state").get(
        "cic_changes_for_vol", "since:ciocdemo") == stored
    assert run_at(now + datetime.timedelta(minutes=2)) == 0
    assert listed(mails(world)[mailed:], [num]) == {num: 1}
