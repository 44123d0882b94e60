"""Logging: a rotating UTF-8 log per task, the console only when there is one, secrets masked.

Every line names the task and the database it concerns (``contextvars``, so parallel
databases in threads each name their own). The log file is
``<CIOC_LOG_ROOT>/cioctasks/<task>.log``, 2 MB × 5 backups.
"""

import contextvars
import logging
import logging.handlers
from pathlib import Path

from cioctasks import udl
from cioctasks.errors import ConfigError

MAX_BYTES = 2 * 1024 * 1024
BACKUPS = 5
FORMAT = "%(asctime)s %(levelname)-7s %(task)s[%(database)s] %(message)s"

current_database = contextvars.ContextVar("current_database", default="-")


class MaskingFormatter(logging.Formatter):
    """Format a record, then mask passwords and known secrets in the whole text."""

    def __init__(self, fmt, secrets=(), tracebacks=True):
        super().__init__(fmt)
        self.secrets = tuple(secrets)
        self.tracebacks = tracebacks

    def format(self, record):
        if not self.tracebacks and (record.exc_info or record.exc_text):
            record = logging.makeLogRecord(record.__dict__)
            record.exc_info = record.exc_text = None
        return udl.mask(super().format(record), self.secrets)


class ContextFilter(logging.Filter):
    def __init__(self, task):
        super().__init__()
        self.task = task

    def filter(self, record):
        record.task = self.task
        record.database = current_database.get()
        record.where = "" if record.database == "-" else f"[{record.database}]"
        return True


class RotatingFile(logging.handlers.RotatingFileHandler):
    """Rotation that never costs a line: when a rename fails (on Windows a viewer holding
    the log open is enough), the lines go on into the current file and rotation waits for
    the next run."""

    def doRollover(self):
        try:
            super().doRollover()
        except OSError:
            self.maxBytes = 0  # no more attempts in this run
            if self.stream is None:
                self.stream = self._open()


def log_path(log_root, task):
    return Path(log_root) / "cioctasks" / f"{task}.log"


def setup(task, log_root, secrets=(), console_stream=None, verbosity=0, quiet=False):
    """Configure and return the task's logger.

    The file gets INFO (DEBUG with ``-v``); the console, when given, gets warnings and
    errors, info too with ``-v``, and nothing but errors with ``-q``.
    Raise ConfigError if the log folder cannot be written.
    """
    logger = logging.getLogger("cioctasks")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    # A handler that fails must not print a traceback to stderr: without a console stderr
    # is a LogStream, which would log the failure again, and again.
    logging.raiseExceptions = False
    context = ContextFilter(task)
    path = log_path(log_root, task)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        file_handler = RotatingFile(
            path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8", delay=False
        )
    except OSError as error:
        raise ConfigError(
            f"CIOC_LOG_ROOT: cannot write the log {path}: {error.strerror}"
        ) from None
    file_handler.setLevel(logging.DEBUG if verbosity else logging.INFO)
    file_handler.setFormatter(MaskingFormatter(FORMAT, secrets))
    file_handler.addFilter(context)
    logger.addHandler(file_handler)
    if console_stream is not None:
        console = logging.StreamHandler(console_stream)
        if quiet:
            console.setLevel(logging.ERROR)
        elif verbosity >= 2:
            console.setLevel(logging.DEBUG)
        elif verbosity == 1:
            console.setLevel(logging.INFO)
        else:
            console.setLevel(logging.WARNING)
        console.setFormatter(
            MaskingFormatter("%(task)s%(where)s: %(message)s", secrets, tracebacks=verbosity > 0)
        )
        console.addFilter(context)
        logger.addHandler(console)
    return logger


class LogStream:
    """A text stream that writes whole lines to a logger: what ``print`` and stray output
    become when there is no console (pythonw.exe)."""

    def __init__(self, logger, level):
        self.logger = logger
        self.level = level
        self._buffer = ""
        self._writing = False
        self.encoding = "utf-8"

    def write(self, text):
        if self._writing:  # logging itself wrote here: do not log that again
            return len(text)
        self._buffer += text
        self._writing = True
        try:
            while "\n" in self._buffer:
                line, self._buffer = self._buffer.split("\n", 1)
                if line.strip():
                    self.logger.log(self.level, line.rstrip())
        finally:
            self._writing = False
        return len(text)

    def flush(self):
        if self._buffer.strip():
            self.logger.log(self.level, self._buffer.rstrip())
        self._buffer = ""

    def isatty(self):
        return False
