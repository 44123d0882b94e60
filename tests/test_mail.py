"""Mail against a real SMTP server started by the test (aiosmtpd, with TLS and AUTH)."""

import email
import email.policy
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import portalocker
import pytest

from cioctasks import config, journal, mail, outbox
from cioctasks.errors import TaskError
from smtpserver import SMTPServer, free_port

ROOT = Path(__file__).resolve().parent.parent


def settings_for(tmp_path, server=None, **values):
    base = {
        "CIOC_TOOLS_PATH": str(tmp_path / "tools"),
        "CIOC_MAIL_HOST": "127.0.0.1",
        "CIOC_MAIL_OUTBOX": str(tmp_path / "outbox"),
        "CIOC_MAIL_DIR": str(tmp_path / "mail"),
        "CIOC_MAIL_TIMEOUT": "5",
    }
    if server is not None:
        base.update({k: v for k, v in server.environ().items() if k.startswith("CIOC_")})
    base.update({k: str(v) for k, v in values.items()})
    return config.from_mapping(base)


def message(to="volunteer@example.org", subject="Nouvelles possibilités de bénévolat", **kwargs):
    values = dict(
        to=to, subject=subject, text="Bonjour Éloïse,\nvoici les postes.\n",
        sender="vol@cioc.example", sender_name="Centre d'action bénévole — Laval",
        html="<p>Bonjour <b>Éloïse</b></p>",
    )
    values.update(kwargs)
    return mail.Message(**values)


def outbox_files(tmp_path):
    return sorted((tmp_path / "outbox").glob("*.eml"))


def failed_files(tmp_path):
    return sorted((tmp_path / "outbox" / "failed").glob("*.eml"))


def delivered_to(server):
    return sorted(r for _, recipients in server.envelopes for r in recipients)


@pytest.fixture
def memory_outbox():
    mail.MEMORY_OUTBOX.clear()
    yield mail.MEMORY_OUTBOX
    mail.MEMORY_OUTBOX.clear()


# -- messages ---------------------------------------------------------------------------

def test_a_message_arrives_with_its_headers_and_both_parts(tmp_path):
    sent = message(headers={"List-Unsubscribe": "<https://cioc.example/u?t=1>"},
                   reply_to="office@cioc.example")
    with SMTPServer() as server:
        mailer = mail.Mailer(settings_for(tmp_path, server))
        with mailer.session() as session:
            assert session.send(sent) == "sent"
        received = server.wait_for(1)[0]
    assert received["Subject"] == "Nouvelles possibilités de bénévolat"
    assert received["From"].addresses[0].display_name == "Centre d'action bénévole — Laval"
    assert received["From"].addresses[0].addr_spec == "vol@cioc.example"
    assert received["To"] == "volunteer@example.org"
    assert received["Reply-To"] == "office@cioc.example"
    assert received["List-Unsubscribe"] == "<https://cioc.example/u?t=1>"
    assert received["Message-ID"] == sent.message_id
    assert received["Date"]
    assert received.get_content_type() == "multipart/alternative"
    assert "Éloïse" in received.get_body(("plain",)).get_content()
    assert "<b>Éloïse</b>" in received.get_body(("html",)).get_content()
    assert server.envelopes == [("vol@cioc.example", ["volunteer@example.org"])]
    assert mailer.problems == []


def test_a_text_only_message_is_one_text_part():
    data = message(html=None).as_bytes()
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert parsed.get_content_type() == "text/plain"
    assert parsed.get_content().splitlines() == ["Bonjour Éloïse,", "voici les postes."]


def test_non_ascii_names_and_subjects_are_encoded_words_that_round_trip():
    sent = message(to=["zoe@example.org", "b@example.org"],
                   subject="Résumé: 3 offres « été » — ça marche, ok?",
                   sender_name="Équipe, bénévoles \"Laval\"")
    data = sent.as_bytes()
    assert all(byte < 128 for byte in data)
    assert b"=?utf-8?" in data
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert parsed["Subject"] == "Résumé: 3 offres « été » — ça marche, ok?"
    assert parsed["From"].addresses[0].display_name == "Équipe, bénévoles \"Laval\""
    assert [a.addr_spec for a in parsed["To"].addresses] == sent.recipients


def test_a_message_keeps_its_message_id_and_its_bytes():
    sent = message()
    assert sent.message_id.startswith("<") and sent.message_id.endswith("@cioc.example>")
    assert sent.as_bytes() == sent.as_bytes()
    given = message(headers={"Message-ID": "run-42.agency-7@cioc.example"})
    assert given.message_id == "<run-42.agency-7@cioc.example>"
    assert b"Message-ID: <run-42.agency-7@cioc.example>" in given.as_bytes()


def test_recipients_are_a_list_with_each_address_once():
    assert message(to="a@example.org").recipients == ["a@example.org"]
    assert message(to=("a@example.org", "b@example.org", "a@example.org")).recipients == [
        "a@example.org", "b@example.org"]


def test_a_non_ascii_domain_is_sent_in_its_idna_form():
    assert message(to="info@bénévoles.example").recipients == ["info@xn--bnvoles-byab.example"]


