"""Logging: a rotating UTF-8 log per task, the console only when there is one, secrets masked.

Every line names the task and the database it concerns (``contextvars``, so parallel
databases in threads each name their own). The log file is
``<CIOC_LOG_ROOT>/cioctasks/<task>.log``, 2 MB × 5 backups.

A database run in a child process (``-j`` with processes) writes no file: its records go
to the parent over a ``Channel`` and the parent logs them (``replay``), so one process
writes and rotates the log, and every line still names its database.
"""

import contextvars
import logging
import os
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


class RotatingFile(logging.FileHandler):
    """A log of at most MAX_BYTES with BACKUPS older ones (``.1`` the newest), as
    ``logging.handlers.RotatingFileHandler`` keeps it, without that module's imports
    (sockets, pickle, queues: start-up time). Rotation never costs a line: when a rename
    fails (on Windows a viewer holding the log open is enough), the lines go on into the
    current file and rotation waits for the next run."""

    def __init__(self, path, max_bytes, backups):
        super().__init__(path, mode="a", encoding="utf-8")
        self.max_bytes = max_bytes
        self.backups = backups

    def emit(self, record):
        if self.max_bytes:
            try:
                if self.stream is None:
                    self.stream = self._open()
                self.stream.seek(0, os.SEEK_END)
                if self.stream.tell() + len(self.format(record)) + 1 >= self.max_bytes:
                    self.rotate()
            except Exception:
                self.handleError(record)
        super().emit(record)

    def rotate(self):
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        names = [self.baseFilename] + [f"{self.baseFilename}.{n}" for n in
                                       range(1, self.backups + 1)]
        try:
            for older, newer in reversed(list(zip(names, names[1:]))):
                if os.path.exists(older):
                    if os.path.lexists(newer):
                        os.remove(newer)
                    os.rename(older, newer)
        except OSError:
            self.max_bytes = 0  # no more attempts in this run
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
        file_handler = RotatingFile(path, MAX_BYTES, BACKUPS)
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


# -- a database run in a child process (-j with processes) -----------------------------

class Channel:
    """How a child process reports to the run that started it: one JSON object per line on
    a pipe (its standard output). When the pipe is gone, so is the parent: the child ends
    at once, since nobody would learn its result."""

    def __init__(self, stream):
        import threading

        self.stream = stream
        self._lock = threading.Lock()

    def send(self, **message):
        import json

        data = (json.dumps(message) + "\n").encode("utf-8")
        with self._lock:
            try:
                self.stream.write(data)
                self.stream.flush()
            except (OSError, ValueError):
                os._exit(1)


class ForwardHandler(logging.Handler):
    """Sends each record, masked, over a Channel; the parent decides what its log and
    console show (``replay``)."""

    def __init__(self, channel, secrets=()):
        super().__init__(logging.DEBUG)
        self.channel = channel
        self.secrets = tuple(secrets)
        self.formatter = logging.Formatter()

    def emit(self, record):
        trace = record.exc_text
        if record.exc_info:
            trace = self.formatter.formatException(record.exc_info)
        self.channel.send(log=[record.levelno, udl.mask(record.getMessage(), self.secrets),
                               trace and udl.mask(trace, self.secrets), record.created])


class ChannelStream:
    """What ``print`` and stray output of a child process become: text for the parent's
    own stdout (``out``) or stderr (``err``)."""

    encoding = "utf-8"

    def __init__(self, channel, kind):
        self.channel = channel
        self.kind = kind

    def write(self, text):
        if text:
            self.channel.send(**{self.kind: text})
        return len(text)

    def flush(self):
        pass

    def isatty(self):
        return False


def setup_child(channel, secrets=()):
    """Configure and return the logger of a child process: every record to the parent."""
    logger = logging.getLogger("cioctasks")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logging.raiseExceptions = False
    logger.addHandler(ForwardHandler(channel, secrets))
    return logger


def replay(logger, item):
    """Log, in the parent, a record a child sent (``ForwardHandler``), with the child's
    time; the database it names is the parent thread's ``current_database``."""
    level, message, trace, created = item
    record = logger.makeRecord(logger.name, level, "(child process)", 0, message, None, None)
    record.created = created
    record.msecs = (created - int(created)) * 1000
    record.exc_text = trace
    logger.handle(record)
