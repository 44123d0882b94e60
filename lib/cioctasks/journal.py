"""The write-ahead journal of mail in flight (see ``outbox``): one file per mail session in
``<outbox>/sending/``, holding the message being handed over, fsynced before any byte of it
reaches the server, under an OS lock the kernel drops when the process dies.

A journal holds either one message (``Journal.store``) or a batch (``store_batch``): many
messages together with the task's records that say their work is done, written and fsynced
as one piece, so that a run killed at any point leaves both or neither. While a batch is
handed over, ``mark`` notes each message settled (accepted, spooled or failed) after it, so
that recovery hands over again only the one that was in flight.
"""

import contextlib
import os
from pathlib import Path

from cioctasks.errors import TaskError


class StoreError(TaskError):
    """A message cannot be written where it must be kept (a full disk, no permission)."""


def store_error(error, folder):
    """Given an OSError met writing mail into ``folder``, return a StoreError of one line
    naming the folder (a failed write names no file)."""
    return StoreError(f"cannot write mail into {folder}: {error.strerror or error}")


def lock_nowait(path, create=False):
    """Return an open file holding an exclusive lock on ``path``, or None if another
    process (or another session of this one) holds it or it does not exist."""
    import portalocker

    try:
        handle = open(path, "x" if create else "r+b")
    except (FileNotFoundError, FileExistsError):
        return None
    try:
        portalocker.lock(handle, portalocker.LOCK_EX | portalocker.LOCK_NB)
    except (portalocker.LockException, OSError):
        handle.close()
        return None
    return handle


#: The first line of a journal: the length and SHA-256 of what follows, so that a write cut
#: short is recognised (and dropped: nothing was recorded or sent after it).
JOURNAL = b"X-Cioctasks-Journal:"


def sync_folder(folder):
    if os.name == "nt":
        return  # a folder cannot be fsynced on Windows; NTFS journals its entries
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: The first line of a batch journal, as JOURNAL's; ``done N`` lines follow the batch.
BATCH = b"X-Cioctasks-Batch:"


def _whole(head, data, tag):
    """``data`` (with whatever follows it) if ``head`` says it was written whole, else None."""
    try:
        length, digest = head[len(tag):].split()
        length = int(length)
    except ValueError:
        return None
    if not head.startswith(tag) or len(data) < length:
        return None
    import hashlib  # only with a journal to read: an idle run never loads OpenSSL

    return data if hashlib.sha256(data[:length]).hexdigest().encode() == digest else None


def _framed(tag, data):
    import hashlib

    return b"%s %d %s\r\n%s" % (tag, len(data), hashlib.sha256(data).hexdigest().encode(), data)


def read_journal(path):
    """Given a journal file of one message, return the message it holds (envelope in front),
    or None if it is empty, its write was cut short, or it holds a batch."""
    head, _, data = path.read_bytes().partition(b"\r\n")
    data = _whole(head, data, JOURNAL)
    return data if data is not None and len(data) == int(head.split()[1]) else None


def read_batch(path):
    """Given a journal file, return (task, records, [(stored message, file name)], indexes
    of the messages settled) if it holds a batch written whole, else None."""
    import json

    head, _, data = path.read_bytes().partition(b"\r\n")
    data = _whole(head, data, BATCH)
    if data is None:
        return None
    length = int(head.split()[1])
    batch = json.loads(data[:length])
    settled = {int(line[5:]) for line in data[length:].split(b"\r\n")
               if line.startswith(b"done ") and line[5:].isdigit()}
    messages = [(entry["stored"].encode("latin-1"), entry["file"]) for entry in batch["messages"]]
    return batch["task"], batch["records"], messages, settled


def pack_batch(task, records, messages):
    """The bytes of a batch: ``records`` ({key: value} of ``task``) and ``messages``
    [(stored message, file name or None)]."""
    import json

    return json.dumps({"task": task, "records": records,
                       "messages": [{"stored": stored.decode("latin-1"), "file": name}
                                    for stored, name in messages]}).encode("ascii")


class Journal:
    """One session's message in flight: ``<outbox>/sending/<id>.journal``, rewritten in
    place for each message (one fsync each), under an OS lock on ``sending/<id>.lock`` that
    the kernel drops when the process dies, however it dies."""

    def __init__(self, outbox):
        self.outbox = outbox
        self.path = None
        self._fd = self._lock = None

    def _open(self):
        import uuid

        sending = self.outbox.sending_folder
        name = uuid.uuid4().hex
        try:
            sending.mkdir(parents=True, exist_ok=True)
            # Locked before the journal exists: a journal is never seen unlocked while its
            # process lives.
            self._lock = lock_nowait(sending / f"{name}.lock", create=True)
            if self._lock is None:
                raise OSError(f"cannot lock {sending / name}.lock")
            path = sending / f"{name}.journal"
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL
                               | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOINHERIT", 0),
                               0o600)
            self.path = path
            sync_folder(sending)
        except OSError as error:
            if self._fd is None and self._lock is not None:
                self._lock.close()
                with contextlib.suppress(OSError):
                    os.unlink(self._lock.name)
                self._lock = None
            raise store_error(error, self.outbox.folder) from None

    def store(self, data):
        """Keep ``data`` (a message with its envelope in front), fsynced, before it is sent.
        Raise StoreError naming the outbox if it cannot be written."""
        self._write(_framed(JOURNAL, data))

    def store_batch(self, data):
        """Keep a batch (``pack_batch``), fsynced, before its records are written and any of
        its messages is sent. Raise StoreError naming the outbox if it cannot be written."""
        self._write(_framed(BATCH, data))

    def mark(self, index):
        """Note that message ``index`` of the batch is settled. Not fsynced: a process that
        is killed keeps what it wrote; after a power cut a settled message may go again
        (the same bytes)."""
        try:
            os.lseek(self._fd, 0, os.SEEK_END)
            os.write(self._fd, b"\r\ndone %d" % index)
        except OSError as error:
            raise store_error(error, self.outbox.folder) from None

    def _write(self, blob):
        if self._fd is None:
            self._open()
        try:
            os.lseek(self._fd, 0, os.SEEK_SET)
            view = memoryview(blob)
            while view:
                view = view[os.write(self._fd, view):]
            os.ftruncate(self._fd, len(blob))
            getattr(os, "fdatasync", os.fsync)(self._fd)
        except OSError as error:
            with contextlib.suppress(OSError):
                self.clear()
            raise store_error(error, self.outbox.folder) from None

    def clear(self):
        """The message is settled (accepted, spooled, failed) or was never handed over."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)

    def close(self):
        """Release the journal. One still holding a message (a send cut short: it may have
        arrived) stays for ``Outbox.recover``, which sends it again as it is."""
        if self._fd is None:
            return
        try:
            empty = os.fstat(self._fd).st_size == 0
        except OSError:
            empty = False
        os.close(self._fd)
        if empty:
            with contextlib.suppress(OSError):
                self.path.unlink()
        lock_path = Path(self._lock.name)
        self._lock.close()
        with contextlib.suppress(OSError):
            lock_path.unlink()
        self._fd = self._lock = self.path = None