@pytest.mark.parametrize("field, value", [
    ("subject", "Hello\r\nBcc: victim@example.org"),
    ("subject", "Hello\nBcc: victim@example.org"),
    ("subject", "Hello\rBcc: victim@example.org"),
    ("subject", "Hello\0"),
    ("sender_name", "Agency\nBcc: victim@example.org"),
    ("to", "a@example.org\r\nBcc: victim@example.org"),
    ("to", ["a@example.org", "b@example.org\nBcc: victim@example.org"]),
    ("sender", "b@example.org\r\nBcc: victim@example.org"),
    ("reply_to", "c@example.org\nBcc: victim@example.org"),
    ("headers", {"List-Unsubscribe": "<x>\r\nBcc: victim@example.org"}),
    ("headers", {"X-Bad\r\nBcc": "victim@example.org"}),
])
def test_a_line_break_or_nul_in_any_header_is_refused(field, value):
    values = dict(to="a@example.org", subject="Hello", sender="b@example.org", text="x")
    values[field] = value
    with pytest.raises(mail.HeaderError, match="line break or NUL"):
        mail.Message(**values)


@pytest.mark.parametrize("bad", [
    "not an address", "no-at-sign.example.org", "@example.org", "someone@", "a@b@c",
    "Name <a@example.org>", "a@example.org, b@example.org", "a..b@example.org",
    "a@-example.org", "a@exa mple.org", "",
])
def test_something_that_is_not_an_address_is_refused(bad):
    with pytest.raises(mail.HeaderError, match="not an address"):
        mail.Message(to=bad, subject="s", text="t", sender="b@example.org")


def test_headers_the_message_sets_itself_cannot_be_passed_again():
    with pytest.raises(mail.HeaderError, match="Bcc"):
        message(headers={"Bcc": "victim@example.org"})
    with pytest.raises(mail.HeaderError, match="not a header name"):
        message(headers={"X Bad": "value"})
    with pytest.raises(mail.HeaderError, match="recipient"):
        message(to=[])


def test_header_error_is_a_value_error_and_mail_errors_are_task_errors():
    assert issubclass(mail.HeaderError, ValueError)
    assert issubclass(mail.Refused, mail.MailError)
    assert issubclass(mail.MailError, TaskError)


# -- SMTP, TLS and AUTH -----------------------------------------------------------------

@pytest.mark.parametrize("tls", ["ssl", "starttls"])
def test_a_message_arrives_over_tls_with_a_login(tmp_path, monkeypatch, tls):
    with SMTPServer(tls=tls, auth=("tasks", "s3cret-pw")) as server:
        monkeypatch.setenv("SSL_CERT_FILE", server.ca_file)
        mailer = mail.Mailer(settings_for(tmp_path, server))
        mailer.check()
        with mailer.session() as session:
            assert session.send(message()) == "sent"
        received = server.wait_for(1)[0]
    assert received["Subject"] == "Nouvelles possibilités de bénévolat"
    assert server.logins == ["tasks", "tasks"]  # check() and the session
    assert mailer.problems == []


def test_a_refused_login_is_a_clear_problem_and_the_message_waits_in_the_outbox(
        tmp_path, monkeypatch, caplog):
    with SMTPServer(tls="starttls", auth=("tasks", "right")) as server:
        monkeypatch.setenv("SSL_CERT_FILE", server.ca_file)
        settings = settings_for(tmp_path, server, CIOC_MAIL_PASSWORD="wrong-pw-123")
        log = logging.getLogger("test.mail")
        mailer = mail.Mailer(settings, log=log)
        with pytest.raises(mail.MailError) as error:
            mailer.check()
        with caplog.at_level("DEBUG", logger="test.mail"):
            with mailer.session() as session:
                assert session.send(message(to="one@example.org")) == "spooled"
                assert session.send(message(to="two@example.org")) == "spooled"
        assert server.messages == []
    where = f"127.0.0.1:{server.port}"
    assert str(error.value).startswith(
        f"mail server {where} refused the login for user 'tasks': 535")
    assert "\n" not in str(error.value)
    assert mailer.problems == [str(error.value),
                               f"queued 2 messages for the next run ({error.value})"]
    assert len(outbox_files(tmp_path)) == 2
    texts = [str(error.value), *mailer.problems, caplog.text,
             *(p.read_text("utf-8") for p in outbox_files(tmp_path))]
    assert not any("wrong-pw-123" in text for text in texts)
    assert server.connections == 2  # check(), then one try for the whole batch


def test_a_server_certificate_that_is_not_trusted_is_a_tls_problem_and_nothing_is_lost(tmp_path):
    with SMTPServer(tls="ssl") as server:  # its CA is not in SSL_CERT_FILE
        mailer = mail.Mailer(settings_for(tmp_path, server))
        with mailer.session() as session:
            assert session.send(message()) == "spooled"
    assert len(mailer.problems) == 2
    assert "TLS failed: certificate verify failed" in mailer.problems[0]
    assert mailer.problems[1] == f"queued 1 message for the next run ({mailer.problems[0]})"
    assert len(outbox_files(tmp_path)) == 1


def test_a_server_that_wants_a_login_the_settings_lack_is_a_problem_and_nothing_is_lost(tmp_path):
    with SMTPServer(auth=("tasks", "pw")) as server:
        mailer = mail.Mailer(settings_for(tmp_path, CIOC_MAIL_PORT=server.port))
        with mailer.session() as session:
            assert session.send(message(to="one@example.org")) == "spooled"
            assert session.send(message(to="two@example.org")) == "spooled"
    why = f"mail server 127.0.0.1:{server.port}: requires a login: 530 5.7.0 Authentication required"
    assert mailer.problems == [why, f"queued 2 messages for the next run ({why})"]
    assert len(outbox_files(tmp_path)) == 2 and failed_files(tmp_path) == []


