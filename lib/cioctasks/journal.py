"""The write-ahead journal of mail in flight (see ``outbox``): one file per mail session in
``<outbox>/sending/``, holding the message being handed over, fsynced before any byte of it
reaches the server, under an OS lock the kernel drops when the process dies.
"""

import contextlib
import hashlib
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


def _sync_folder(folder):
    if os.name == "nt":
        return  # a folder cannot be fsynced on Windows; NTFS journals its entries
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_journal(path):
    """Given a journal file, return the message it holds (envelope in front), or None if
    it is empty or its write was cut short."""
    head, _, data = path.read_bytes().partition(b"\r\n")
    try:
        length, digest = head[len(JOURNAL):].split()
        whole = head.startswith(JOURNAL) and len(data) == int(length)
    except ValueError:
        return None
    return data if whole and hashlib.sha256(data).hexdigest().encode() == digest else None


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
            _sync_folder(sending)
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
        if self._fd is None:
            self._open()
        blob = b"%s %d %s\r\n%s" % (JOURNAL, len(data),
                                     hashlib.sha256(data).hexdigest().encode(), data)
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
