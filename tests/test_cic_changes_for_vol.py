"""cic_changes_for_vol: one message per agency, English and French, exactly once."""

import datetime
import sys
import time

from cioctasks import mail
from conftest import ROOT, mails, mails_of_a_run, run_command
from smtpserver import SMTPServer, free_port

SCRIPT = ROOT / "cron" / "cic_changes_for_vol.py"


def test_each_agency_gets_one_message_listing_its_changed_records(world):
    messages = mails_of_a_run(world, SCRIPT, "-a", "ciocdemo")
    for message in messages:
        assert message["From"].addresses[0].addr_spec == "benevolat@ciocdemo1.example.org"
        body = message.get_body(("plain",)).get_content()
        assert "https://ciocdemo.cioc.ca/record/CIO" in body
        assert "is no longer public" in body or "will be deleted on" in body
        assert "Volunteer opportunities linked to it: " in body
    assert any("Bonjour" in m.get_body(("plain",)).get_content() for m in messages)


def test_a_second_run_sends_nothing_and_a_new_change_is_sent_once(world):
    run_command([sys.executable, SCRIPT, "-a", "ciocdemo"], world.env)
    first = len(mails(world))
    again = run_command([sys.executable, SCRIPT, "-a", "ciocdemo"], world.env)
    assert again.returncode == 0 and "mailed 0 agencies" in again.stdout
    assert len(mails(world)) == first


def test_since_rescans_without_moving_the_start_time(world):
    run_command([sys.executable, SCRIPT, "-a", "ciocdemo"], world.env)
    first = len(mails(world))
    yesterday = (datetime.datetime.now() - datetime.timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")
    rescan = run_command([sys.executable, SCRIPT, "-a", "ciocdemo", "--since", yesterday], world.env)
    assert rescan.returncode == 0
    assert len(mails(world)) == 2 * first
    later = run_command([sys.executable, SCRIPT, "-a", "ciocdemo"], world.env)
    assert "mailed 0 agencies" in later.stdout


def test_a_crash_half_way_then_a_rerun_sends_each_message_once(world, monkeypatch):
    """The first run dies after its first message; the rerun sends only the rest."""
    sys.path.insert(0, str(ROOT / "cron"))
    import cic_changes_for_vol
    import cioctasks

    real_send = mail.Session.send
    calls = []

    def send_then_crash(self, message):
        if calls:
            raise KeyboardInterrupt("power cut")
        calls.append(message)
        return real_send(self, message)

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


def test_mail_for_a_server_that_is_down_is_spooled_and_the_run_succeeds(world):
    env = dict(world.env, CIOC_MAIL_BACKEND="smtp", CIOC_MAIL_PORT=str(free_port()))
    result = run_command([sys.executable, SCRIPT, "-a", "ciocdemo"], env)
    assert result.returncode == 0, result.stderr
    spooled = list((world.directory / "state" / "outbox").glob("*.eml"))
    assert spooled


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
                               "VALUES (?, 0, 1, ?)", (num, datetime.datetime.now().isoformat(sep=" ")))
            connection.execute("UPDATE GBL_BaseTable_Description SET NON_PUBLIC = 1 WHERE NUM = ?", (num,))
        result = run_command([sys.executable, SCRIPT, "-a", "ciocdemo"], env)
        assert result.returncode == 0, result.stderr
    envelopes = [r for _, rs in server.envelopes for r in rs]
    assert "attacker@example.com" not in envelopes
    assert all(m["Bcc"] is None for m in server.messages)
    bodies = "".join(m.get_body(("plain",)).get_content() for m in server.messages)
    assert "Intake Bcc: attacker@example.com" in bodies