def test_a_server_that_closes_mid_batch_leaves_the_rest_of_the_batch_in_the_outbox(tmp_path):
    with SMTPServer() as server:
        server.data_replies["first@example.org"] = "421 4.3.2 shutting down"
        mailer = mail.Mailer(settings_for(tmp_path, server))
        with mailer.session() as session:
            for to in ("first@example.org", "second@example.org", "third@example.org"):
                assert session.send(message(to=to)) == "spooled"
        assert server.connections == 1 and server.messages == []
        del server.data_replies["first@example.org"]
        assert mail.Mailer(settings_for(tmp_path, server)).flush_outbox() == outbox.Report(3, 0, 0)
    assert delivered_to(server) == ["first@example.org", "second@example.org", "third@example.org"]
    assert mailer.problems == [f"queued 3 messages for the next run (mail server "
                               f"127.0.0.1:{server.port}: 421 4.3.2 shutting down)"]


def test_check_of_a_server_that_is_down_is_one_clear_line(tmp_path):
    port = free_port()
    mailer = mail.Mailer(settings_for(tmp_path, CIOC_MAIL_PORT=port))
    with pytest.raises(mail.MailError, match=f"^mail server 127.0.0.1:{port}: connection refused$"):
        mailer.check()


def test_check_of_a_server_without_starttls_names_what_is_missing(tmp_path):
    with SMTPServer() as server:
        mailer = mail.Mailer(settings_for(tmp_path, server, CIOC_MAIL_STARTTLS="1"))
        with pytest.raises(mail.MailError, match="STARTTLS extension not supported"):
            mailer.check()


def test_a_batch_uses_one_connection(tmp_path):
    with SMTPServer() as server:
        mailer = mail.Mailer(settings_for(tmp_path, server))
        with mailer.session() as session:
            for number in range(5):
                assert session.send(message(to=f"p{number}@example.org")) == "sent"
        server.wait_for(5)
    assert server.connections == 1
    assert delivered_to(server) == [f"p{n}@example.org" for n in range(5)]


def test_a_session_that_sends_nothing_opens_no_connection(tmp_path):
    with SMTPServer() as server:
        with mail.Mailer(settings_for(tmp_path, server)).session():
            pass
    assert server.connections == 0


def test_a_connection_the_server_dropped_while_idle_is_opened_again(tmp_path):
    with SMTPServer(idle_timeout=0.5) as server:
        mailer = mail.Mailer(settings_for(tmp_path, server))
        with mailer.session() as session:
            assert session.send(message(to="first@example.org")) == "sent"
            time.sleep(1.2)
            assert session.send(message(to="second@example.org")) == "sent"
        server.wait_for(2)
    assert delivered_to(server) == ["first@example.org", "second@example.org"]
    assert server.connections == 2
    assert outbox_files(tmp_path) == []


# -- refusals ---------------------------------------------------------------------------

def test_a_refused_recipient_fails_that_message_and_the_next_one_is_still_sent(tmp_path):
    with SMTPServer() as server:
        server.refuse.add("nobody@example.org")
        mailer = mail.Mailer(settings_for(tmp_path, server))
        with mailer.session() as session:
            with pytest.raises(mail.Refused) as error:
                session.send(message(to="nobody@example.org"))
            assert session.send(message(to="somebody@example.org")) == "sent"
        server.wait_for(1)
    assert str(error.value) == (f"mail to nobody@example.org refused by 127.0.0.1:{server.port}: "
                                "550 5.1.1 no such mailbox")
    assert len(failed_files(tmp_path)) == 1 and outbox_files(tmp_path) == []
    assert delivered_to(server) == ["somebody@example.org"]
    assert server.connections == 1


def test_a_message_refused_at_data_is_failed_and_the_session_goes_on(tmp_path):
    with SMTPServer() as server:
        server.data_replies["spam-trap@example.org"] = "554 5.6.0 content refused"
        mailer = mail.Mailer(settings_for(tmp_path, server))
        with mailer.session() as session:
            with pytest.raises(mail.Refused, match="spam-trap@example.org.*554 5.6.0"):
                session.send(message(to="spam-trap@example.org"))
            assert session.send(message(to="fine@example.org")) == "sent"
        server.wait_for(1)
    assert len(failed_files(tmp_path)) == 1
    assert server.connections == 1


def test_some_recipients_refused_counts_as_sent_and_names_them_in_problems(tmp_path):
    with SMTPServer() as server:
        server.refuse.add("gone@example.org")
        mailer = mail.Mailer(settings_for(tmp_path, server))
        with mailer.session() as session:
            assert session.send(message(to=["here@example.org", "gone@example.org"])) == "sent"
        server.wait_for(1)
    assert server.envelopes[0][1] == ["here@example.org"]
    assert mailer.problems == [
        f"mail to gone@example.org refused by 127.0.0.1:{server.port}: 550 5.1.1 no such mailbox"]
    assert outbox_files(tmp_path) == [] and failed_files(tmp_path) == []


