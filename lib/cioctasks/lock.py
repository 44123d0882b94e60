"""One run of a task at a time, and none for ever.

The lock is an OS-level exclusive lock on ``<state>/locks/<task>.lock``: the kernel releases
it when the process ends, however it ends, so a lock is never stale. The holder writes its
pid, host and start time into the file so that a second run can say who holds it. The
lock is taken with the system's own call (``flock`` on POSIX, ``msvcrt.locking`` of the
file's first byte on Windows, as portalocker did), which costs no import at start-up.
``Watchdog`` keeps a run's wall clock limit, so that a run stuck where nothing can
interrupt it (a driver waiting on a server that never answers) gives the lock up.
"""

import os
import threading
import time
from pathlib import Path

from cioctasks import host
from cioctasks.errors import FAILED, ConfigError, LockedError, TaskError, folder_problem


def _lock(handle):
    """Take an exclusive lock on an open file without waiting; raise OSError if another
    open file (of this process or another) holds it."""
    if os.name == "nt":
        import msvcrt

        os.lseek(handle.fileno(), 0, os.SEEK_SET)
        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
    else:
        import fcntl

        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def _unlock(handle):
    if os.name == "nt":
        import msvcrt

        os.lseek(handle.fileno(), 0, os.SEEK_SET)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
    else:
        import fcntl

        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class TaskLock:
    """An exclusive, non-blocking lock for one task name."""

    def __init__(self, folder, task):
        self.path = Path(folder) / f"{task}.lock"
        self.task = task
        self._handle = None

    def acquire(self):
        """Take the lock or raise LockedError naming the holder.

        Raise ConfigError (exit 2) when the lock folder cannot be used, and TaskError (exit
        1) naming the file when the holder cannot be written into it (a full disk).
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"cannot open lock file {self.path}: "
                              f"{folder_problem(self.path.parent, error)}") from None
        try:
            handle = open(self.path, "a+", encoding="utf-8")
        except OSError as error:
            raise ConfigError(f"cannot open lock file {self.path}: {error.strerror}") from None
        try:
            _lock(handle)
        except OSError:
            holder = self.holder()
            handle.close()
            raise LockedError(f"{self.task} is already running ({holder}); skipped") from None
        import datetime
        import json

        holder = {
            "pid": os.getpid(),
            "host": host.name(),
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
        }
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps(holder))
            handle.flush()
        except OSError as error:
            self._handle = handle
            self.release()
            raise TaskError(f"cannot write the lock file {self.path}: "
                            f"{error.strerror or error}") from None
        self._handle = handle
        return self

    def holder(self):
        """Describe the process that holds the lock, as far as the file tells."""
        import json

        try:
            with open(self.path, encoding="utf-8") as handle:
                info = json.loads(handle.read() or "{}")
            return f"pid {info['pid']} on {info['host']} since {info['started']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "held by another process"

    def is_held(self):
        """True when another open file holds the lock (for a child process of a run with
        -j: its parent must hold it). When free it is taken for an instant and given back,
        and nothing is written into the file."""
        try:
            handle = open(self.path, "a+", encoding="utf-8")
        except OSError:
            return False  # no lock file: nobody holds it
        try:
            _lock(handle)
        except OSError:
            handle.close()
            return True
        try:
            _unlock(handle)
        finally:
            handle.close()
        return False

    def release(self):
        if self._handle is not None:
            handle, self._handle = self._handle, None
            try:
                _unlock(handle)
            finally:
                try:
                    handle.close()
                except OSError:  # what could not be written (a full disk) is given up
                    pass

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


class Watchdog:
    """A run's wall clock limit, kept by a thread: it works on every platform (Windows has
    no alarm signal) and whatever the run is stuck in, a driver call included. At the limit
    ``on_expiry`` reports the run, then the process ends with exit 1, after at most GRACE
    seconds even if reporting hangs. A run that ends first calls ``stop``; one that ends
    while the limit is being enforced waits in ``stop`` for the process to end."""

    GRACE = 50
    #: A limit given as a function (the schedule's, which takes a module and a file to
    #: read) is asked for only when the run lasts this many seconds: a run that ends
    #: sooner, as a 15-minute task with nothing to do, never pays for it.
    DEFER = 1.0

    def __init__(self, minutes):
        self.minutes = minutes  # a number, or a function that returns it
        self.state = None  # the run state, once open: the runs to record as killed
        self.children = None  # the child processes of a run with -j: killed at the limit
        self._stopped = threading.Event()
        self._claim = threading.Lock()  # taken by whichever comes first: the end or the limit

    def start(self, on_expiry):
        self._on_expiry = on_expiry
        threading.Thread(target=self._watch, name="time limit", daemon=True).start()

    def stop(self):
        if self._stopped.is_set():
            return
        if not self._claim.acquire(blocking=False):
            threading.Event().wait()  # the limit is being enforced: the process ends there
        self._stopped.set()

    def _watch(self):
        started = time.monotonic()
        if callable(self.minutes):
            if self._stopped.wait(self.DEFER):
                return
            try:
                self.minutes = self.minutes()
            except Exception:  # a limit that cannot be learnt must not leave none
                self.minutes = 60
        left = self.minutes * 60 - (time.monotonic() - started)
        if self._stopped.wait(max(left, 0)) or not self._claim.acquire(blocking=False):
            return
        reporter = threading.Thread(target=self._on_expiry, name="time limit report",
                                    daemon=True)
        reporter.start()
        reporter.join(self.GRACE)
        os._exit(FAILED)
