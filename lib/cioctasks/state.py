"""Run history and watermarks in ``<state>/state.sqlite`` (stdlib sqlite3).

Run history: one row per task run and database (start, end, status, exit code, summary,
and the host and pid of the process that ran it). A run whose process ended without
recording its end (killed by a time limit, a reboot) is ``killed``: ``last_runs`` shows it
so when its process is gone from this host, and the next run of the task, which holds the
task's lock and so knows that no other run of it is alive, records it so.
Watermarks: per-task key -> JSON value, for incremental work; each ``set`` commits at once,
so that a crash right after it keeps what was recorded.
"""

import datetime
import json
import os
import socket
import sqlite3
import sys
from pathlib import Path

from cioctasks.errors import ConfigError, TaskError, folder_problem

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    task TEXT NOT NULL,
    database TEXT NOT NULL DEFAULT '',
    host TEXT,
    started TEXT NOT NULL,
    ended TEXT,
    status TEXT NOT NULL DEFAULT 'running',
    exit_code INTEGER,
    summary TEXT,
    pid INTEGER
);
CREATE INDEX IF NOT EXISTS runs_task ON runs (task, database, started);
CREATE TABLE IF NOT EXISTS watermarks (
    task TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    updated TEXT NOT NULL,
    PRIMARY KEY (task, key)
);
"""


def _now():
    return datetime.datetime.now().isoformat(sep=" ", timespec="milliseconds")


def process_exists(pid):
    """Whether a process with this id runs on this host (this process counts)."""
    if pid == os.getpid():
        return True
    if sys.platform.startswith("win"):
        # os.kill(pid, 0) would send CTRL_C_EVENT on Windows: ask for the exit code instead.
        import ctypes
        from ctypes import wintypes

        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        kernel32.OpenProcess.restype = wintypes.HANDLE
        kernel32.OpenProcess.argtypes = (wintypes.DWORD, wintypes.BOOL, wintypes.DWORD)
        kernel32.GetExitCodeProcess.argtypes = (wintypes.HANDLE, ctypes.POINTER(wintypes.DWORD))
        kernel32.CloseHandle.argtypes = (wintypes.HANDLE,)
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return ctypes.get_last_error() == 5  # ERROR_ACCESS_DENIED: it exists
        try:
            code = wintypes.DWORD()
            alive = kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
            return bool(alive) and code.value == 259  # STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OSError:
        return False
    return True


def _gone(run):
    """Why a run recorded as running has no process any more, or None if it may have one."""
    if run["status"] != "running" or not run["pid"] or run["host"] != socket.gethostname():
        return None
    if process_exists(run["pid"]):
        return None
    return f"process {run['pid']} gone"


class State:
    """The state database; safe to share between threads of one run."""

    def __init__(self, folder):
        self.path = Path(folder) / "state.sqlite"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"cannot open run state {self.path}: "
                              f"{folder_problem(self.path.parent, error)}") from None
        try:
            self._db = sqlite3.connect(
                self.path, timeout=60, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(runs)")}
            if "pid" not in columns:  # a state file from before pids were recorded
                self._db.execute("ALTER TABLE runs ADD COLUMN pid INTEGER")
        except (OSError, sqlite3.Error) as error:
            raise ConfigError(f"cannot open run state {self.path}: {error}") from None
        import threading

        self._lock = threading.Lock()
        #: The runs this object started and has not finished: {run id: database}.
        self.open_runs = {}

    def close(self):
        self._db.close()

    def _execute(self, sql, params=()):
        with self._lock:
            try:
                return self._db.execute(sql, params)
            except sqlite3.OperationalError as error:  # a full disk, a damaged file
                raise TaskError(f"run state {self.path}: {error}") from None

    # run history
    def start_run(self, task, database=""):
        cursor = self._execute(
            "INSERT INTO runs (task, database, host, pid, started) VALUES (?, ?, ?, ?, ?)",
            (task, database or "", socket.gethostname(), os.getpid(), _now()),
        )
        self.open_runs[cursor.lastrowid] = database or ""
        return cursor.lastrowid

    def finish_run(self, run_id, status, exit_code, summary="", ended=True):
        """Record how a run ended; ``ended=False`` leaves its end unknown (a run found
        killed)."""
        self._execute(
            "UPDATE runs SET ended = ?, status = ?, exit_code = ?, summary = ? WHERE id = ?",
            (_now() if ended else None, status, exit_code, (summary or "")[:4000], run_id),
        )
        self.open_runs.pop(run_id, None)

    def kill_open_runs(self, summary):
        """Record every run this object started and has not finished as killed (exit 1)
        with ``summary``; return their databases."""
        killed = []
        for run_id, database in list(self.open_runs.items()):
            self.finish_run(run_id, "killed", 1, summary)
            killed.append(database)
        return killed

    def _runs(self, where, params=()):
        columns = ("id", "task", "database", "host", "pid", "started", "ended", "status",
                   "exit_code", "summary")
        rows = self._execute(f"SELECT {', '.join(columns)} FROM runs r WHERE {where}"
                             " ORDER BY task, database, id", params).fetchall()
        return [dict(zip(columns, row)) for row in rows]

    def last_runs(self):
        """Return the latest run of every (task, database) as dicts, sorted. A run still
        recorded as running whose process is gone from this host is shown ``killed``."""
        runs = self._runs("id = (SELECT MAX(id) FROM runs WHERE task = r.task"
                          " AND database = r.database)")
        for run in runs:
            gone = _gone(run)
            if gone:
                run["status"], run["exit_code"] = "killed", 1
                run["summary"] = f"killed ({gone})"
        return runs

    def record_killed(self, task, dry_run=False):
        """Record the runs of ``task`` still marked running as killed; return one line per
        run found. Call it holding the task's lock, before starting a run: no other run of
        the task is alive then, wherever it ran. A dry run records nothing."""
        found = []
        for run in self._runs("task = ? AND status = 'running'", (task,)):
            if run["id"] in self.open_runs:
                continue
            where = f" on {run['host']}" if run["host"] != socket.gethostname() else ""
            why = f"process {run['pid']}{where} gone" if run["pid"] else "its process is gone"
            database = f" [{run['database']}]" if run["database"] else ""
            found.append(f"found run {run['id']} of {task}{database} started "
                         f"{run['started'][:19]} killed ({why})")
            if not dry_run:
                self.finish_run(run["id"], "killed", 1, f"killed ({why})", ended=False)
        return found

    def last_success(self, task, database=""):
        """Return the start (datetime) of the last successful run, or None."""
        row = self._execute(
            "SELECT MAX(started) FROM runs WHERE task = ? AND database = ? AND status = 'ok'",
            (task, database or ""),
        ).fetchone()
        return datetime.datetime.fromisoformat(row[0]) if row and row[0] else None

    # watermarks
    def get(self, task, key, default=None):
        row = self._execute(
            "SELECT value FROM watermarks WHERE task = ? AND key = ?", (task, key)
        ).fetchone()
        return json.loads(row[0]) if row else default

    def set(self, task, key, value):
        self.set_many(task, {key: value})

    def set_many(self, task, values, delete=()):
        """Set several watermarks and delete the keys in ``delete``, in one transaction."""
        now = _now()
        with self._lock:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany("DELETE FROM watermarks WHERE task = ? AND key = ?",
                                     [(task, key) for key in delete])
                self._db.executemany(
                    "INSERT OR REPLACE INTO watermarks (task, key, value, updated)"
                    " VALUES (?, ?, ?, ?)",
                    [(task, key, json.dumps(value), now) for key, value in values.items()],
                )

    def delete(self, task, key):
        self._execute("DELETE FROM watermarks WHERE task = ? AND key = ?", (task, key))

    def items(self, task, prefix=""):
        """Return {key: value} of a task's watermarks whose key starts with ``prefix``."""
        rows = self._execute(
            "SELECT key, value FROM watermarks WHERE task = ? AND substr(key, 1, ?) = ?",
            (task, len(prefix), prefix),
        ).fetchall()
        return {key: json.loads(value) for key, value in rows}