def test_a_deferred_recipient_is_spooled_and_the_batch_goes_on(tmp_path):
    with SMTPServer() as server:
        server.defer.add("later@example.org")
        mailer = mail.Mailer(settings_for(tmp_path, server))
        with mailer.session() as session:
            assert session.send(message(to="later@example.org")) == "spooled"
            assert session.send(message(to="now@example.org")) == "sent"
        server.wait_for(1)
    assert len(outbox_files(tmp_path)) == 1
    assert server.connections == 1
    assert (mailer.sent, mailer.queued) == (1, 1)
    assert mailer.problems == [f"queued 1 message for the next run (mail server "
                               f"127.0.0.1:{server.port}: 451 4.3.0 try again later)"]


def test_a_message_to_one_accepted_and_one_deferred_recipient_goes_later_to_that_one_only(tmp_path):
    with SMTPServer() as server:
        server.defer.add("later@example.org")
        mailer = mail.Mailer(settings_for(tmp_path, server))
        sent = message(to=["now@example.org", "later@example.org"])
        with mailer.session() as session:
            assert session.send(sent) == "sent"
        assert len(outbox_files(tmp_path)) == 1
        server.defer.clear()
        report = mail.Mailer(settings_for(tmp_path, server)).flush_outbox()
        server.wait_for(2)
    assert report == outbox.Report(1, 0, 0)
    assert server.envelopes == [("vol@cioc.example", ["now@example.org"]),
                                ("vol@cioc.example", ["later@example.org"])]
    assert server.messages[1]["To"] == "now@example.org, later@example.org"
    assert server.messages[1]["Message-ID"] == sent.message_id
    assert "X-Cioctasks-Envelope-To" not in server.messages[1]


# -- the outbox -------------------------------------------------------------------------

def test_a_server_that_is_down_gets_the_messages_on_the_next_flush(tmp_path):
    port = free_port()
    settings = settings_for(tmp_path, CIOC_MAIL_PORT=port)
    mailer = mail.Mailer(settings)
    with mailer.session() as session:
        assert session.send(message(to="one@example.org")) == "spooled"
        assert session.send(message(to="two@example.org")) == "spooled"
    assert len(outbox_files(tmp_path)) == 2
    # Queued is not delivered: the run's result says so, not only the log.
    assert mailer.problems == [
        f"queued 2 messages for the next run (mail server 127.0.0.1:{port}: connection refused)"]
    with SMTPServer(port=port) as server:
        report = mail.Mailer(settings).flush_outbox()
        server.wait_for(2)
    assert report == outbox.Report(sent=2, remaining=0, failed=0)
    assert outbox_files(tmp_path) == []
    assert delivered_to(server) == ["one@example.org", "two@example.org"]
    assert server.connections == 1
    parsed = server.messages[0]
    assert parsed["Subject"] == "Nouvelles possibilités de bénévolat"
    assert "X-Cioctasks-Envelope-From" not in parsed


def test_after_one_connection_failure_the_rest_of_the_run_spools_without_waiting(tmp_path):
    settings = settings_for(tmp_path, CIOC_MAIL_PORT=free_port())
    mailer = mail.Mailer(settings)
    mailer.flush_outbox()
    with mailer.session() as session:
        session.send(message(to="one@example.org"))
    assert mailer.down and "connection refused" in mailer.down
    with SMTPServer(port=settings.mail_port) as server:
        with mailer.session() as session:
            assert session.send(message(to="two@example.org")) == "spooled"
    assert server.connections == 0
    assert len(outbox_files(tmp_path)) == 2


def test_spooling_the_same_message_twice_keeps_one_copy(tmp_path):
    settings = settings_for(tmp_path, CIOC_MAIL_PORT=free_port())
    once = message()
    with mail.Mailer(settings).session() as session:
        session.send(once)
        session.send(once)
    with mail.Mailer(settings).session() as session:
        session.send(once)
    assert len(outbox_files(tmp_path)) == 1
    assert outbox_files(tmp_path)[0].name == outbox.file_name(once.message_id)


def test_a_spooled_file_is_a_readable_message_with_its_envelope_in_front(tmp_path):
    settings = settings_for(tmp_path, CIOC_MAIL_PORT=free_port())
    with mail.Mailer(settings).session() as session:
        session.send(message(to=["a@example.org", "b@example.org"]))
    stored = outbox_files(tmp_path)[0].read_bytes()
    parsed = email.message_from_bytes(stored, policy=email.policy.default)
    assert parsed["X-Cioctasks-Envelope-From"] == "<vol@cioc.example>"
    assert parsed.get_all("X-Cioctasks-Envelope-To") == ["<a@example.org>", "<b@example.org>"]
    assert parsed["Subject"] == "Nouvelles possibilités de bénévolat"
    sender, recipients, data = outbox.unpack(stored)
    assert (sender, recipients) == ("vol@cioc.example", ["a@example.org", "b@example.org"])
    assert not data.startswith(b"X-Cioctasks")


