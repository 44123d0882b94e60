"""Mail against a real SMTP server started by the test (aiosmtpd, with TLS and AUTH)."""

import email
import email.policy
import threading

import pytest

from cioctasks import config, mail
from smtpserver import SMTPServer, free_port


def settings_for(tmp_path, **values):
    base = {
        "CIOC_TOOLS_PATH": str(tmp_path / "tools"),
        "CIOC_MAIL_HOST": "127.0.0.1",
        "CIOC_MAIL_OUTBOX": str(tmp_path / "outbox"),
        "CIOC_MAIL_DIR": str(tmp_path / "mail"),
        "CIOC_MAIL_TIMEOUT": "5",
    }
    base.update({k: str(v) for k, v in values.items()})
    return config.from_mapping(base)


def message(to="volunteer@example.org", subject="Nouvelles possibilités de bénévolat", **kwargs):
    return mail.Message(
        to=to, subject=subject, text="Bonjour Éloïse,\nvoici les postes.\n",
        sender="vol@cioc.example", sender_name="Centre d'action bénévole — Laval",
        html="<p>Bonjour <b>Éloïse</b></p>", **kwargs,
    )


def outbox_files(tmp_path):
    return sorted((tmp_path / "outbox").glob("*.eml"))


def test_a_message_arrives_with_its_headers_and_both_parts(tmp_path):
    with SMTPServer() as server:
        mailer = mail.Mailer(settings_for(tmp_path, CIOC_MAIL_PORT=server.port))
        with mailer.session() as session:
            assert session.send(message(headers={"List-Unsubscribe": "<https://x/u?t=1>"})) == "sent"
        received = server.wait_for(1)[0]
    assert received["Subject"] == "Nouvelles possibilités de bénévolat"
    assert received["From"].addresses[0].display_name == "Centre d'action bénévole — Laval"
    assert received["List-Unsubscribe"] == "<https://x/u?t=1>"
    assert "Éloïse" in received.get_body(("plain",)).get_content()
    assert "<b>Éloïse</b>" in received.get_body(("html",)).get_content()
    assert server.envelopes == [("vol@cioc.example", ["volunteer@example.org"])]


@pytest.mark.parametrize("tls, variable", [("ssl", "CIOC_MAIL_USE_SSL"), ("starttls", "CIOC_MAIL_STARTTLS")])
def test_a_message_arrives_over_tls_with_a_login(tmp_path, monkeypatch, tls, variable):
    with SMTPServer(tls=tls, auth=("tasks", "s3cret-pw"), tmp_path=tmp_path) as server:
        monkeypatch.setenv("SSL_CERT_FILE", server.ca_file)
        settings = settings_for(tmp_path, CIOC_MAIL_PORT=server.port, CIOC_MAIL_USERNAME="tasks",
                                CIOC_MAIL_PASSWORD="s3cret-pw", **{variable: "1"})
        mailer = mail.Mailer(settings)
        mailer.check()
        with mailer.session() as session:
            assert session.send(message()) == "sent"
        server.wait_for(1)
    assert mailer.problems == []


def test_a_refused_login_is_a_clear_problem_and_the_message_waits_in_the_outbox(tmp_path, monkeypatch):
    with SMTPServer(tls="starttls", auth=("tasks", "right"), tmp_path=tmp_path) as server:
        monkeypatch.setenv("SSL_CERT_FILE", server.ca_file)
        settings = settings_for(tmp_path, CIOC_MAIL_PORT=server.port, CIOC_MAIL_STARTTLS="1",
                                CIOC_MAIL_USERNAME="tasks", CIOC_MAIL_PASSWORD="wrong-pw-123")
        mailer = mail.Mailer(settings)
        with pytest.raises(mail.MailError) as error:
            mailer.check()
        with mailer.session() as session:
            assert session.send(message()) == "spooled"
    assert "refused the login for user 'tasks'" in str(error.value)
    assert "wrong-pw-123" not in str(error.value)
    assert len(mailer.problems) == 1 and "refused the login" in mailer.problems[0]
    assert len(outbox_files(tmp_path)) == 1


def test_a_server_that_is_down_gets_the_message_on_the_next_flush(tmp_path):
    port = free_port()
    settings = settings_for(tmp_path, CIOC_MAIL_PORT=port)
    mailer = mail.Mailer(settings)
    with mailer.session() as session:
        assert session.send(message(to="one@example.org")) == "spooled"
        assert session.send(message(to="two@example.org")) == "spooled"
    assert len(outbox_files(tmp_path)) == 2
    with SMTPServer(port=port) as server:
        report = mail.Mailer(settings).flush_outbox()
        server.wait_for(2)
    assert (report.sent, report.remaining, report.failed) == (2, 0, 0)
    assert outbox_files(tmp_path) == []
    assert sorted(r for _, rs in server.envelopes for r in rs) == ["one@example.org", "two@example.org"]


