"""The outbox: mail the SMTP server could not take yet, kept as ``.eml`` files until it can.

A spooled file is named after the message's Message-ID, so spooling the same message twice
keeps one copy. ``flush`` sends them over one connection, deletes each only after the
server accepted it, moves permanent refusals to ``failed/`` and leaves the rest for the
next run. A non-blocking lock on ``.lock`` makes sure two tasks flushing at once never send
the same message twice.
"""

import collections
import contextlib
import email.parser
import email.policy
import email.utils
import hashlib
import os
import smtplib
from pathlib import Path

from cioctasks import files

Report = collections.namedtuple("Report", "sent remaining failed")


def short_id(data):
    return hashlib.sha256(data).hexdigest()[:12]


def _headers(data):
    return email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(data)


def file_name(data):
    """A stable file name for a message: from its Message-ID, else its content."""
    message_id = _headers(data).get("Message-ID") or ""
    key = message_id.encode("utf-8") if message_id else data
    return hashlib.sha256(key).hexdigest()[:24] + ".eml"


def envelope(data):
    """Return (sender, recipients) from a stored message's From and To/Cc headers."""
    headers = _headers(data)
    sender = email.utils.parseaddr(str(headers.get("From", "")))[1]
    recipients = [a for _, a in email.utils.getaddresses(
        [str(v) for v in headers.get_all("To", []) + headers.get_all("Cc", [])]) if a]
    return sender, recipients


class Outbox:
    def __init__(self, folder):
        self.folder = Path(folder)

    def pending(self):
        try:
            return sorted(self.folder.glob("*.eml"), key=lambda p: p.stat().st_mtime)
        except OSError:
            return []

    def spool(self, data):
        """Keep a message for a later run; return its path."""
        path = self.folder / file_name(data)
        files.atomic_write(path, data)
        return path

    def fail(self, data):
        """Keep a message the server refused for good in ``failed/``; return its path."""
        path = self.folder / "failed" / file_name(data)
        files.atomic_write(path, data)
        with contextlib.suppress(OSError):
            (self.folder / file_name(data)).unlink()
        return path

    def flush(self, mailer):
        """Send every spooled message through ``mailer``'s SMTP settings; return a Report."""
        pending = self.pending()
        if not pending:
            return Report(0, 0, 0)
        import portalocker

        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lock", "a", encoding="utf-8") as handle:
            try:
                portalocker.lock(handle, portalocker.LOCK_EX | portalocker.LOCK_NB)
            except (portalocker.LockException, OSError):
                return Report(0, len(pending), 0)  # another task is flushing right now
            return self._flush_locked(mailer)

    def _flush_locked(self, mailer):
        pending = self.pending()  # again, under the lock: another flush may have sent some
        sent = failed = 0
        try:
            client = mailer.connect()
        except (OSError, smtplib.SMTPException) as error:
            mailer._note(30, "outbox: %d messages wait: %s", len(pending), mailer.describe(error))
            return Report(0, len(pending), 0)
        try:
            for path in pending:
                try:
                    data = path.read_bytes()
                except FileNotFoundError:
                    continue
                sender, recipients = envelope(data)
                try:
                    client.sendmail(sender, recipients, data)
                except smtplib.SMTPRecipientsRefused as error:
                    codes = [code for code, _ in error.recipients.values()]
                    if all(500 <= c < 600 for c in codes):
                        self._move_failed(path, mailer, error)
                        failed += 1
                        continue
                    break
                except smtplib.SMTPResponseException as error:
                    if 500 <= error.smtp_code < 600:
                        self._move_failed(path, mailer, error)
                        failed += 1
                        with contextlib.suppress(Exception):
                            client.rset()
                        continue
                    break
                except (OSError, smtplib.SMTPException):
                    break
                path.unlink()
                sent += 1
        finally:
            with contextlib.suppress(Exception):
                client.quit()
        return Report(sent, len(self.pending()), failed)

    def _move_failed(self, path, mailer, error):
        target = self.folder / "failed" / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        problem = f"outbox: {path.name} refused for good: {mailer.describe(error)}"
        mailer.problems.append(problem)
        mailer._note(40, problem)
