"""Mail: messages with safe headers, and a Mailer that never loses one nor sends one twice.

``Message`` builds a text mail (with an optional HTML alternative) whose headers are
Unicode-safe; a CR, LF or NUL in any header value, name or address is refused with
``HeaderError``, so no data from a database can inject a header.

``Mailer`` sends through one of three backends, chosen by ``CIOC_MAIL_BACKEND``:

- ``smtp``: SSL or STARTTLS, AUTH when a user name is set, one connection per session.
  A message the server cannot take now is spooled to the outbox (``outbox`` module) and
  sent by ``flush_outbox`` at the start of the next run of any task; a message the server
  refuses for good goes to ``outbox/failed`` and ``send`` raises ``Refused``.
- ``file``: each message is written as an ``.eml`` file into ``CIOC_MAIL_DIR``.
- ``memory``: each message is appended to ``MEMORY_OUTBOX`` (tests).

Write ahead (``smtp`` and ``file``): ``Session.send(message, record)`` stores the message,
fsynced, in its session's journal (``outbox`` module), then calls ``record`` (the task's
note that this work is done), and only then hands it over. A run killed after that is
followed by a run that sends the stored message (same bytes, same Message-ID) and finds
the work recorded, so it never builds the message again. A message with a ``record`` that
cannot be stored is not sent: ``StoreError``, one line naming the folder.

The SMTP protocol itself (connect, TLS, AUTH, one transaction) lives in ``smtp``; a
private CA is trusted through the standard ``SSL_CERT_FILE`` variable.
"""

import contextlib
import datetime
import email.headerregistry
import email.message
import email.policy
import email.utils
import hashlib
import itertools
import logging
import re
import smtplib

from cioctasks import addresses, files, journal, outbox, smtp, udl
from cioctasks.addresses import HeaderError, clean as _clean
from cioctasks.errors import TaskError
from cioctasks.journal import StoreError  # noqa: F401  (part of this module's interface)

#: Messages delivered by the ``memory`` backend, for tests.
MEMORY_OUTBOX = []

_file_counter = itertools.count(1)


class MailError(TaskError):
    """The mail server or the mail settings cannot be used."""


class Refused(MailError):
    """The server refused this one message for good (a mailbox that does not exist, say)."""


# -- messages ---------------------------------------------------------------------------

_HEADER_NAME = re.compile(r"[!-9;-~]+\Z")  # printable ASCII without ':' (RFC 5322 ftext)
_MESSAGE_ID = re.compile(r"<[^<>\s@]+@[^<>\s@]+>\Z")

#: Headers that Message writes itself: passing them in ``headers`` is an error.
_OWN_HEADERS = frozenset(
    ("from", "to", "cc", "bcc", "subject", "reply-to", "sender", "mime-version",
     "content-type", "content-transfer-encoding")
)


def address(text, what="address", name=None):
    """Given an address (and an optional display name), return an email Address.

    A non-ASCII domain is written in its IDNA (``xn--``) form; a non-ASCII or quoted local
    part is not supported. Raise HeaderError for anything that is not one plain address.
    """
    local, ascii_domain = addresses.split(text, what)
    display_name = _clean(name, f"{what} name").strip() if name else ""
    return email.headerregistry.Address(display_name=display_name, username=local,
                                        domain=ascii_domain)


def _message_id(value):
    value = _clean(value, "Message-ID").strip()
    if not value.startswith("<"):
        value = f"<{value}>"
    if not _MESSAGE_ID.match(value):
        raise HeaderError(f"Message-ID is not of the form <id@domain>: {value[:80]!r}")
    return value