def test_an_eml_dropped_into_the_outbox_by_hand_is_sent_to_its_headers(tmp_path):
    (tmp_path / "outbox").mkdir()
    (tmp_path / "outbox" / "by-hand.eml").write_bytes(
        b"From: ops@cioc.example\nTo: a@example.org\nBcc: hidden@example.org\n"
        b"Subject: resend\nMessage-ID: <x1@cioc.example>\n\nbody\n")
    with SMTPServer() as server:
        report = mail.Mailer(settings_for(tmp_path, server)).flush_outbox()
        server.wait_for(1)
    assert report == outbox.Report(1, 0, 0)
    assert server.envelopes == [("ops@cioc.example", ["a@example.org", "hidden@example.org"])]
    assert server.messages[0]["Bcc"] is None


def test_flush_moves_a_refused_message_to_failed_and_sends_the_others(tmp_path):
    port = free_port()
    settings = settings_for(tmp_path, CIOC_MAIL_PORT=port)
    with mail.Mailer(settings).session() as session:
        for to in ("gone@example.org", "later@example.org", "fine@example.org"):
            session.send(message(to=to))
    with SMTPServer(port=port) as server:
        server.refuse.add("gone@example.org")
        server.defer.add("later@example.org")
        mailer = mail.Mailer(settings)
        report = mailer.flush_outbox()
    assert report == outbox.Report(sent=1, remaining=1, failed=1)
    assert delivered_to(server) == ["fine@example.org"]
    assert len(failed_files(tmp_path)) == 1 and len(outbox_files(tmp_path)) == 1
    assert len(mailer.problems) == 1 and "gone@example.org" in mailer.problems[0]


def test_an_empty_outbox_is_cheap_to_flush(tmp_path):
    with SMTPServer() as server:
        mailer = mail.Mailer(settings_for(tmp_path, server))
        assert mailer.flush_outbox() == outbox.Report(0, 0, 0)
    assert server.connections == 0
    assert not (tmp_path / "outbox").exists()


def test_a_flush_skips_while_another_process_holds_the_outbox_lock(tmp_path):
    port = free_port()
    settings = settings_for(tmp_path, CIOC_MAIL_PORT=port)
    with mail.Mailer(settings).session() as session:
        session.send(message())
    with SMTPServer(port=port) as server, \
            open(tmp_path / "outbox" / ".lock", "a", encoding="utf-8") as held:
        portalocker.lock(held, portalocker.LOCK_EX | portalocker.LOCK_NB)
        report = mail.Mailer(settings).flush_outbox()
        assert report == outbox.Report(0, 1, 0)
        assert server.connections == 0
        portalocker.unlock(held)
        assert mail.Mailer(settings).flush_outbox() == outbox.Report(1, 0, 0)


def _spool_twenty(settings):
    with mail.Mailer(settings).session() as session:
        for number in range(20):
            assert session.send(message(to=f"v{number}@example.org")) == "spooled"


def test_two_flushes_at_once_in_threads_deliver_each_message_once(tmp_path):
    port = free_port()
    settings = settings_for(tmp_path, CIOC_MAIL_PORT=port)
    _spool_twenty(settings)
    with SMTPServer(port=port, delay=0.02) as server:
        reports = []
        threads = [threading.Thread(target=lambda: reports.append(
            mail.Mailer(settings).flush_outbox())) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        reports.append(mail.Mailer(settings).flush_outbox())
        server.wait_for(20)
    assert delivered_to(server) == sorted(f"v{n}@example.org" for n in range(20))
    assert sum(report.sent for report in reports) == 20
    assert outbox_files(tmp_path) == []


def test_two_flushes_at_once_in_processes_deliver_each_message_once(tmp_path):
    port = free_port()
    settings = settings_for(tmp_path, CIOC_MAIL_PORT=port)
    _spool_twenty(settings)
    script = (
        "import sys; from cioctasks import config, mail\n"
        "settings = config.from_mapping(dict(CIOC_TOOLS_PATH=sys.argv[1], "
        "CIOC_MAIL_OUTBOX=sys.argv[2], CIOC_MAIL_PORT=sys.argv[3]))\n"
        "print(mail.Mailer(settings).flush_outbox().sent)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT / "lib"))
    with SMTPServer(port=port, delay=0.02) as server:
        flushes = [subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path / "tools"), str(tmp_path / "outbox"),
             str(port)], env=env, stdout=subprocess.PIPE, text=True) for _ in range(3)]
        counts = [int(flush.communicate(timeout=60)[0]) for flush in flushes]
        remaining = mail.Mailer(settings).flush_outbox()
        server.wait_for(20)
    assert sum(counts) + remaining.sent == 20
    assert delivered_to(server) == sorted(f"v{n}@example.org" for n in range(20))


def test_a_dry_run_flush_sends_nothing(tmp_path):
    port = free_port()
    settings = settings_for(tmp_path, CIOC_MAIL_PORT=port)
    with mail.Mailer(settings).session() as session:
        session.send(message())
    with SMTPServer(port=port) as server:
        assert mail.Mailer(settings, dry_run=True).flush_outbox() == outbox.Report(0, 1, 0)
    assert server.connections == 0 and len(outbox_files(tmp_path)) == 1


def test_mail_that_waits_a_day_for_an_unusable_server_becomes_a_problem(tmp_path):
    settings = settings_for(tmp_path, CIOC_MAIL_PORT=free_port())
    with mail.Mailer(settings).session() as session:
        session.send(message())
    fresh = mail.Mailer(settings)
    assert fresh.flush_outbox() == outbox.Report(0, 1, 0) and fresh.problems == []
    old = time.time() - 25 * 3600
    os.utime(outbox_files(tmp_path)[0], (old, old))
    stale = mail.Mailer(settings)
    stale.flush_outbox()
    assert len(stale.problems) == 1
    assert stale.problems[0].startswith("outbox: 1 messages wait since ")
    assert "connection refused" in stale.problems[0]


