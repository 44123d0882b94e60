"""Exit codes and the exceptions that carry them.

An expected failure is a ``TaskError`` whose message is the one line a user reads and whose
``exit_code`` is one of the codes below; anything else is an internal error (70) and keeps
its traceback in the log.
"""

OK = 0
FAILED = 1
USAGE = 2
INTERNAL = 70
LOCKED = 75


class TaskError(Exception):
    """A failure we expected and can explain in one line."""

    exit_code = FAILED

    def __init__(self, message, exit_code=None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(TaskError):
    """A bad or missing setting, flag or configuration file: exit 2."""

    exit_code = USAGE


class LockedError(TaskError):
    """Another run of the task holds its lock: exit 75, not an error mail."""

    exit_code = LOCKED


class Skipped(TaskError):
    """There is nothing this task can do here (a feature this database does not have): the
    run of that database is recorded as skipped, exit 0, and nobody is mailed."""

    exit_code = OK


def folder_problem(folder, error):
    """Given a folder that could not be made or used and the OSError that said so, return
    the reason in a few words: which part of its path is a file (the system's own words,
    "[Errno 17] File exists", name neither), else the system's reason."""
    from pathlib import Path

    if isinstance(error, (FileExistsError, NotADirectoryError)):
        for part in (Path(folder), *Path(folder).parents):
            try:
                if part.exists() and not part.is_dir():
                    return f"{part} is a file, not a folder"
            except OSError:
                break
    return error.strerror or str(error)
