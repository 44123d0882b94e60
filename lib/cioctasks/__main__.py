"""cioctasks commands: ``check`` the databases and mail, ``status`` of the last runs.

    python -m cioctasks check [-a DB]... [--send-test]
    python -m cioctasks status [--json]
"""

import sys

from cioctasks import runner
from cioctasks.errors import OK, USAGE

COMMANDS = {}


def command(function):
    COMMANDS[function.__name__] = function
    return function


def format_table(headers, rows):
    """Return rows of strings as an aligned text table with a header line."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(str(cell))) for w, cell in zip(widths, row)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def check_database(context, name):
    """Connect to one database and run a trivial query; return (backend, seconds)."""
    import time

    started = time.monotonic()
    with context.connect(name, query_timeout=30) as database:
        database.query("SELECT 1 AS ok")
        return database.backend, time.monotonic() - started


def check_mail(context):
    """Check the mail settings (connect, TLS, login); send one test message if asked."""
    from cioctasks import mail

    settings = context.settings
    mailer = mail.Mailer(settings, dry_run=context.dry_run, log=context.log)
    if settings.mail_backend == "smtp":
        mailer.check()
        where = f"smtp {settings.mail_host}:{settings.mail_port}"
    else:
        where = f"{settings.mail_backend} backend"
    if context.args.send_test:
        if not settings.task_notify_email:
            raise mail.MailError("--send-test needs CIOC_TASK_NOTIFY_EMAIL")
        message = mail.Message(
            to=settings.task_notify_email, sender=settings.task_notify_email,
            subject="[cioctasks] test message", text="The mail settings of cioctasks work.\n",
        )
        with mailer.session() as session:
            status = session.send(message)
        where += f", test message {status} to {settings.task_notify_email}"
        for problem in mailer.problems:
            context.problem(problem)
    return where


def run_check(context):
    from cioctasks import db

    names = db.select_databases(context.settings.udl_base, context.args.database)
    rows = []
    for name in names:
        try:
            backend, seconds = check_database(context, name)
            rows.append((name, backend, "ok", f"{seconds:.2f}s"))
        except Exception as error:
            context.problem(f"{name}: {error}")
            rows.append((name, "-", "FAILED", str(error)))
    try:
        rows.append(("mail", context.settings.mail_backend, "ok", check_mail(context)))
    except Exception as error:
        context.problem(f"mail: {error}")
        rows.append(("mail", context.settings.mail_backend, "FAILED", str(error)))
    if not context.args.quiet:
        print(format_table(("what", "backend", "result", "detail"), rows))
    failed = sum(1 for row in rows if row[2] != "ok")
    return f"{len(names)} databases checked, {failed} failed"


@command
def check(argv):
    """Connect to each database, check the mail settings, print a table; exit 1 on failure."""

    def add_arguments(parser):
        parser.add_argument("-a", "--database", action="append", default=[], metavar="NAME",
                            help="check this database only (repeatable; default: all)")
        parser.add_argument("--send-test", action="store_true",
                            help="send a test message to CIOC_TASK_NOTIFY_EMAIL")

    return runner.run(run_check, add_arguments, name="check", argv=argv, command=True,
                      description=check.__doc__)


def run_status(context):
    import json

    from cioctasks import state

    runs = state.State(context.settings.state_dir).last_runs()
    if context.args.json:
        print(json.dumps(runs, indent=2))
    elif not runs:
        print("no runs recorded yet")
    else:
        rows = [
            (r["task"], r["database"] or "-", r["status"], r["started"], r["ended"] or "-",
             (r["summary"] or "")[:80])
            for r in runs
        ]
        print(format_table(("task", "database", "result", "started", "ended", "summary"), rows))
    for run in runs:
        if run["status"] not in ("ok", "running"):
            where = f"{run['task']} {run['database']}".strip()
            context.problem(f"{where}: last run {run['status']} at {run['started']}")
    return f"{len(runs)} tasks and databases"


@command
def status(argv):
    """Print the last run of every task and database; exit 1 if any last run failed."""

    def add_arguments(parser):
        parser.add_argument("--json", action="store_true", help="print JSON for machines")

    return runner.run(run_status, add_arguments, name="status", argv=argv, command=True,
                      description=status.__doc__)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        for name, function in COMMANDS.items():
            print(f"  {name:8} {function.__doc__.splitlines()[0]}")
        return OK if argv else USAGE
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"cioctasks: unknown command {name!r}; commands: {', '.join(COMMANDS)}",
              file=sys.stderr)
        return USAGE
    return COMMANDS[name](rest)


if __name__ == "__main__":
    sys.exit(main())
