"""Run history and watermarks in ``<state>/state.sqlite`` (stdlib sqlite3).

Run history: one row per task run and database (start, end, status, exit code, summary,
and the host and pid of the process that ran it). A run whose process ended without
recording its end (killed by a time limit, a reboot) is ``killed``: ``last_runs`` shows it
so when its process is gone from this host, and the next run of the task, which holds the
task's lock and so knows that no other run of it is alive, records it so.
History is kept ``CIOC_HISTORY_DAYS`` days (90 by default) and pruned as runs end, once
per process, so that a 15-minute task on fifty databases does not grow the file for ever;
the latest run of each task and database, and its latest successful run, are always kept
(status still shows a monthly task that has not run for 100 days).
Watermarks: per-task key -> JSON value, for incremental work; each ``set`` commits at once,
so that a crash right after it keeps what was recorded.
"""

import datetime
import json
import os
import sqlite3
import sys
from pathlib import Path

from cioctasks import host
from cioctasks.errors import ConfigError, TaskError, folder_problem

#: How long run history is kept by default, and the range CIOC_HISTORY_DAYS may take.
DEFAULT_HISTORY_DAYS = 90
HISTORY_DAYS_RANGE = (1, 3650)
#: The columns of a run, as the dicts of ``last_runs``, ``recent_runs`` and ``history`` have.
COLUMNS = ("id", "task", "database", "host", "pid", "started", "ended", "status", "exit_code",
           "summary")

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
CREATE INDEX IF NOT EXISTS runs_latest ON runs (task, database, id);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started);
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


def history_days(settings):
    """Given Settings, return how many days of run history to keep: ``CIOC_HISTORY_DAYS``
    (a whole number of days, 1 to 3650), else 90. Raise ConfigError naming it if bad."""
    from cioctasks import config

    return config.setting_days(settings, "CIOC_HISTORY_DAYS", DEFAULT_HISTORY_DAYS,
                               *HISTORY_DAYS_RANGE)


def _gone(run):
    """Why a run recorded as running has no process any more, or None if it may have one."""
    if run["status"] != "running" or not run["pid"] or run["host"] != host.name():
        return None
    if process_exists(run["pid"]):
        return None
    return f"process {run['pid']} gone"


def _as_killed(runs):
    """The runs, each one still recorded as running whose process is gone from this host
    shown ``killed`` (exit 1)."""
    for run in runs:
        gone = _gone(run)
        if gone:
            run["status"], run["exit_code"] = "killed", 1
            run["summary"] = f"killed ({gone})"
    return runs


