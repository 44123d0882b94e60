"""Mail: a Mailer that never loses a message nor sends one twice.

``Message`` (module ``message``, imported here) builds a text mail with safe headers; a
CR, LF or NUL in any header value, name or address is refused with ``HeaderError``.

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
``Session.send_batch(items, state, task)`` does the same for many messages at once: the
messages and their records (data, not a function, so that a later run can write them) are
stored as one journal entry, then recorded in one transaction, then handed over; a run
killed at any point leaves the next one to record the batch and send what was not settled.

The SMTP protocol itself (connect, TLS, AUTH, one transaction) lives in ``smtp``; a
private CA is trusted through the standard ``SSL_CERT_FILE`` variable.
"""

import contextlib
import contextvars
import datetime
import email.headerregistry
import email.message
import email.policy
import hashlib
import itertools
import logging
import os
import smtplib
import sqlite3
import threading

from cioctasks import files, journal, outbox, smtp, udl
from cioctasks.addresses import HeaderError  # noqa: F401  (part of this module's interface)
from cioctasks.errors import TaskError
from cioctasks.journal import StoreError  # noqa: F401  (part of this module's interface)
from cioctasks.message import Message, address  # noqa: F401  (part of this module's interface)

#: Messages delivered by the ``memory`` backend, for tests.
MEMORY_OUTBOX = []

_file_counter = itertools.count(1)


class MailError(TaskError):
    """The mail server or the mail settings cannot be used."""


class Refused(MailError):
    """The server refused this one message for good (a mailbox that does not exist, say)."""


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
        self._recovering = threading.Lock()  # no session starts before recovery is done

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
        with self._recovering:
            if not self._recovered and not self.dry_run:
                self._recovered = True
                try:
                    self.recover()
                except StoreError as error:  # it stays in its journal: nothing is lost
                    self.note(logging.WARNING, "%s; mail of a killed run waits", error)
        session = Session(self)
        try:
            yield session
            session.finish()
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
            with self._recovering:
                if not self._recovered:
                    self._recovered = True
                    self.recover()
            return outbox.Report(0, self.outbox.count(), 0)
        return self.outbox.flush(self)

    def recover(self):
        """Deliver what runs killed while sending left in their journals: into the outbox
        (``smtp``, for the next flush) or into ``CIOC_MAIL_DIR`` (``file``). Raise
        StoreError if that cannot be written."""
        backend = self.settings.mail_backend
        if backend not in ("smtp", "file"):
            return
        recovered = self.outbox.recover(self._write_stored if backend == "file" else None,
                                        self.replay)
        if recovered:
            self.note(logging.WARNING, "%d messages of a run killed while sending them are "
                      "delivered as they were stored", recovered)

    def replay(self, task, records):
        """Record the work of a batch that a killed run left in its journal (see
        ``journal``), in the run state. Raise StoreError if the state cannot be written."""
        from cioctasks import state

        try:
            keeper = state.State(self.settings.state_dir)
            try:
                keeper.set_many(task, records)
            finally:
                keeper.close()
        except (TaskError, OSError, sqlite3.Error) as error:
            raise StoreError(f"cannot record mail of a killed run in "
                             f"{self.settings.state_dir}: {error}") from None

    def write_file(self, message):
        """Write a message into ``CIOC_MAIL_DIR`` (the ``file`` backend); return its path.
        Raise StoreError naming the folder if it cannot be written."""
        return self._write(message.message_id, message.as_bytes())

    def file_name(self, message_id):
        """A new name in ``CIOC_MAIL_DIR`` for a message: when, and a hash of its Message-ID."""
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        short_id = hashlib.sha256(message_id.encode("utf-8")).hexdigest()[:10]
        return f"{stamp}-{next(_file_counter)}-{short_id}.eml"

    def _write(self, message_id, data, name=None):
        path = self.settings.mail_dir / (name or self.file_name(message_id))
        try:
            files.atomic_write(path, data)
        except OSError as error:
            raise journal.store_error(error, self.settings.mail_dir) from None
        return path

    def _write_stored(self, stored, name=None):
        """Write a message recovered from a journal into ``CIOC_MAIL_DIR``, unless it is
        there already (the run was killed after writing it): as ``name`` when the journal
        named it, else found by the hash of its Message-ID."""
        data = outbox.unpack(stored)[2]
        message_id = outbox.message_id_of(data)
        if name is not None:
            if not (self.settings.mail_dir / name).exists():
                self._write(message_id, data, name)
            return
        short_id = hashlib.sha256(message_id.encode("utf-8")).hexdigest()[:10]
        if not any(self.settings.mail_dir.glob(f"*-{short_id}.eml")):
            self._write(message_id, data)


#: A new file's flags: a plain file the web server or a pickup service may read, as
#: ``open`` makes one (mode 0666 less the umask).
_NEW_FILE = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
             | getattr(os, "O_NOINHERIT", 0))


#: Files of a batch written at once (``file`` backend): a disk commits fsyncs that arrive
#: together in one flush, so four writers finish a batch in about half the time of one.
WRITERS = 4


def _write_files(folder, named):
    """Write every (name, data) of ``named`` with ``_write_whole``, WRITERS at a time, in
    threads, writer k taking every WRITERS-th file from the k-th; return their paths in
    order. A writer stops at its first OSError, which is raised once every writer has
    stopped: what the others wrote stays written, and the batch, still in the journal, is
    written whole by the next run."""
    paths, errors = [None] * len(named), []

    def write(first):
        try:
            for index in range(first, len(named), WRITERS):
                paths[index] = _write_whole(folder, *named[index])
        except OSError as error:
            errors.append(error)

    helpers = [threading.Thread(target=write, args=(first,), name="mail-writer", daemon=True)
               for first in range(1, min(WRITERS, len(named)))]
    for helper in helpers:
        helper.start()
    write(0)
    for helper in helpers:
        helper.join()
    if errors:
        raise errors[0]
    return paths