# -- the other backends and dry runs ----------------------------------------------------

def test_the_file_backend_writes_parseable_messages(tmp_path):
    settings = settings_for(tmp_path, CIOC_MAIL_BACKEND="file")
    with mail.Mailer(settings).session() as session:
        assert session.send(message()) == "sent"
        assert session.send(message(to="other@example.org")) == "sent"
    written = sorted((tmp_path / "mail").glob("*.eml"))
    assert len(written) == 2
    assert all(len(p.name.split("-")) == 4 and p.name[:8].isdigit() for p in written)
    parsed = email.message_from_bytes(written[0].read_bytes(), policy=email.policy.default)
    assert parsed["Subject"] == "Nouvelles possibilités de bénévolat"
    assert "Éloïse" in parsed.get_body(("plain",)).get_content()
    assert not list((tmp_path / "mail").glob(".*"))  # no temporary file left behind


def test_the_memory_backend_keeps_the_message_objects(tmp_path, memory_outbox):
    sent = message()
    with mail.Mailer(settings_for(tmp_path, CIOC_MAIL_BACKEND="memory")).session() as session:
        assert session.send(sent) == "sent"
    assert memory_outbox == [sent]


@pytest.mark.parametrize("backend", ["smtp", "file", "memory"])
def test_a_dry_run_sends_and_writes_nothing(tmp_path, caplog, memory_outbox, backend):
    log = logging.getLogger("test.mail")
    with SMTPServer() as server:
        settings = settings_for(tmp_path, server, CIOC_MAIL_BACKEND=backend)
        with caplog.at_level("INFO", logger="test.mail"):
            with mail.Mailer(settings, dry_run=True, log=log).session() as session:
                assert session.send(message()) == "dry-run"
    assert server.messages == [] and server.connections == 0 and memory_outbox == []
    assert not (tmp_path / "outbox").exists() and not (tmp_path / "mail").exists()
    assert "(dry run) would mail" in caplog.text


# -- write ahead: stored before it is handed over, recorded before the server has it -------

def journal_files(tmp_path):
    """The journals of sessions that hold a message."""
    return [p for p in sorted((tmp_path / "outbox" / "sending").glob("*.journal"))
            if p.stat().st_size]


def test_the_record_runs_once_the_message_is_stored_and_before_the_server_has_it(tmp_path):
    seen = []
    with SMTPServer() as server:
        mailer = mail.Mailer(settings_for(tmp_path, server))
        sent = message()

        def record():
            stored = [outbox.unpack(journal.read_journal(p)) for p in journal_files(tmp_path)]
            seen.append((len(server.messages), stored))

        with mailer.session() as session:
            assert session.send(sent, record) == "sent"
        server.wait_for(1)
    assert seen == [(0, [("vol@cioc.example", ["volunteer@example.org"], sent.as_bytes())])]
    assert list((tmp_path / "outbox" / "sending").iterdir()) == []
    assert outbox_files(tmp_path) == []
    assert (mailer.sent, mailer.queued, mailer.problems) == (1, 0, [])


def test_a_record_that_fails_sends_nothing_and_keeps_nothing(tmp_path):
    with SMTPServer() as server:
        mailer = mail.Mailer(settings_for(tmp_path, server))

        def record():
            raise RuntimeError("state database is locked")

        with pytest.raises(RuntimeError), mailer.session() as session:
            session.send(message(), record)
    assert server.messages == [] and server.connections == 0
    assert journal_files(tmp_path) == [] and outbox_files(tmp_path) == []


def test_a_flush_while_a_message_is_in_flight_leaves_it_to_its_session(tmp_path):
    with SMTPServer() as server:
        settings = settings_for(tmp_path, server)
        reports = []
        with mail.Mailer(settings).session() as session:
            session.send(message(), lambda: reports.append(mail.Mailer(settings).flush_outbox()))
        server.wait_for(1)
        time.sleep(0.2)
    assert reports == [outbox.Report(0, 0, 0)]
    assert len(server.messages) == 1


def test_a_message_left_in_flight_by_a_dead_run_is_sent_as_it_was_stored(tmp_path):
    port = free_port()
    settings = settings_for(tmp_path, CIOC_MAIL_PORT=port)
    sent = message(identity=("volnotify", "ciocdemo:1:never:profile-1", ["V1"]))
    dead = journal.Journal(outbox.Outbox(tmp_path / "outbox"))
    dead.store(outbox.pack(sent.as_bytes(), "vol@cioc.example", ["volunteer@example.org"]))
    dead.close()  # as when its process dies: the message stays, the lock is free
    cut = journal.Journal(outbox.Outbox(tmp_path / "outbox"))
    cut.store(b"a write cut short")
    with open(cut.path, "r+b") as handle:
        handle.truncate(30)
    cut.close()
    assert len(journal_files(tmp_path)) == 2
    with SMTPServer(port=port) as server:
        assert mail.Mailer(settings).flush_outbox() == outbox.Report(1, 0, 0)
        server.wait_for(1)
    assert server.raw == [sent.as_bytes()]
    assert list((tmp_path / "outbox" / "sending").iterdir()) == []