class State:
    """The state database; safe to share between threads of one run. ``history_days``: how
    long finished runs are kept (``history_days(settings)``; default 90)."""

    def __init__(self, folder, history_days=None):
        self.history_days = history_days or DEFAULT_HISTORY_DAYS
        self._pruned = False
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

    @classmethod
    def open(cls, settings):
        """The state of ``settings`` (``CIOC_STATE_DIR``), keeping ``CIOC_HISTORY_DAYS`` of
        history. Raise ConfigError if a setting is bad or the file cannot be opened."""
        return cls(settings.state_dir, history_days=history_days(settings))

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
            (task, database or "", host.name(), os.getpid(), _now()),
        )
        self.open_runs[cursor.lastrowid] = database or ""
        return cursor.lastrowid

    def add_run(self, task, database, started, ended, status, exit_code, summary=""):
        """Record a finished run whole, with its times (datetimes): a run of another host
        imported, or a demo's earlier night. Return its id."""
        cursor = self._execute(
            "INSERT INTO runs (task, database, host, pid, started, ended, status, exit_code,"
            " summary) VALUES (?, ?, ?, NULL, ?, ?, ?, ?, ?)",
            (task, database or "", host.name(),
             started.isoformat(sep=" ", timespec="milliseconds"),
             ended.isoformat(sep=" ", timespec="milliseconds") if ended else None,
             status, exit_code, (summary or "")[:4000]))
        return cursor.lastrowid

    def finish_run(self, run_id, status, exit_code, summary="", ended=True):
        """Record how a run ended; ``ended=False`` leaves its end unknown (a run found
        killed)."""
        self._execute(
            "UPDATE runs SET ended = ?, status = ?, exit_code = ?, summary = ? WHERE id = ?",
            (_now() if ended else None, status, exit_code, (summary or "")[:4000], run_id),
        )
        self.open_runs.pop(run_id, None)
        if not self._pruned:
            self._pruned = True
            self.prune()

    def prune(self, now=None):
        """Delete the runs that started more than ``history_days`` before ``now``, except
        the latest run of each task and database and its latest successful one (status and
        Prometheus' last success need them). Return how many were deleted. Cheap: the
        index on ``started`` finds the old runs and ``runs_latest`` answers whether a newer
        one exists; a busy or damaged file only postpones it to the next run."""
        now = now or datetime.datetime.now()
        cutoff = (now - datetime.timedelta(days=self.history_days)).isoformat(sep=" ")
        try:
            with self._lock:
                cursor = self._db.execute(
                    "DELETE FROM runs WHERE started < ?"
                    " AND EXISTS (SELECT 1 FROM runs n WHERE n.task = runs.task"
                    "  AND n.database = runs.database AND n.id > runs.id)"
                    " AND (status != 'ok' OR EXISTS (SELECT 1 FROM runs n"
                    "  WHERE n.task = runs.task AND n.database = runs.database"
                    "  AND n.id > runs.id AND n.status = 'ok'))", (cutoff,))
                return cursor.rowcount
        except sqlite3.Error:
            return 0

    def kill_open_runs(self, summary):
        """Record every run this object started and has not finished as killed (exit 1)
        with ``summary``; return their databases."""
        killed = []
        for run_id, database in list(self.open_runs.items()):
            self.finish_run(run_id, "killed", 1, summary)
            killed.append(database)
        return killed

    def _runs(self, where, params=(), order="task, database, id"):
        rows = self._execute(f"SELECT {', '.join(COLUMNS)} FROM runs r WHERE {where}"
                             f" ORDER BY {order}", params).fetchall()
        return [dict(zip(COLUMNS, row)) for row in rows]

    def last_runs(self):
        """Return the latest run of every (task, database) as dicts, sorted. A run still
        recorded as running whose process is gone from this host is shown ``killed``."""
        # One pass over the index runs_latest, not a subquery per run.
        return _as_killed(self._runs("id IN (SELECT MAX(id) FROM runs GROUP BY task, database)"))

    def recent_runs(self, task, database="", count=30):
        """Return the last ``count`` runs of a task on a database, oldest first (a run whose
        process is gone shown ``killed``, as in ``last_runs``)."""
        runs = self._runs("task = ? AND database = ?", (task, database or ""), order="id DESC"
                          f" LIMIT {int(count)}")
        return _as_killed(runs[::-1])

    def history(self, task, databases=(), limit=None):
        """Return the runs of ``task`` (on ``databases`` only, when given), newest first;
        at most ``limit`` when given."""
        where, params = "task = ?", [task]
        if databases:
            where += f" AND database IN ({', '.join('?' * len(databases))})"
            params += list(databases)
        order = "id DESC" + (f" LIMIT {int(limit)}" if limit else "")
        return _as_killed(self._runs(where, params, order=order))

    def count_runs(self, task, databases=()):
        """How many runs of ``task`` (on ``databases`` only, when given) are kept."""
        where, params = "task = ?", [task]
        if databases:
            where += f" AND database IN ({', '.join('?' * len(databases))})"
            params += list(databases)
        return self._execute(f"SELECT COUNT(*) FROM runs WHERE {where}", params).fetchone()[0]

    def daily_durations(self, since):
        """Return {task: [(day, runs, failed, queued, mean seconds, longest seconds)]} of
        the finished runs that started at or after ``since`` (a datetime), one tuple per day
        with runs, oldest first: what the status page's duration charts draw. ``queued``
        counts the failed runs whose summary says mail was queued (``status.kind`` tells
        them apart more closely), ``failed`` the other failed or killed ones."""
        queued = "(status = 'failed' AND instr(summary, ' for the next run (') > 0)"
        rows = self._execute(
            "SELECT task, substr(started, 1, 10) AS day, COUNT(*),"
            f" SUM(status NOT IN ('ok', 'skipped') AND NOT {queued}), SUM({queued}),"
            " AVG(seconds), MAX(seconds) FROM"
            " (SELECT task, started, status, summary,"
            "  (julianday(ended) - julianday(started)) * 86400 AS seconds"
            "  FROM runs INDEXED BY runs_started WHERE started >= ? AND ended IS NOT NULL)"
            " GROUP BY task, day ORDER BY task, day",
            (since.isoformat(sep=" "),)).fetchall()
        result = {}
        for task, day, runs, failed, queued_runs, mean, longest in rows:
            result.setdefault(task, []).append((day, runs, failed, queued_runs, mean, longest))
        return result

    def record_killed(self, task, dry_run=False):
        """Record the runs of ``task`` still marked running as killed; return one line per
        run found. Call it holding the task's lock, before starting a run: no other run of
        the task is alive then, wherever it ran. A dry run records nothing."""
        found = []
        for run in self._runs("task = ? AND status = 'running'", (task,)):
            if run["id"] in self.open_runs:
                continue
            where = f" on {run['host']}" if run["host"] != host.name() else ""
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

    def delete_prefix(self, task, prefix):
        """Delete a task's watermarks whose key starts with ``prefix``, in one statement
        (without reading them); return how many there were."""
        return self._execute(
            "DELETE FROM watermarks WHERE task = ? AND substr(key, 1, ?) = ?",
            (task, len(prefix), prefix)).rowcount

    def get_many(self, task, keys):
        """Return {key: value} of those of a task's watermarks named in ``keys`` that exist,
        asked for 500 at a time (older SQLite allows 999 parameters a statement)."""
        keys, found = list(keys), {}
        for first in range(0, len(keys), 500):
            part = keys[first:first + 500]
            marks = ", ".join("?" for _ in part)
            rows = self._execute(
                f"SELECT key, value FROM watermarks WHERE task = ? AND key IN ({marks})",
                (task, *part)).fetchall()
            found.update((key, json.loads(value)) for key, value in rows)
        return found

    def items(self, task, prefix=""):
        """Return {key: value} of a task's watermarks whose key starts with ``prefix``."""
        rows = self._execute(
            "SELECT key, value FROM watermarks WHERE task = ? AND substr(key, 1, ?) = ?",
            (task, len(prefix), prefix),
        ).fetchall()
        return {key: json.loads(value) for key, value in rows}
