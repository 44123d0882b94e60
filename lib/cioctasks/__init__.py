"""cioctasks: the shared library behind the CIOC Online Resources scheduled tasks.

Scripts need one import: ``import cioctasks`` then ``cioctasks.run(...)``. Heavy modules
(pyodbc, jinja2, requests) are imported where they are used, so ``--help`` stays fast.
"""

from cioctasks.errors import (  # noqa: F401 (re-exported)
    FAILED,
    INTERNAL,
    LOCKED,
    OK,
    USAGE,
    ConfigError,
    LockedError,
    Skipped,
    TaskError,
)

__all__ = ["FAILED", "INTERNAL", "LOCKED", "OK", "USAGE", "ConfigError", "LockedError",
           "Skipped", "TaskError", "number", "run"]
__version__ = "0.1.0"


def number(low, high, kind=int):
    """An argparse type: a number from ``low`` to ``high``; see ``cioctasks.runner.number``."""
    from cioctasks import runner

    return runner.number(low, high, kind)


def run(task, add_arguments=None, **options):
    """Run a task script; see ``cioctasks.runner.run``."""
    from cioctasks import runner

    return runner.run(task, add_arguments, **options)