def _write_whole(folder, name, data):
    """Write ``data`` as ``folder/name`` (strings): into a temporary file beside it named as
    ``files.TEMPORARY`` says, fsynced, then renamed, so the file is never seen half
    written. The folder must exist and is not fsynced: the caller does that once for many
    files. Plain ``os`` calls: this runs once per message, in a thread beside the builder."""
    target = os.path.join(folder, name)
    temporary = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temporary, _NEW_FILE, 0o666)
    except FileExistsError:  # left by a killed run that had this pid
        fd, temporary = files.create_temporary(target)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return target


class Session:
    """One batch of messages over at most one SMTP connection (see ``Mailer.session``)."""

    def __init__(self, mailer):
        self.mailer = mailer
        self.client = None
        self.used = False  # the connection carried a transaction: it may have gone idle
        self.journal = journal.Journal(mailer.outbox)
        self._writer = None  # the thread writing the last batch's files (``file``)

    def finish(self):
        """Wait until every message handed to the session is settled; raise StoreError if
        the files of the last batch could not be written (they wait in the journal)."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.join()
            if writer.error is not None:
                raise writer.error

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
        self.finish()
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
            try:
                status = self._send_smtp(message)
            except Refused:
                self.journal.clear()  # kept in outbox/failed
                raise
        if stored:
            self.journal.clear()  # settled: sent, spooled or failed
        if status == "sent":
            mailer.sent += 1
        return status

    def send_batch(self, items, state, task):
        """Send many messages whose work is recorded together; return [(message, status)],
        a status being ``sent``, ``spooled``, ``dry-run`` or the ``Refused`` error of a
        message the server refused for good (the others still go).

        ``items``: [(message, records)], ``records`` being {key: value} of ``task`` that say
        the message's work is done. The messages and all the records are stored, fsynced,
        in one journal entry, then the records are written into ``state`` (a
        ``state.State``) in one transaction, then the messages are handed over (``file``:
        each written and fsynced, their folder fsynced once). The cost of durability is
        paid once per batch instead of once per message; a run killed at any point leaves
        the batch in its journal, and the next run records it and sends only what was not
        settled (``file``: what is not in ``CIOC_MAIL_DIR``). Raise StoreError if the batch
        cannot be stored or recorded: then nothing of it is sent.

        ``file``: the files are written by a thread while the caller builds the next batch
        (the fsyncs wait for the disk, not for the processor); the next batch, ``finish``
        and the end of the session wait for it, and raise StoreError if it failed.
        """
        self.finish()
        mailer = self.mailer
        if mailer.dry_run:
            return [(message, self.send(message)) for message, _ in items]
        records = {}
        for _, record in items:
            records.update(record)
        backend = mailer.settings.mail_backend
        names = [mailer.file_name(message.message_id) if backend == "file" else None
                 for message, _ in items]
        if backend != "memory":
            self.journal.store_batch(journal.pack_batch(task, records, [
                (outbox.pack(message.as_bytes(), message.sender.addr_spec, message.recipients),
                 name) for (message, _), name in zip(items, names)]))
        try:
            state.set_many(task, records)
        except BaseException as error:
            self.journal.clear()
            if isinstance(error, sqlite3.Error):  # a full disk, a damaged file
                raise StoreError(f"cannot record mail in {state.path}: {error}") from None
            raise
        if backend == "memory":
            MEMORY_OUTBOX.extend(message for message, _ in items)
            mailer.sent += len(items)
            return [(message, "sent") for message, _ in items]
        if backend == "file":
            self._writer = _Writer(self._write_batch, items, names)
            self._writer.start()
            return [(message, "sent") for message, _ in items]
        results = []
        for index, (message, _) in enumerate(items):
            try:
                status = self._send_smtp(message)
            except Refused as error:
                status = error
            self.journal.mark(index)
            mailer.sent += status == "sent"
            results.append((message, status))
        self.journal.clear()
        return results

    def _write_batch(self, items, names):
        mailer = self.mailer
        # One line per message only with -v: tens of thousands of them would rotate the
        # task's log away in one run.
        each = mailer.log is not None and mailer.log.isEnabledFor(logging.DEBUG)
        folder = str(mailer.settings.mail_dir)
        try:
            os.makedirs(folder, exist_ok=True)
            paths = _write_files(folder, [(name, message.as_bytes())
                                          for (message, _), name in zip(items, names)])
            if each:
                for (message, _), path in zip(items, paths):
                    mailer.note(logging.DEBUG, "mail %s to %s written to %s",
                                message.message_id, ", ".join(message.recipients), path)
            journal.sync_folder(folder)
        except OSError as error:
            raise journal.store_error(error, mailer.settings.mail_dir) from None
        mailer.sent += len(items)
        mailer.note(logging.INFO, "%d messages written to %s", len(items),
                    mailer.settings.mail_dir)
        self.journal.clear()

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
            if self._writer is not None:  # left by an error: what it did not write waits
                self._writer.join()
                self._writer = None
            if self.client is not None:
                with contextlib.suppress(OSError):
                    self.client.quit()
                self._drop()
        finally:
            self.journal.close()


class _Writer(threading.Thread):
    """Runs ``work(*args)`` in a thread with the caller's context (the log's database name);
    keeps the error it raised in ``error``."""

    def __init__(self, work, *args):
        super().__init__(name="mail-writer", daemon=True)
        self._context = contextvars.copy_context()
        self._work, self._args = work, args
        self.error = None

    def run(self):
        try:
            self._context.run(self._work, *self._args)
        except BaseException as error:  # raised again by Session.finish in the caller
            self.error = error
