"""The outbox: mail the SMTP server could not take yet, kept as ``.eml`` files until it can.

Each spooled file is the message with its SMTP envelope (sender and the recipients still
waiting for it) in ``X-Cioctasks-Envelope-*`` lines in front; they are taken off again
before the message is resent, and keep a message to several recipients of whom some
already have it from going to those twice. The file is named after the message's
Message-ID, so spooling the same message again keeps one copy, and it is written
atomically, so a crash never leaves half a message.

``flush`` sends the spooled files over one connection, oldest first, and deletes each only
after the server accepted it; a permanent refusal moves the file to ``failed/``, a
temporary one leaves it for the next run (a file in ``failed/`` moved back into the
outbox is tried again). A non-blocking lock on ``.lock`` means two tasks
flushing at once never send the same message twice: the second one skips its flush.
Between the server's "accepted" and the delete there is no safe way to be sure on a crash;
the file is deleted at once so that window is as short as it can be.
"""

import collections
import contextlib
import datetime
import email.parser
import email.policy
import email.utils
import hashlib
import logging
import os
import re
import time
from pathlib import Path

from cioctasks import files, smtp

#: What ``flush`` did: messages sent, still waiting, and moved to ``failed/``.
Report = collections.namedtuple("Report", "sent remaining failed")

ENVELOPE_FROM = b"X-Cioctasks-Envelope-From:"
ENVELOPE_TO = b"X-Cioctasks-Envelope-To:"
_ENVELOPE = b"X-Cioctasks-Envelope-"

#: A message waiting longer than this while the server stays unusable is a problem for
#: the run report, not only a log line: mail that cannot leave must not go unnoticed.
ALERT_HOURS = 24


def file_name(message_id):
    """The stable file name of a message in the outbox, from its Message-ID."""
    return hashlib.sha256(message_id.strip().encode("utf-8")).hexdigest()[:24] + ".eml"


def _message_id_of(data):
    headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(data)
    message_id = headers.get("Message-ID")
    if message_id:
        return str(message_id)
    return hashlib.sha256(data).hexdigest()  # without a Message-ID the content names it


def pack(data, sender, recipients):
    """Return a message's bytes with its envelope in front, for a spool file."""
    lines = [ENVELOPE_FROM + f" <{sender}>\r\n".encode("utf-8")]
    lines += [ENVELOPE_TO + f" <{recipient}>\r\n".encode("utf-8") for recipient in recipients]
    return b"".join(lines) + data


def _crlf(data):
    return re.sub(rb"\r?\n", b"\r\n", data)


def unpack(stored):
    """Given a spool file's bytes, return (sender, recipients, message bytes with CRLF).

    A file without envelope lines (written by hand, say) is sent from its From header to
    its To, Cc and Bcc headers, and a Bcc header is taken off first.
    """
    sender, recipients, rest = None, [], stored
    while rest.startswith(_ENVELOPE):
        line, _, rest = rest.partition(b"\n")
        value = line.split(b":", 1)[1].strip().decode("utf-8", "replace").strip("<>")
        if line.startswith(ENVELOPE_FROM):
            sender = value
        elif line.startswith(ENVELOPE_TO) and value:
            recipients.append(value)
    data = _crlf(rest)
    if sender is not None:
        return sender, recipients, data
    parsed = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(data)
    sender = email.utils.parseaddr(parsed.get("From", ""))[1]
    fields = [str(v) for name in ("To", "Cc", "Bcc") for v in parsed.get_all(name, [])]
    recipients = [a for _, a in email.utils.getaddresses(fields) if a]
    if parsed.get("Bcc") is not None:
        del parsed["Bcc"]
        data = _crlf(parsed.as_bytes())
    return sender, recipients, data


