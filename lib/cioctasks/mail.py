"""Mail: messages with safe headers, and a Mailer that never loses one.

``Message`` builds text (and optional HTML) mail with Unicode-safe headers; CR, LF or NUL
in any header value is refused. ``Mailer`` sends through one of three backends: ``smtp``
(SSL, STARTTLS, AUTH, one connection per session), ``file`` (an ``.eml`` per message in
``CIOC_MAIL_DIR``) or ``memory`` (tests). A message the SMTP server cannot take now is
spooled to the outbox (``outbox`` module) and sent by the next run of any task; a
permanent refusal is moved to ``outbox/failed`` and reported.
"""

import contextlib
import datetime
import email.headerregistry
import email.message
import email.policy
import email.utils
import itertools
import smtplib
import socket
import ssl

from cioctasks import files, outbox, udl
from cioctasks.errors import TaskError

#: Messages delivered by the ``memory`` backend, for tests.
MEMORY_OUTBOX = []

_counter = itertools.count(1)


class MailError(TaskError):
    """The mail server or the mail settings cannot be used."""


class Refused(MailError):
    """The server refused this one message for good (a bad address, say)."""


class HeaderError(ValueError):
    """A header value that would break the message or inject headers."""


def _clean(value, what):
    value = "" if value is None else str(value)
    if any(c in value for c in "\r\n\0"):
        raise HeaderError(f"{what} holds a line break or NUL: {value[:60]!r}")
    return value


def _address(address, what, name=None):
    address = _clean(address, what).strip()
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or any(c.isspace() for c in address) or "," in address:
        raise HeaderError(f"{what} is not an address: {address[:60]!r}")
    if name:
        return email.headerregistry.Address(display_name=_clean(name, f"{what} name").strip(),
                                            addr_spec=address)
    return email.headerregistry.Address(addr_spec=address)


class Message:
    """One mail message. ``to`` is an address or a list of them."""

    def __init__(self, to, subject, text, sender, sender_name=None, html=None, headers=None,
                 reply_to=None):
        recipients = [to] if isinstance(to, str) else list(to)
        if not recipients:
            raise HeaderError("a message needs at least one recipient")
        self.to = [_address(a, "recipient") for a in recipients]
        self.sender = _address(sender, "sender", sender_name)
        self.reply_to = _address(reply_to, "Reply-To") if reply_to else None
        self.subject = _clean(subject, "subject")
        self.text = text
        self.html = html
        self.headers = {_clean(k, "header name"): _clean(v, f"header {k}")
                        for k, v in (headers or {}).items()}
        domain = self.sender.domain or "localhost"
        self.message_id = self.headers.pop("Message-ID", None) or email.utils.make_msgid(
            domain=domain)

    @property
    def recipients(self):
        return [a.addr_spec for a in self.to]

    def as_email(self):
        message = email.message.EmailMessage(policy=email.policy.SMTP)
        message["From"] = self.sender
        message["To"] = self.to
        if self.reply_to:
            message["Reply-To"] = self.reply_to
        message["Subject"] = self.subject
        message["Date"] = email.utils.formatdate(localtime=True)
        message["Message-ID"] = self.message_id
        for name, value in self.headers.items():
            message[name] = value
        message.set_content(self.text, cte="quoted-printable")
        if self.html is not None:
            message.add_alternative(self.html, subtype="html", cte="quoted-printable")
        return message

    def as_bytes(self):
        return self.as_email().as_bytes()