class Message:
    """One mail message: plain text, and an HTML alternative when ``html`` is given.

    ``to`` is one address or a list of them. ``headers`` adds headers such as
    ``List-Unsubscribe``; a ``Message-ID`` or ``Date`` given there is kept, otherwise both
    are set once here, so the message keeps its identity when it is spooled and resent.
    ``identity`` (a tuple of what names the work: task, database, key, ...) makes the
    Message-ID a hash of it, so a message built again for the same work has the same one.
    Raise HeaderError for a line break or NUL in any header, or for a bad address.
    """

    def __init__(self, to, subject, text, sender, sender_name=None, html=None, headers=None,
                 reply_to=None, identity=None):
        listed = [to] if isinstance(to, str) else list(to or ())
        if not listed:
            raise HeaderError("a message needs at least one recipient")
        self.to = [address(item, "recipient") for item in listed]
        self.sender = address(sender, "sender", sender_name)
        self.reply_to = address(reply_to, "Reply-To") if reply_to else None
        self.subject = _clean(subject, "subject")
        self.text = "" if text is None else str(text)
        self.html = None if html is None else str(html)
        self.headers = {}
        message_id = date = None
        for key, value in (headers or {}).items():
            key = _clean(key, "header name").strip()
            if not _HEADER_NAME.match(key):
                raise HeaderError(f"not a header name: {key[:80]!r}")
            value = _clean(value, f"header {key}")
            if key.lower() == "message-id":
                message_id = _message_id(value)
            elif key.lower() == "date":
                date = value
            elif key.lower() in _OWN_HEADERS:
                raise HeaderError(f"header {key} is set from the Message arguments")
            else:
                self.headers[key] = value
        if message_id is None and identity is not None:
            digest = hashlib.sha256(repr(tuple(identity)).encode("utf-8")).hexdigest()[:32]
            message_id = f"<{digest}.cioctasks@{self.sender.domain}>"
        self.message_id = message_id or email.utils.make_msgid(domain=self.sender.domain)
        self.date = date or email.utils.formatdate(localtime=True)
        self._bytes = None

    def __repr__(self):
        return f"<Message {self.subject[:40]!r} to {', '.join(self.recipients)}>"

    @property
    def recipients(self):
        """The envelope recipients: every ``to`` address, each once."""
        return list(dict.fromkeys(item.addr_spec for item in self.to))

    def as_email(self):
        """Return the message as an email.message.EmailMessage (SMTP policy, CRLF)."""
        message = email.message.EmailMessage(policy=email.policy.SMTP)
        message["From"] = self.sender
        message["To"] = self.to
        if self.reply_to:
            message["Reply-To"] = self.reply_to
        message["Subject"] = self.subject
        message["Date"] = self.date
        message["Message-ID"] = self.message_id
        for name, value in self.headers.items():
            message[name] = value
        message.set_content(self.text, cte="quoted-printable")
        if self.html is not None:
            message.add_alternative(self.html, subtype="html", cte="quoted-printable")
        return message

    def as_bytes(self):
        """Return the RFC 5322 bytes; the same bytes every time (the MIME boundary too)."""
        if self._bytes is None:
            self._bytes = self.as_email().as_bytes()
        return self._bytes


# -- the mailer -------------------------------------------------------------------------

