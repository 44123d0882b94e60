"""Run history and watermarks in ``<state>/state.sqlite`` (stdlib sqlite3).

Run history: one row per task run and database (start, end, status, exit code, summary).
Watermarks: per-task key -> JSON value, for incremental work; each ``set`` commits at once,
so that a crash right after it keeps what was recorded.
"""

import datetime
import json
import socket
import sqlite3
from pathlib import Path

from cioctasks.errors import ConfigError

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
    summary TEXT
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


class State:
    """The state database; safe to share between threads of one run."""

    def __init__(self, folder):
        self.path = Path(folder) / "state.sqlite"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, timeout=60, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as error:
            raise ConfigError(f"cannot open run state {self.path}: {error}") from None
        import threading

        self._lock = threading.Lock()

    def close(self):
        self._db.close()

    def _execute(self, sql, params=()):
        with self._lock:
            return self._db.execute(sql, params)

    # run history
    def start_run(self, task, database=""):
        cursor = self._execute(
            "INSERT INTO runs (task, database, host, started) VALUES (?, ?, ?, ?)",
            (task, database or "", socket.gethostname(), _now()),
        )
        return cursor.lastrowid

    def finish_run(self, run_id, status, exit_code, summary=""):
        self._execute(
            "UPDATE runs SET ended = ?, status = ?, exit_code = ?, summary = ? WHERE id = ?",
            (_now(), status, exit_code, (summary or "")[:4000], run_id),
        )

    def last_runs(self):
        """Return the latest run of every (task, database) as dicts, sorted."""
        rows = self._execute(
            """SELECT task, database, host, started, ended, status, exit_code, summary
               FROM runs r WHERE id = (SELECT MAX(id) FROM runs
                                       WHERE task = r.task AND database = r.database)
               ORDER BY task, database"""
        ).fetchall()
        columns = ("task", "database", "host", "started", "ended", "status", "exit_code",
                   "summary")
        return [dict(zip(columns, row)) for row in rows]

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