class Mailer:
    """Sends messages with the configured backend; ``problems`` collects one-line issues
    (a refused login, say) for the run report."""

    def __init__(self, settings, dry_run=False, log=None):
        self.settings = settings
        self.dry_run = dry_run
        self.log = log
        self.problems = []
        self.outbox = outbox.Outbox(settings.mail_outbox)

    def _mask(self, text):
        return udl.mask(str(text), self.settings.secrets())

    def _note(self, level, text, *args):
        if self.log:
            self.log.log(level, self._mask(text % args if args else text))

    @contextlib.contextmanager
    def session(self):
        """Yield a Session: one SMTP connection for a batch, opened on the first send."""
        session = Session(self)
        try:
            yield session
        finally:
            session.close()

    def connect(self):
        """Open, secure and log in to the SMTP server; return the smtplib client.

        Raise OSError/SMTPException as smtplib does.
        """
        settings = self.settings
        context = ssl.create_default_context()
        if settings.mail_use_ssl:
            client = smtplib.SMTP_SSL(settings.mail_host, settings.mail_port,
                                      timeout=settings.mail_timeout, context=context)
        else:
            client = smtplib.SMTP(settings.mail_host, settings.mail_port,
                                  timeout=settings.mail_timeout)
        try:
            client.ehlo_or_helo_if_needed()
            if settings.mail_starttls:
                client.starttls(context=context)
                client.ehlo()
            if settings.mail_username:
                client.login(settings.mail_username, settings.mail_password or "")
        except BaseException:
            with contextlib.suppress(Exception):
                client.close()
            raise
        return client

    def where(self):
        return f"{self.settings.mail_host}:{self.settings.mail_port}"

    def describe(self, error):
        """One masked line for an SMTP or network error."""
        if isinstance(error, smtplib.SMTPAuthenticationError):
            user = self.settings.mail_username
            reply = error.smtp_error.decode("utf-8", "replace") if isinstance(
                error.smtp_error, bytes) else str(error.smtp_error)
            return (f"mail server {self.where()} refused the login for user {user!r}: "
                    f"{error.smtp_code} {reply}")
        if isinstance(error, smtplib.SMTPResponseException):
            reply = error.smtp_error.decode("utf-8", "replace") if isinstance(
                error.smtp_error, bytes) else str(error.smtp_error)
            return self._mask(f"mail server {self.where()}: {error.smtp_code} {reply}")
        if isinstance(error, ssl.SSLError):
            return self._mask(f"mail server {self.where()}: TLS failed: {error.reason or error}")
        if isinstance(error, (socket.timeout, TimeoutError)):
            return f"mail server {self.where()}: timed out"
        text = getattr(error, "strerror", None) or str(error) or error.__class__.__name__
        return self._mask(f"mail server {self.where()}: {text}")

    def check(self):
        """Connect, secure and log in, then quit. Raise MailError with one line if it fails."""
        if self.settings.mail_backend != "smtp":
            return
        try:
            client = self.connect()
        except (OSError, smtplib.SMTPException) as error:
            raise MailError(self.describe(error)) from None
        with contextlib.suppress(Exception):
            client.quit()

    def deliver_file(self, message_bytes):
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        name = f"{stamp}-{next(_counter):04d}-{outbox.short_id(message_bytes)}.eml"
        files.atomic_write(self.settings.mail_dir / name, message_bytes)
        return name

    def flush_outbox(self):
        """Send what the outbox holds; return an outbox.Report."""
        if self.dry_run:
            return outbox.Report(0, len(self.outbox.pending()), 0)
        return self.outbox.flush(self)


class Session:
    """One batch of messages over at most one SMTP connection."""

    def __init__(self, mailer):
        self.mailer = mailer
        self.client = None
        self.down = None  # why the server cannot be used in this session, once known

    def _client(self):
        if self.client is None and self.down is None:
            try:
                self.client = self.mailer.connect()
            except (OSError, smtplib.SMTPException) as error:
                self.down = self.mailer.describe(error)
                if isinstance(error, (smtplib.SMTPAuthenticationError, ssl.SSLError)):
                    self.mailer.problems.append(self.down)
                self.mailer._note(40, "%s; messages go to the outbox", self.down)
        return self.client

    def send(self, message):
        """Send one message; return ``sent``, ``spooled`` or ``dry-run``.

        Raise Refused if the server refuses it for good (it is kept in outbox/failed).
        """
        mailer = self.mailer
        data = message.as_bytes()
        if mailer.dry_run:
            mailer._note(20, "(dry run) would mail %r to %s", message.subject,
                         ", ".join(message.recipients))
            return "dry-run"
        backend = mailer.settings.mail_backend
        if backend == "memory":
            MEMORY_OUTBOX.append(message)
            return "sent"
        if backend == "file":
            mailer.deliver_file(data)
            return "sent"
        client = self._client()
        if client is None:
            mailer.outbox.spool(data)
            return "spooled"
        return self._send_smtp(client, data, message.sender.addr_spec, message.recipients)

    def _send_smtp(self, client, data, sender, recipients):
        mailer = self.mailer
        try:
            refused = client.sendmail(sender, recipients, data)
        except smtplib.SMTPRecipientsRefused as error:
            return self._refused(data, sender, recipients, error.recipients)
        except smtplib.SMTPResponseException as error:
            if 500 <= error.smtp_code < 600:
                with contextlib.suppress(Exception):
                    client.rset()
                mailer.outbox.fail(data)
                raise Refused(f"{', '.join(recipients)}: {mailer.describe(error)}") from None
            return self._spool_after(error, data, sender, recipients)
        except (OSError, smtplib.SMTPException) as error:
            return self._spool_after(error, data, sender, recipients)
        if refused:
            line = "; ".join(f"{a}: {c} {r.decode('utf-8', 'replace') if isinstance(r, bytes) else r}"
                             for a, (c, r) in refused.items())
            mailer.problems.append(f"some recipients refused: {line}")
            mailer._note(40, "some recipients refused: %s", line)
        return "sent"

    def _refused(self, data, sender, recipients, refused):
        temporary = {a: v for a, v in refused.items() if 400 <= v[0] < 500}
        if temporary:
            return self._spool_after(None, data, sender, recipients)
        with contextlib.suppress(Exception):
            self.client.rset()
        self.mailer.outbox.fail(data)
        reasons = "; ".join(
            f"{a}: {c} {r.decode('utf-8', 'replace') if isinstance(r, bytes) else r}"
            for a, (c, r) in refused.items())
        raise Refused(f"refused by {self.mailer.where()}: {reasons}")

    def _spool_after(self, error, data, sender, recipients):
        if error is not None:
            self.down = self.mailer.describe(error)
            self.mailer._note(40, "%s; message kept in the outbox", self.down)
            self._drop_client()
        self.mailer.outbox.spool(data)
        return "spooled"

    def _drop_client(self):
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.close()
            self.client = None

    def close(self):
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.quit()
            self._drop_client()
