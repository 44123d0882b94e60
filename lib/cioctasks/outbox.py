"""The outbox: mail not yet accepted by the SMTP server, kept as ``.eml`` files until it is.

Each spooled file is the message with its SMTP envelope (sender and the recipients still
waiting for it) in ``X-Cioctasks-Envelope-*`` lines in front; they are taken off again
before the message is resent, and keep a message to several recipients of whom some
already have it from going to those twice. The file is named after the message's
Message-ID, so spooling the same message again keeps one copy, and it is written
atomically, so a crash never leaves half a message.

Write ahead: before any byte of a message goes to the server (or into ``CIOC_MAIL_DIR``),
``journal.Journal.store`` writes it, fsynced, into the session's journal ``sending/<id>.journal``,
whose lock (``sending/<id>.lock``) the session's process holds; the task records its work
only after that, and the journal is emptied once the message is settled (accepted, spooled
or failed). A process killed in between leaves its journal behind and its lock free:
``recover`` (run by every flush and by the first session of a run) spools such a message,
and it is sent as it was stored, with the same bytes and Message-ID. So a crash can make
the server receive a message twice, never two different messages for the same work. A
journal may hold a batch instead (``journal.Journal.store_batch``): its records are written
into the run state first (``replay``), then its messages not marked settled are spooled
(or, with the ``file`` backend, written into ``CIOC_MAIL_DIR`` unless already there).

``flush`` sends the spooled files over one connection, oldest first, and deletes each only
after the server accepted it; a permanent refusal moves the file to ``failed/``, a
temporary one leaves it for the next run (a file in ``failed/`` moved back into the
outbox is tried again). A non-blocking lock on ``.lock`` means two tasks
flushing at once never send the same message twice: the second one skips its flush.
"""

import collections
import contextlib
import datetime
import logging
import os
import re
import time
from pathlib import Path

from cioctasks import files, journal

# email, hashlib and smtp (ssl) are imported where they are used: a run with an empty
# outbox, the 15-minute task's usual case, only asks ``Outbox.idle``.


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
    import hashlib

    return hashlib.sha256(message_id.strip().encode("utf-8")).hexdigest()[:24] + ".eml"


def message_id_of(data):
    """The Message-ID of a message's bytes (without one: a hash of them)."""
    import email.parser
    import email.policy
    import hashlib

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
    import email.parser
    import email.policy
    import email.utils

    parsed = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(data)
    sender = email.utils.parseaddr(parsed.get("From", ""))[1]
    fields = [str(v) for name in ("To", "Cc", "Bcc") for v in parsed.get_all(name, [])]
    recipients = [a for _, a in email.utils.getaddresses(fields) if a]
    if parsed.get("Bcc") is not None:
        del parsed["Bcc"]
        data = _crlf(parsed.as_bytes())
    return sender, recipients, data


class Outbox:
    """The spool folder (``CIOC_MAIL_OUTBOX``), its ``failed/`` folder and the journals of
    messages in flight (``sending/``)."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.failed_folder = self.folder / "failed"
        self.sending_folder = self.folder / "sending"

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

    def _sending_anything(self):
        try:
            with os.scandir(self.sending_folder) as found:
                return any(True for _ in found)
        except (FileNotFoundError, NotADirectoryError):
            return False

    def idle(self):
        """True when nothing is spooled and no journal is in ``sending/``: a flush would
        have nothing to do."""
        return not self._entries() and not self._sending_anything()

    def pending(self):
        """Return the paths of the spooled messages, oldest first."""
        return [path for _, path in self._entries()]

    def count(self):
        return len(self._entries())

    def spool(self, data, sender, recipients, message_id=None):
        """Keep a message for a later run; return its path. Spooling it again replaces it."""
        path = self.folder / file_name(message_id or message_id_of(data))
        try:
            files.atomic_write(path, pack(data, sender, recipients))
        except OSError as error:
            raise journal.store_error(error, self.folder) from None
        return path

    def keep(self, stored, mail_file=None):
        """Spool a message recovered from a journal (envelope in front), unless the outbox
        holds it already (spooled just before the kill); return its path or None.
        ``mail_file`` (where the ``file`` backend meant to write it) is not used here."""
        name = file_name(message_id_of(unpack(stored)[2]))
        if (self.folder / name).exists():
            return None
        try:
            files.atomic_write(self.folder / name, stored)
        except OSError as error:
            raise journal.store_error(error, self.folder) from None
        return self.folder / name

    def recover(self, deliver=None, replay=None):
        """Give the messages that runs killed while sending them left in their journals to
        ``deliver(stored, file name)`` (default: ``keep``); return how many. A journal whose
        write was cut short holds nothing sent; a live session's journal is left alone.

        A batch's records go first to ``replay(task, records)`` (its work is then recorded
        as done, whether or not the killed run got that far), then each message of it not
        settled is delivered. Without ``replay`` a batch is left for a mailer's recovery."""
        recovered = 0
        stale = time.time() - 24 * 3600
        try:
            found = sorted(self.sending_folder.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return 0
        for path in found:
            is_journal = path.suffix == ".journal"
            lock_path = path.with_suffix(".lock")
            if not is_journal:  # a lock without its journal: of a run killed at once
                with contextlib.suppress(OSError):
                    if (path.suffix == ".lock" and not path.with_suffix(".journal").exists()
                            and path.stat().st_mtime < stale):
                        lock = journal.lock_nowait(path)
                        if lock is not None:
                            lock.close()
                            path.unlink()
                continue
            lock = journal.lock_nowait(lock_path)
            if lock is None and lock_path.exists():
                continue  # its process is alive
            try:
                try:
                    stored = journal.read_journal(path)
                    batch = None if stored is not None else journal.read_batch(path)
                except FileNotFoundError:
                    continue  # another process recovered it just now
                if batch is not None:
                    if replay is None:
                        continue
                    recovered += self._recover_batch(batch, deliver or self.keep, replay)
                elif stored is not None:
                    (deliver or self.keep)(stored)
                    recovered += 1
                path.unlink()
            finally:
                if lock is not None:
                    lock.close()
                    with contextlib.suppress(OSError):
                        lock_path.unlink()
        return recovered

    @staticmethod
    def _recover_batch(batch, deliver, replay):
        task, records, messages, settled = batch
        replay(task, records)
        for index, (stored, name) in enumerate(messages):
            if index not in settled:
                deliver(stored, name)
        return len(messages) - len(settled)

    def fail(self, data, sender, recipients, message_id=None):
        """Keep a message refused for good in ``failed/`` (and not in the outbox); return
        its path."""
        name = file_name(message_id or message_id_of(data))
        path = self.failed_folder / name
        try:
            files.atomic_write(path, pack(data, sender, recipients))
        except OSError as error:
            raise journal.store_error(error, self.failed_folder) from None
        with contextlib.suppress(FileNotFoundError):
            (self.folder / name).unlink()
        return path

    def flush(self, mailer):
        """Send every spooled message through ``mailer`` (a ``mail.Mailer``); return a Report.

        Skip the flush (nothing sent) while another process holds the outbox lock.
        """
        if self.idle():
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
        from cioctasks import smtp

        recovered = self.recover(replay=mailer.replay)
        if recovered:
            mailer.note(logging.WARNING, "outbox: %d messages of a run that died while "
                        "sending them are sent again as they were stored", recovered)
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
                try:
                    outcome = self._settle(mailer, path, sender, recipients, data, delivery)
                except OSError as error:
                    raise journal.store_error(error, self.folder) from None
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
            mailer.note(logging.INFO, "outbox: mail %s sent to %s", message_id_of(data),
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