class Outbox:
    """The spool folder (``CIOC_MAIL_OUTBOX``) and its ``failed/`` folder."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.failed_folder = self.folder / "failed"

    def _entries(self):
        """Return [(mtime, path)] of the spooled messages, oldest first; cheap when empty."""
        entries = []
        try:
            with os.scandir(self.folder) as found:
                for entry in found:
                    if entry.name.endswith(".eml") and not entry.name.startswith("."):
                        with contextlib.suppress(OSError):  # sent by another flush just now
                            entries.append((entry.stat().st_mtime, Path(entry.path)))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(entries)

    def pending(self):
        """Return the paths of the spooled messages, oldest first."""
        return [path for _, path in self._entries()]

    def count(self):
        return len(self._entries())

    def spool(self, data, sender, recipients, message_id=None):
        """Keep a message for a later run; return its path. Spooling it again replaces it."""
        path = self.folder / file_name(message_id or _message_id_of(data))
        files.atomic_write(path, pack(data, sender, recipients))
        return path

    def fail(self, data, sender, recipients, message_id=None):
        """Keep a message refused for good in ``failed/`` (and not in the outbox); return
        its path."""
        name = file_name(message_id or _message_id_of(data))
        path = self.failed_folder / name
        files.atomic_write(path, pack(data, sender, recipients))
        with contextlib.suppress(FileNotFoundError):
            (self.folder / name).unlink()
        return path

    def flush(self, mailer):
        """Send every spooled message through ``mailer`` (a ``mail.Mailer``); return a Report.

        Skip the flush (nothing sent) while another process holds the outbox lock.
        """
        if not self._entries():
            return Report(0, 0, 0)
        import portalocker

        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lock", "a", encoding="utf-8") as handle:
            try:
                portalocker.lock(handle, portalocker.LOCK_EX | portalocker.LOCK_NB)
            except portalocker.LockException:
                mailer.note(logging.INFO, "outbox: another task is sending it; skipped")
                return Report(0, self.count(), 0)
            try:
                return self._flush_locked(mailer)
            finally:
                portalocker.unlock(handle)

    def _flush_locked(self, mailer):
        entries = self._entries()  # again, under the lock: another flush may have sent some
        if not entries:
            return Report(0, 0, 0)
        client = mailer.open(f"{len(entries)} messages wait in the outbox")
        if client is None:
            self._alert_if_old(mailer, entries, mailer.down)
            return Report(0, len(entries), 0)
        sent = failed = 0
        why = None
        try:
            for _, path in entries:
                try:
                    stored = path.read_bytes()
                except FileNotFoundError:
                    continue
                sender, recipients, data = unpack(stored)
                if not recipients:
                    self._move_to_failed(path)
                    failed += 1
                    mailer.problem(f"outbox: {path.name} names no recipient; moved to "
                                   f"{self.failed_folder}")
                    continue
                delivery = smtp.transfer(client, sender, recipients, data)
                outcome = self._settle(mailer, path, sender, recipients, data, delivery)
                if outcome == "sent":
                    sent += 1
                elif outcome == "refused":
                    failed += 1
                elif outcome == "lost":
                    mailer.down = mailer.mask(f"mail server {mailer.where()}: {delivery.reply}")
                    if delivery.attention:
                        mailer.problem(mailer.down)
                    mailer.note(logging.WARNING, "outbox: %s; the rest waits", mailer.down)
                    why = mailer.down
                    break
                else:
                    why = delivery.reply
        finally:
            with contextlib.suppress(OSError):
                client.quit()
            smtp.close(client)
        remaining = self._entries()
        if remaining:
            self._alert_if_old(mailer, remaining, why or "the server keeps deferring them")
        return Report(sent, len(remaining), failed)

    def _settle(self, mailer, path, sender, recipients, data, delivery):
        """Update the spool file after one delivery attempt; return its outcome."""
        where = mailer.where()
        for recipient, reply in delivery.refused.items():
            if delivery.outcome != "refused":
                mailer.problem(f"mail to {recipient} refused by {where}: {reply}")
        if delivery.outcome == "sent":
            mailer.note(logging.INFO, "outbox: mail %s sent to %s", _message_id_of(data),
                        ", ".join(delivery.accepted))
            if delivery.deferred:
                files.atomic_write(path, pack(data, sender, list(delivery.deferred)))
            else:
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
                except OSError as error:
                    mailer.problem(f"outbox: {path.name} was sent but cannot be deleted "
                                   f"({error.strerror or error}); it may be sent again")
        elif delivery.outcome in ("later", "lost") and delivery.refused:
            waiting = [r for r in recipients if r not in delivery.refused]
            files.atomic_write(path, pack(data, sender, waiting))
        elif delivery.outcome == "refused":
            self._move_to_failed(path)
            mailer.problem(f"mail to {', '.join(recipients)} refused by {where}: "
                           f"{delivery.reply}; kept in {self.failed_folder}")
        return delivery.outcome

    def _move_to_failed(self, path):
        self.failed_folder.mkdir(parents=True, exist_ok=True)
        os.replace(path, self.failed_folder / path.name)

    def _alert_if_old(self, mailer, entries, why):
        oldest = min(mtime for mtime, _ in entries)
        if time.time() - oldest >= ALERT_HOURS * 3600:
            since = datetime.datetime.fromtimestamp(oldest).strftime("%Y-%m-%d %H:%M")
            mailer.problem(f"outbox: {len(entries)} messages wait since {since}: {why}")