def test_an_identity_gives_the_same_message_id_every_time_and_another_one_another():
    first = message(identity=("volnotify", "ciocdemo:1:never:p1", ["V1", "V2"]))
    again = message(identity=("volnotify", "ciocdemo:1:never:p1", ["V1", "V2"]))
    other = message(identity=("volnotify", "ciocdemo:1:never:p1", ["V1", "V2", "V3"]))
    assert first.message_id == again.message_id != other.message_id
    assert first.message_id.endswith(".cioctasks@cioc.example>")


def test_an_outbox_that_cannot_be_written_refuses_recorded_mail_in_one_line_naming_it(tmp_path):
    (tmp_path / "blocked").write_text("a file where the outbox's folder should be")
    with SMTPServer() as server:
        settings = settings_for(tmp_path, server, CIOC_MAIL_OUTBOX=tmp_path / "blocked" / "outbox")
        recorded = []
        with pytest.raises(mail.StoreError) as error, mail.Mailer(settings).session() as session:
            session.send(message(), lambda: recorded.append(1))
        # Nothing records a failure report: it goes out unstored rather than not at all.
        with mail.Mailer(settings).session() as session:
            assert session.send(message(to="tasks@example.org")) == "sent"
        server.wait_for(1)
    assert str(error.value).startswith(f"cannot write mail into {tmp_path / 'blocked' / 'outbox'}: ")
    assert "\n" not in str(error.value) and recorded == []
    assert [to for _, [to] in server.envelopes] == ["tasks@example.org"]


def test_a_full_outbox_while_the_server_is_down_names_the_folder(tmp_path):
    (tmp_path / "blocked").write_text("")
    settings = settings_for(tmp_path, CIOC_MAIL_PORT=free_port(),
                            CIOC_MAIL_OUTBOX=tmp_path / "blocked" / "outbox")
    with pytest.raises(mail.StoreError, match=r"^cannot write mail into .*blocked.outbox: "):
        with mail.Mailer(settings).session() as session:
            session.send(message())


# -- the bytes: the email package's, built fast ----------------------------------------------

HOSTILE = "aé Zz0<>@.:/?&%=+-_~!#$*,;'\"()[]\\\t«»—ç=?\u200b𝄞"


@pytest.mark.parametrize("seed", range(4))
def test_the_bytes_are_those_the_email_package_writes_for_any_header_text(seed):
    import random

    rng = random.Random(seed)

    def text(longest):
        return "".join(rng.choice(HOSTILE) for _ in range(rng.randint(0, longest)))

    compared = 0
    for n in range(300):
        try:
            sent = message(
                to=[f"v{n}.{i}@example.org" for i in range(rng.randint(1, 6))],
                subject=text(150), sender_name=text(60).replace("\t", " ") or None,
                text=text(500) + "\n\r\nline  \n" + "x" * rng.randint(0, 200),
                html=None if n % 3 == 0 else text(400),
                reply_to="office@cioc.example" if n % 2 else None,
                headers={"X-Note": text(120),
                         "List-Unsubscribe":
                         f"<https://cioc.example/u?t={'a' * rng.randint(0, 300)}>"},
                identity=("test", seed, n))
        except mail.HeaderError:
            continue
        assert sent.as_bytes() == sent.as_email().as_bytes()
        compared += 1
    assert compared > 200


def test_a_long_unsubscribe_link_stays_one_line_a_mail_program_can_use():
    link = ("<https://ciocdemo.cioc.ca/volunteer/profile/unsubscribe.asp?email=eloise.lefebvre"
            "%40example.org&token=%7BF579E15B-EBF7-495A-B6FE-068C375EE0C0%7D>")
    data = message(headers={"List-Unsubscribe": link}).as_bytes()
    assert b"\r\nList-Unsubscribe: " + link.encode() + b"\r\n" in data
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert parsed["List-Unsubscribe"] == link
    with pytest.raises(mail.HeaderError):
        message(headers={"List-Unsubscribe": "<https://cioc.example/" + "a" * 1000 + ">"})


# -- batches: stored with their records, recorded, then handed over --------------------------

def state_of(tmp_path):
    from cioctasks import state

    return state.State(tmp_path / "tools" / "state")


def batch_of(count):
    return [(message(to=f"v{n}@example.org", identity=("volnotify", n)), {f"key-{n}": [n]})
            for n in range(count)]


def test_a_batch_is_stored_with_its_records_before_those_are_written_and_any_is_sent(tmp_path):
    keeper = state_of(tmp_path)
    seen = []
    real_set_many = keeper.set_many

    def set_many(task, values, delete=()):
        [stored] = [journal.read_batch(p) for p in journal_files(tmp_path)]
        seen.append((len(server.messages), stored[:2], len(stored[2])))
        real_set_many(task, values, delete)

    keeper.set_many = set_many
    with SMTPServer() as server:
        mailer = mail.Mailer(settings_for(tmp_path, server))
        with mailer.session() as session:
            results = session.send_batch(batch_of(3), keeper, "volnotify")
        server.wait_for(3)
    assert [status for _, status in results] == ["sent"] * 3
    records = {"key-0": [0], "key-1": [1], "key-2": [2]}
    assert seen == [(0, ("volnotify", records), 3)]
    assert keeper.items("volnotify", "key-") == records
    assert list((tmp_path / "outbox" / "sending").iterdir()) == []
    assert mailer.sent == 3


