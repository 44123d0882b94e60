"""One run of a task at a time.

The lock is an OS-level exclusive lock on ``<state>/locks/<task>.lock``: the kernel releases
it when the process ends, however it ends, so a lock is never stale. The holder writes its
pid, host and start time into the file so that a second run can say who holds it.
"""

import datetime
import json
import os
import socket
from pathlib import Path

from cioctasks.errors import ConfigError, LockedError


class TaskLock:
    """An exclusive, non-blocking lock for one task name."""

    def __init__(self, folder, task):
        self.path = Path(folder) / f"{task}.lock"
        self.task = task
        self._handle = None

    def acquire(self):
        """Take the lock or raise LockedError naming the holder."""
        import portalocker

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a+", encoding="utf-8")
        except OSError as error:
            raise ConfigError(f"cannot open lock file {self.path}: {error.strerror}") from None
        try:
            portalocker.lock(handle, portalocker.LOCK_EX | portalocker.LOCK_NB)
        except (portalocker.LockException, OSError):
            holder = self.holder()
            handle.close()
            raise LockedError(f"{self.task} is already running ({holder}); skipped") from None
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
        }
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(holder))
        handle.flush()
        self._handle = handle
        return self

    def holder(self):
        """Describe the process that holds the lock, as far as the file tells."""
        try:
            with open(self.path, encoding="utf-8") as handle:
                info = json.loads(handle.read() or "{}")
            return f"pid {info['pid']} on {info['host']} since {info['started']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "held by another process"

    def release(self):
        if self._handle is not None:
            import portalocker

            try:
                portalocker.unlock(self._handle)
            finally:
                self._handle.close()
                self._handle = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