def test_spooling_the_same_message_twice_keeps_one_copy(tmp_path):
    settings = settings_for(tmp_path, CIOC_MAIL_PORT=free_port())
    once = message()
    with mail.Mailer(settings).session() as session:
        session.send(once)
        session.send(once)
    assert len(outbox_files(tmp_path)) == 1


def test_two_flushes_at_once_deliver_each_message_once(tmp_path):
    port = free_port()
    settings = settings_for(tmp_path, CIOC_MAIL_PORT=port)
    with mail.Mailer(settings).session() as session:
        for number in range(20):
            session.send(message(to=f"v{number}@example.org"))
    with SMTPServer(port=port) as server:
        threads = [threading.Thread(target=mail.Mailer(settings).flush_outbox) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        mail.Mailer(settings).flush_outbox()
        server.wait_for(20)
    recipients = [r for _, rs in server.envelopes for r in rs]
    assert sorted(recipients) == sorted(f"v{n}@example.org" for n in range(20))


def test_a_refused_recipient_fails_that_message_only(tmp_path):
    with SMTPServer() as server:
        server.refuse.add("nobody@example.org")
        mailer = mail.Mailer(settings_for(tmp_path, CIOC_MAIL_PORT=server.port))
        with mailer.session() as session:
            with pytest.raises(mail.Refused, match="nobody@example.org"):
                session.send(message(to="nobody@example.org"))
            assert session.send(message(to="somebody@example.org")) == "sent"
        server.wait_for(1)
    assert len(list((tmp_path / "outbox" / "failed").glob("*.eml"))) == 1
    assert server.connections == 1


def test_a_deferred_recipient_is_spooled_for_later(tmp_path):
    with SMTPServer() as server:
        server.defer.add("later@example.org")
        mailer = mail.Mailer(settings_for(tmp_path, CIOC_MAIL_PORT=server.port))
        with mailer.session() as session:
            assert session.send(message(to="later@example.org")) == "spooled"
    assert len(outbox_files(tmp_path)) == 1


def test_a_batch_uses_one_connection(tmp_path):
    with SMTPServer() as server:
        mailer = mail.Mailer(settings_for(tmp_path, CIOC_MAIL_PORT=server.port))
        with mailer.session() as session:
            for number in range(5):
                session.send(message(to=f"p{number}@example.org"))
        server.wait_for(5)
    assert server.connections == 1


@pytest.mark.parametrize("field", ["subject", "name", "to", "header"])
def test_a_line_break_in_any_header_is_refused(field):
    values = dict(to="a@example.org", subject="Hello", sender="b@example.org", text="x")
    if field == "subject":
        values["subject"] = "Hello\r\nBcc: victim@example.org"
    elif field == "name":
        values["sender_name"] = "Agency\nBcc: victim@example.org"
    elif field == "to":
        values["to"] = "a@example.org\r\nBcc: victim@example.org"
    else:
        values["headers"] = {"List-Unsubscribe": "<x>\r\nBcc: victim@example.org"}
    with pytest.raises(mail.HeaderError):
        mail.Message(**values)


def test_something_that_is_not_an_address_is_refused():
    with pytest.raises(mail.HeaderError, match="not an address"):
        mail.Message(to="not an address", subject="s", text="t", sender="b@example.org")


def test_the_file_backend_writes_parseable_messages(tmp_path):
    settings = settings_for(tmp_path, CIOC_MAIL_BACKEND="file")
    with mail.Mailer(settings).session() as session:
        assert session.send(message()) == "sent"
    written = list((tmp_path / "mail").glob("*.eml"))
    assert len(written) == 1
    parsed = email.message_from_bytes(written[0].read_bytes(), policy=email.policy.default)
    assert parsed["Subject"] == "Nouvelles possibilités de bénévolat"


def test_a_dry_run_sends_and_writes_nothing(tmp_path):
    with SMTPServer() as server:
        settings = settings_for(tmp_path, CIOC_MAIL_PORT=server.port)
        with mail.Mailer(settings, dry_run=True).session() as session:
            assert session.send(message()) == "dry-run"
    assert server.messages == [] and server.connections == 0
    assert not (tmp_path / "outbox").exists() and not (tmp_path / "mail").exists()