def dead_batch(tmp_path, items, settled=(), names=None):
    """Leave a batch journal as a run killed while handing it over would."""
    dead = journal.Journal(outbox.Outbox(tmp_path / "outbox"))
    records = {k: v for _, record in items for k, v in record.items()}
    dead.store_batch(journal.pack_batch("volnotify", records, [
        (outbox.pack(m.as_bytes(), m.sender.addr_spec, m.recipients), (names or {}).get(n))
        for n, (m, _) in enumerate(items)]))
    for index in settled:
        dead.mark(index)
    dead.close()


def test_a_batch_a_killed_run_left_is_recorded_and_only_its_unsettled_messages_are_sent(tmp_path):
    items = batch_of(4)
    dead_batch(tmp_path, items, settled=(0, 1))
    with SMTPServer() as server:
        report = mail.Mailer(settings_for(tmp_path, server)).flush_outbox()
        server.wait_for(2)
    assert report == outbox.Report(2, 0, 0)
    assert server.raw == [m.as_bytes() for m, _ in items[2:]]
    assert state_of(tmp_path).items("volnotify", "key-") == {f"key-{n}": [n] for n in range(4)}
    assert list((tmp_path / "outbox" / "sending").iterdir()) == []


def test_a_file_batch_a_killed_run_left_writes_only_the_files_that_are_missing(tmp_path):
    settings = settings_for(tmp_path, CIOC_MAIL_BACKEND="file")
    items = batch_of(3)
    names = {n: f"20260101-000000-{n}-x.eml" for n in range(3)}
    (tmp_path / "mail").mkdir()
    (tmp_path / "mail" / names[0]).write_bytes(items[0][0].as_bytes())  # written before the kill
    dead_batch(tmp_path, items, names=names)
    with mail.Mailer(settings).session():
        pass
    written = sorted((tmp_path / "mail").iterdir())
    assert [p.name for p in written] == [names[0], names[1], names[2]]
    assert [p.read_bytes() for p in written] == [m.as_bytes() for m, _ in items]
    assert state_of(tmp_path).items("volnotify", "key-") == {f"key-{n}": [n] for n in range(3)}


def test_a_batch_whose_records_cannot_be_written_sends_nothing_and_keeps_nothing(tmp_path):
    keeper = state_of(tmp_path)

    def set_many(task, values, delete=()):
        raise RuntimeError("state database is locked")

    keeper.set_many = set_many
    with SMTPServer() as server:
        mailer = mail.Mailer(settings_for(tmp_path, server))
        with pytest.raises(RuntimeError), mailer.session() as session:
            session.send_batch(batch_of(2), keeper, "volnotify")
    assert server.messages == [] and server.connections == 0
    assert journal_files(tmp_path) == [] and outbox_files(tmp_path) == []


def test_a_file_batch_that_cannot_be_written_fails_in_one_line_and_waits_in_its_journal(tmp_path):
    (tmp_path / "blocked").write_text("a file where the mail folder should be")
    blocked = settings_for(tmp_path, CIOC_MAIL_BACKEND="file", CIOC_MAIL_DIR=tmp_path / "blocked")
    keeper = state_of(tmp_path)
    items = batch_of(3)
    with pytest.raises(mail.StoreError) as error:
        with mail.Mailer(blocked).session() as session:
            session.send_batch(items, keeper, "volnotify")
    assert str(error.value).startswith(f"cannot write mail into {tmp_path / 'blocked'}: ")
    assert keeper.items("volnotify", "key-") == {f"key-{n}": [n] for n in range(3)}
    assert len(journal_files(tmp_path)) == 1  # recorded, so kept until it is written
    with mail.Mailer(settings_for(tmp_path, CIOC_MAIL_BACKEND="file")).session():
        pass
    written = sorted((tmp_path / "mail").iterdir())
    assert sorted(p.read_bytes() for p in written) == sorted(m.as_bytes() for m, _ in items)
    assert journal_files(tmp_path) == []


def test_a_batch_of_files_is_written_by_several_writers_each_whole_and_in_order(tmp_path):
    named = [(f"{n:03d}.eml", f"message {n}\r\n".encode() * (n + 1)) for n in range(23)]
    paths = mail._write_files(str(tmp_path), named)
    assert paths == [str(tmp_path / name) for name, _ in named]
    assert all((tmp_path / name).read_bytes() == data for name, data in named)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name for name, _ in named]  # no .tmp


def test_a_writer_that_fails_fails_the_batch_after_the_others_wrote_theirs(tmp_path):
    named = [(f"{n:03d}.eml", b"x\r\n") for n in range(12)]
    (tmp_path / "005.eml").mkdir()  # a folder where one file must go: rename fails
    with pytest.raises(OSError):
        mail._write_files(str(tmp_path), named)
    written = {p.name for p in tmp_path.iterdir() if p.is_file()}
    others = {name for n, (name, _) in enumerate(named) if n % mail.WRITERS != 5 % mail.WRITERS}
    assert others <= written and "005.eml" not in written
    assert not [name for name in written if name.endswith(".tmp")]  # nothing half-written
