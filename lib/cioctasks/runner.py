"""The runner every task script is built on: ``cioctasks.run(task, add_arguments, ...)``.

It parses the common flags, loads the settings, sets up logging, takes the task's lock,
sends what the outbox holds, runs the task once or once per database (``-j`` in parallel),
records run history, pings ``CIOC_PING_URL``, reports failures (mail when there is no
console or with ``--notify-errors``) and returns the exit code from ``cioctasks.errors``.
A failing database never stops the others.
"""

import argparse
import os
import sys

import cioctasks
from cioctasks.errors import OK, ConfigError

# The run itself lives in ``taskrun`` and is imported once the arguments are parsed, so
# that ``--help`` costs little more than starting Python (benchmarks/startup.py).


class ArgumentParser(argparse.ArgumentParser):
    """An argparse parser whose errors are ConfigErrors (exit 2), so that a bad flag under
    the scheduler is reported like any other problem instead of vanishing with stderr."""

    def error(self, message):
        raise ConfigError(message)  # the runner names the task when it reports it


def number(low, high, kind=int):
    """An argparse type for a flag's number: ``kind`` from ``low`` to ``high``, so that a
    negative timeout or a year 0 is the one-line usage error (exit 2), not a crash later."""

    def convert(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not low <= value <= high:  # NaN is not in any range
            raise argparse.ArgumentTypeError(f"{text} is not between {low} and {high}")
        return value

    convert.__name__ = kind.__name__
    return convert


class Console:
    """A console stream for the length of a run: when the console goes away (a reader that
    closed its pipe, a full disk), output is lost but the run's result is not."""

    def __init__(self, stream):
        self.stream = stream
        self.broken = False

    def write(self, text):
        if not self.broken:
            try:
                return self.stream.write(text)
            except (OSError, ValueError):
                self.broken = True
        return len(text)

    def flush(self):
        if not self.broken:
            try:
                self.stream.flush()
            except (OSError, ValueError):
                self.broken = True

    def __getattr__(self, name):
        return getattr(self.stream, name)


def add_retry_arguments(parser, timeout, backoff):
    """--timeout, --retries and --backoff for a task that talks to a web service."""
    parser.add_argument("--timeout", type=number(0.1, 3600, float), default=timeout,
                        help=f"seconds per request ({timeout:g})")
    parser.add_argument("--retries", type=number(0, 20), default=3,
                        help="retries per request (3)")
    parser.add_argument("--backoff", type=number(0, 600, float), default=backoff,
                        help=f"first retry delay in seconds, doubled each time ({backoff:g})")


def has_console():
    """True when standard streams exist (not pythonw.exe, not closed by the scheduler)."""
    if sys.stdout is None or sys.stderr is None:
        return False
    return os.path.basename(sys.executable).lower().split(".")[0] != "pythonw"


def task_name_of(task):
    module = sys.modules.get(task.__module__)
    path = getattr(module, "__file__", None) or sys.argv[0] or task.__name__
    return os.path.splitext(os.path.basename(path))[0]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The script's docstring as written; the width asked of os directly (argparse would
    import shutil, and with it bz2 and lzma, to learn it)."""

    def __init__(self, prog, **options):
        if "width" not in options:
            try:
                columns = int(os.environ.get("COLUMNS", "")) or os.get_terminal_size().columns
            except (ValueError, OSError):
                columns = 80
            options["width"] = max(columns - 2, 40)
        super().__init__(prog, **options)


def build_parser(name, description, per_database, add_arguments):
    parser = ArgumentParser(prog=name, description=description, formatter_class=HelpFormatter)
    if per_database:
        parser.add_argument(
            "-a", "--database", action="append", default=[], metavar="NAME",
            help="run on this database only (repeatable; default: every database)",
        )
        parser.add_argument(
            "-j", "--jobs", type=number(1, 64), default=1, metavar="N",
            help="run N databases in parallel (default 1)",
        )
    parser.add_argument("-n", "--dry-run", action="store_true",
                        help="read and decide, log what would be done, change nothing")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more output (repeatable); tracebacks on the console")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors on the console")
    parser.add_argument("--notify-errors", action="store_true",
                        help="mail failures to CIOC_TASK_NOTIFY_EMAIL even with a console")
    parser.add_argument("--max-minutes", type=number(0.05, 7 * 24 * 60, float), metavar="N",
                        help="stop the run as failed after N minutes (default: just under its "
                             "time_limit_minutes in config/schedule.toml, else 60)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {cioctasks.__version__}")
    if add_arguments:
        add_arguments(parser)
    return parser


def run(task, add_arguments=None, *, per_database=False, name=None, description=None,
        argv=None, environ=None, command=False, prepare=None, name_of=None, lock=None,
        parallel="threads"):
    """Run ``task`` as a script and return its exit code.

    ``task(context)``, or ``task(context, database_name)`` when ``per_database``, returns a
    one-line summary; it raises TaskError to fail (that database), or calls
    ``context.problem`` to record a failure and go on. A built-in ``command`` (check,
    status) takes no lock, keeps no history, leaves the outbox alone and prints its own
    output instead of the run summary. ``prepare(context)``, when given, runs once before
    the databases (after the lock); what it returns is ``context.prepared``, and a
    ConfigError from it ends the run with exit 2. ``name_of(args)``, when given, names the
    run from its arguments (history, pings, reports, log); ``lock`` is the name of the lock
    it takes (default: its name), so two variants of one script can exclude each other.
    ``parallel`` says how ``-j N`` runs databases side by side: "threads" where the work
    is waiting on the database server, "processes" where it is Python (building files,
    mail), which threads of one interpreter cannot run at once.
    """
    import io

    console = has_console()
    if not console:
        # pythonw.exe: no streams. Until the log is open, keep output in memory.
        sys.stdout = sys.stdout or io.StringIO()
        sys.stderr = sys.stderr or io.StringIO()
    name = name or task_name_of(task)
    if description is None:
        description = getattr(sys.modules.get(task.__module__), "__doc__", None)
    parser = build_parser(name, description, per_database, add_arguments)
    args, usage_error = None, None
    try:
        args = parser.parse_args(argv)
    except ConfigError as error:
        usage_error = error
    except SystemExit as exit:  # --help and --version
        return exit.code or OK
    from cioctasks import taskrun

    if name_of is not None and args is not None:
        name = name_of(args)
    if parallel not in ("threads", "processes"):
        raise ValueError(f"parallel: {parallel!r} is neither 'threads' nor 'processes'")
    job = taskrun.Job(task, name, per_database, command, prepare, lock or name, parallel, argv)
    # Failures are mailed even with a console; known also when the flags did not parse.
    notify = args.notify_errors if args is not None else "--notify-errors" in (
        sys.argv[1:] if argv is None else argv)
    if not console:
        return taskrun.execute(job, args, usage_error, console, environ, notify)
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = Console(sys.stdout), Console(sys.stderr)
    try:
        return taskrun.execute(job, args, usage_error, console, environ, notify)
    finally:
        wrapped = sys.stdout, sys.stderr
        for stream in wrapped:
            stream.flush()
        # A stream that broke would fail again when Python flushes it on exit (and turn
        # the exit code into 120): it is replaced by the null device.
        sys.stdout, sys.stderr = (
            open(os.devnull, "w", encoding="utf-8") if getattr(stream, "broken", False)
            else original for stream, original in zip(wrapped, saved))