class Mailer:
    """Sends messages with the configured backend.

    ``problems`` lists one-line issues for the run report (a refused login, a recipient
    refused for good, messages queued for a later run), each once, never with a password.
    ``sent`` counts the messages accepted (written, with ``file``), ``queued`` those left
    in the outbox for a later run, ``would_send`` those a dry run would have sent.
    """

    def __init__(self, settings, dry_run=False, log=None):
        self.settings = settings
        self.dry_run = dry_run
        self.log = log
        self._problems = []
        self.outbox = outbox.Outbox(settings.mail_outbox)
        #: Why the server cannot be reached in this run, once a connection failed: later
        #: sessions spool at once instead of waiting for the same timeout again.
        self.down = None
        self.sent = self.queued = self.would_send = 0
        self.queued_why = None
        self._recovered = False

    @property
    def problems(self):
        """The problems so far; messages queued make one: the run did not deliver them."""
        if not self.queued:
            return list(self._problems)
        count = f"{self.queued} message" + ("s" if self.queued > 1 else "")
        return [*self._problems, f"queued {count} for the next run ({self.queued_why})"]

    # text that leaves the mailer: logs, problems, exceptions; all masked
    def mask(self, text):
        return udl.mask(str(text), self.settings.secrets())

    def note(self, level, text, *args):
        if self.log:
            self.log.log(level, "%s", self.mask(text % args if args else text))

    def problem(self, text):
        text = self.mask(text)
        if text not in self._problems:
            self._problems.append(text)
        self.note(logging.ERROR, text)

    def where(self):
        return f"{self.settings.mail_host}:{self.settings.mail_port}"

    def describe(self, error):
        """Return one masked line for a failure to connect, secure or log in."""
        if isinstance(error, smtplib.SMTPAuthenticationError):
            return self.mask(f"mail server {self.where()} refused the login for user "
                             f"{self.settings.mail_username!r}: {smtp.describe(error)}")
        return self.mask(f"mail server {self.where()}: {smtp.describe(error)}")

    def connect(self):
        """Open, secure and log in to the SMTP server; return the smtplib client.

        Raise OSError (smtplib's exceptions are OSErrors) if any step fails.
        """
        return smtp.connect(self.settings)

    def open(self, purpose="messages go to the outbox"):
        """Return a connected client, or None (and remember why) if the server cannot be used.

        A failure a person must fix (login, TLS) is also recorded in ``problems``.
        """
        try:
            return self.connect()
        except OSError as error:
            self.down = self.describe(error)
            if smtp.needs_attention(error):
                self.problem(self.down)
            else:
                self.note(logging.WARNING, "%s; %s", self.down, purpose)
            return None

    def check(self):
        """Connect, secure and log in, then quit. Raise MailError with one line if it fails.

        Only the ``smtp`` backend has anything to check.
        """
        if self.settings.mail_backend != "smtp":
            return
        try:
            client = self.connect()
        except OSError as error:
            raise MailError(self.describe(error)) from None
        with contextlib.suppress(OSError):
            client.quit()

    @contextlib.contextmanager
    def session(self):
        """Yield a Session: one SMTP connection for a batch, opened on its first send and
        closed (QUIT) at the end of the block."""
        if not self._recovered and not self.dry_run:
            self._recovered = True
            try:
                self.recover()
            except StoreError as error:  # it stays in its journal: nothing is lost
                self.note(logging.WARNING, "%s; mail of a killed run waits", error)
        session = Session(self)
        try:
            yield session
        finally:
            session.close()

    def send(self, message):
        """Send one message in a session of its own; return as ``Session.send``."""
        with self.session() as session:
            return session.send(message)

    def flush_outbox(self):
        """Send what the outbox holds; return an ``outbox.Report(sent, remaining, failed)``.

        Cheap when the outbox is empty; skipped (nothing sent) while another process
        flushes the same outbox, and in a dry run.
        """
        if self.dry_run:
            remaining = self.outbox.count()
            if remaining:
                self.note(logging.INFO, "(dry run) would send %d messages from the outbox",
                          remaining)
            return outbox.Report(0, remaining, 0)
        if self.settings.mail_backend != "smtp":
            return outbox.Report(0, self.outbox.count(), 0)
        return self.outbox.flush(self)

    def recover(self):
        """Deliver what runs killed while sending left in their journals: into the outbox
        (``smtp``, for the next flush) or into ``CIOC_MAIL_DIR`` (``file``). Raise
        StoreError if that cannot be written."""
        backend = self.settings.mail_backend
        if backend not in ("smtp", "file"):
            return
        recovered = self.outbox.recover(self._write_stored if backend == "file" else None)
        if recovered:
            self.note(logging.WARNING, "%d messages of a run killed while sending them are "
                      "delivered as they were stored", recovered)

    def write_file(self, message):
        """Write a message into ``CIOC_MAIL_DIR`` (the ``file`` backend); return its path.
        Raise StoreError naming the folder if it cannot be written."""
        return self._write(message.message_id, message.as_bytes())

    def _write(self, message_id, data):
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        short_id = hashlib.sha256(message_id.encode("utf-8")).hexdigest()[:10]
        path = self.settings.mail_dir / f"{stamp}-{next(_file_counter)}-{short_id}.eml"
        try:
            files.atomic_write(path, data)
        except OSError as error:
            raise journal.store_error(error, self.settings.mail_dir) from None
        return path

    def _write_stored(self, stored):
        """Write a message recovered from a journal into ``CIOC_MAIL_DIR``, unless it is
        there already (the run was killed after writing it)."""
        data = outbox.unpack(stored)[2]
        message_id = outbox.message_id_of(data)
        short_id = hashlib.sha256(message_id.encode("utf-8")).hexdigest()[:10]
        if not any(self.settings.mail_dir.glob(f"*-{short_id}.eml")):
            self._write(message_id, data)


class Session:
    """One batch of messages over at most one SMTP connection (see ``Mailer.session``)."""

    def __init__(self, mailer):
        self.mailer = mailer
        self.client = None
        self.used = False  # the connection carried a transaction: it may have gone idle
        self.journal = journal.Journal(mailer.outbox)

    def _client(self):
        if self.client is None and self.mailer.down is None:
            self.client = self.mailer.open()
            self.used = False
        return self.client

    def send(self, message, record=None):
        """Send one message; return ``sent``, ``spooled`` or ``dry-run``.

        ``record``: a function that records the work this message reports as done. It is
        called once the message is stored (see the module docstring) and before it is handed
        over; not in a dry run. If it raises, nothing is sent.
        ``spooled``: the server cannot take it now; it waits in the outbox for the next
        run. Raise Refused if the server refuses it for good (it is kept in outbox/failed),
        StoreError if it cannot be stored.
        """
        mailer = self.mailer
        recipients = ", ".join(message.recipients)
        if mailer.dry_run:
            mailer.note(logging.INFO, "(dry run) would mail %r to %s", message.subject,
                        recipients)
            mailer.would_send += 1
            return "dry-run"
        backend = mailer.settings.mail_backend
        stored = backend != "memory"
        if stored:
            try:
                self.journal.store(outbox.pack(message.as_bytes(), message.sender.addr_spec,
                                               message.recipients))
            except StoreError as error:
                if record is not None:
                    raise
                # Nothing records it (a failure report, say): better sent unstored than not.
                mailer.note(logging.WARNING, "%s; mail %s goes without it", error,
                            message.message_id)
                stored = False
        if record is not None:
            try:
                record()
            except BaseException:
                self.journal.clear()
                raise
        if backend == "memory":
            MEMORY_OUTBOX.append(message)
            status = "sent"
        elif backend == "file":
            path = mailer.write_file(message)
            mailer.note(logging.INFO, "mail %s to %s written to %s", message.message_id,
                        recipients, path)
            status = "sent"
        else:
            status = self._send_smtp(message)
        if stored:
            self.journal.clear()  # settled: sent, spooled or failed
        if status == "sent":
            mailer.sent += 1
        return status

    def _spool(self, message, recipients, why):
        mailer = self.mailer
        mailer.outbox.spool(message.as_bytes(), message.sender.addr_spec, recipients,
                            message.message_id)
        mailer.queued += 1
        mailer.queued_why = why
        mailer.note(logging.WARNING, "mail %s to %s kept in the outbox: %s",
                    message.message_id, ", ".join(recipients), why)
        return "spooled"

    def _send_smtp(self, message):
        mailer = self.mailer
        sender, recipients = message.sender.addr_spec, message.recipients
        client = self._client()
        if client is None:
            return self._spool(message, recipients, mailer.down)
        delivery = smtp.transfer(client, sender, recipients, message.as_bytes())
        if (delivery.outcome == "lost" and not delivery.started and self.used
                and not delivery.attention):
            # The server dropped a connection that sat idle between two messages. Nothing
            # of this message reached it, so one new connection cannot send it twice.
            self._drop()
            client = self._client()
            if client is None:
                return self._spool(message, recipients, mailer.down)
            delivery = smtp.transfer(client, sender, recipients, message.as_bytes())
        self.used = True
        where = mailer.where()
        for recipient, reply in delivery.refused.items():
            if delivery.outcome != "refused":
                mailer.problem(f"mail to {recipient} refused by {where}: {reply}")
        if delivery.outcome == "sent":
            mailer.note(logging.INFO, "mail %s sent to %s", message.message_id,
                        ", ".join(delivery.accepted))
            if delivery.deferred:
                self._spool(message, list(delivery.deferred), f"mail server {where}: " +
                            "; ".join(f"{a}: {r}" for a, r in delivery.deferred.items()))
            return "sent"
        # Whatever was not refused for good waits in the outbox.
        waiting = [r for r in recipients if r not in delivery.refused]
        if delivery.outcome == "later":
            return self._spool(message, waiting, f"mail server {where}: {delivery.reply}")
        if delivery.outcome == "lost":
            mailer.down = mailer.mask(f"mail server {where}: {delivery.reply}")
            if delivery.attention:
                mailer.problem(mailer.down)
            self._drop()
            return self._spool(message, waiting, mailer.down)
        mailer.outbox.fail(message.as_bytes(), sender, recipients, message.message_id)
        self.journal.clear()
        line = mailer.mask(f"mail to {', '.join(recipients)} refused by {where}: "
                           f"{delivery.reply}")
        mailer.note(logging.ERROR, "%s (kept in %s)", line, mailer.outbox.failed_folder)
        raise Refused(line)

    def _drop(self):
        if self.client is not None:
            smtp.close(self.client)
            self.client = None

    def close(self):
        """QUIT and close the connection, if one was opened. A message whose send was cut
        short (it may have arrived) stays in the journal, to be sent again as it is."""
        try:
            if self.client is not None:
                with contextlib.suppress(OSError):
                    self.client.quit()
                self._drop()
        finally:
            self.journal.close()
