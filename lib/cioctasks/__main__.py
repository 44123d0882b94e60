"""cioctasks commands: ``check`` the databases and mail, ``status`` of the last runs.

    python -m cioctasks check [-a DB]... [--send-test]
    python -m cioctasks status [--json | --html FILE]
    python -m cioctasks schedule --crontab | --install-crontab | --windows DIR
"""

import sys
from pathlib import Path, PureWindowsPath

from cioctasks import runner
from cioctasks.errors import OK, USAGE, TaskError

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


def without_name(error, name):
    """The text of a database error without the database name it starts with."""
    text = str(error)
    return text[len(name) + 2:] if text.startswith(f"{name}: ") else text


def task_readiness(database, procedures):
    """Given an open Database and the procedures a task calls, return (result, detail):
    ``ok`` when all are present and the login may run them, ``n/a`` when one is not in this
    CIOC version (the task has nothing to do here), ``FAILED`` when the login may not
    EXECUTE one."""
    states = {procedure: database.procedure_state(procedure) for procedure in procedures}
    missing = [procedure for procedure, state in states.items() if state == "missing"]
    denied = [procedure for procedure, state in states.items() if state == "denied"]
    reasons = []
    if denied:
        reasons.append(f"this login may not EXECUTE {', '.join(denied)}")
    if missing:
        reasons.append(f"not in this CIOC version (no {', '.join(missing)})")
    if not reasons:
        return "ok", "can run"
    return ("FAILED" if denied else "n/a"), "cannot run: " + "; ".join(reasons)


def check_database(context, name):
    """Connect to one database, prove it is a CIOC database (it has members in STP_Member)
    and find which tasks can run there.

    Return (backend, detail, tasks), tasks a list of (task, result, detail) in
    ``procs.TASK_PROCEDURES`` order. Raise TaskError when the database cannot be reached
    (a UDL naming a file that does not exist included: no file is created) or is not a CIOC
    database.
    """
    import time

    from cioctasks import db, procs

    started = time.monotonic()
    with context.connect(name, query_timeout=30) as database:
        try:
            members = database.query_rows("SELECT COUNT(*) FROM STP_Member")[0][0]
        except db.DatabaseError as error:
            raise db.DatabaseError(f"not a CIOC database: cannot read STP_Member "
                                   f"({without_name(error, name)})") from None
        if not members:
            raise db.DatabaseError("not a CIOC database: STP_Member has no member")
        tasks = []
        for task, procedures in procs.TASK_PROCEDURES.items():
            try:
                tasks.append((task, *task_readiness(database, procedures)))
            except db.DatabaseError as error:
                tasks.append((task, "FAILED", f"cannot tell: {without_name(error, name)}"))
        seconds = time.monotonic() - started
    return database.backend, f"CIOC database, {members} members, {seconds:.2f}s", tasks


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
    failed = 0
    for name in names:
        try:
            backend, detail, tasks = check_database(context, name)
        except Exception as error:
            reason = without_name(error, name)
            context.problem(f"{name}: {reason}")
            rows.append((name, "-", "FAILED", reason))
            failed += 1
            continue
        rows.append((name, backend, "ok", detail))
        for task, result, why in tasks:
            rows.append((f"  {task}", "", result, why))
            if result == "FAILED":
                context.problem(f"{name}: {task} {why}")
        failed += any(result == "FAILED" for _, result, _ in tasks)
    try:
        rows.append(("mail", context.settings.mail_backend, "ok", check_mail(context)))
    except Exception as error:
        context.problem(f"mail: {error}")
        rows.append(("mail", context.settings.mail_backend, "FAILED", str(error)))
    if not context.args.quiet:
        print(format_table(("what", "backend", "result", "detail"), rows))
    return f"{len(names)} databases checked, {failed} failed"


@command
def check(argv):
    """Check each database and the mail settings, print a table; exit 1 on failure.

    Each database is reached through its UDL (one naming a database file that does not exist
    fails; no file is created), proved a CIOC database by reading STP_Member, and listed with
    each task and whether it can run there: ok (its procedures are present and this login may
    EXECUTE them), n/a (not in this CIOC version, as GetInvolved on a current database: not a
    failure) or FAILED (this login may not EXECUTE a procedure).
    """

    def add_arguments(parser):
        parser.add_argument("-a", "--database", action="append", default=[], metavar="NAME",
                            help="check this database only (repeatable; default: all)")
        parser.add_argument("--send-test", action="store_true",
                            help="send a test message to CIOC_TASK_NOTIFY_EMAIL")

    return runner.run(run_check, add_arguments, name="check", argv=argv, command=True,
                      description=check.__doc__)


ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SCHEDULE = ROOT / "config" / "schedule.toml"


def run_status(context):
    import datetime
    import json

    from cioctasks import files, schedule, state
    from cioctasks import status as status_report

    now = datetime.datetime.now().replace(microsecond=0)
    entries = schedule.load(context.args.schedule)
    rows = status_report.rows(state.State(context.settings.state_dir).last_runs(), entries, now)
    if context.args.json:
        print(json.dumps(rows, indent=2))
    elif not context.args.html:
        print(status_report.table(rows))
    if context.args.html:
        files.atomic_write(context.args.html, status_report.page(rows, now))
        print(f"wrote {context.args.html}")
    for row in rows:
        if row["failed"] or row["overdue"]:
            where = f"{row['task']} {row['database']}".strip()
            what = "last run " + row["status"] if row["failed"] else "overdue"
            context.problem(f"{where}: {what} (started {row['started'] or 'never'})")
    return f"{len(rows)} tasks and databases"


@command
def status(argv):
    """Print the last run of every task and database, with failed and overdue ones marked;
    exit 1 if any failed or is overdue."""

    def add_arguments(parser):
        parser.add_argument("--json", action="store_true", help="print JSON for machines")
        parser.add_argument("--html", type=Path, metavar="FILE", help="write a static page")
        parser.add_argument("--schedule", type=Path, default=DEFAULT_SCHEDULE,
                            help="the schedule (default config/schedule.toml)")

    return runner.run(run_status, add_arguments, name="status", argv=argv, command=True,
                      description=status.__doc__)


def run_schedule(context):
    import datetime
    import subprocess

    from cioctasks import schedule

    args = context.args
    entries = schedule.load(args.schedule)
    root = Path(args.root or ROOT)
    if args.windows:
        target = PureWindowsPath(args.root) if args.root else root
        pythonw = target / ".venv" / "Scripts" / "pythonw.exe"
        written = schedule.write_windows(entries, args.windows, target, pythonw,
                                         datetime.date.today())
        print(f"wrote {len(written) - 1} task files and {written[-1]}")
        return f"{len(entries)} tasks for Task Scheduler"
    python = Path(args.python or sys.executable)
    env_file = context.settings.env_file
    block = schedule.crontab_block(entries, root, python, env_file and Path(env_file).resolve())
    if not args.install_crontab:
        print(block, end="")
        return f"{len(entries)} crontab lines"
    listed = subprocess.run([args.crontab_command, "-l"], capture_output=True, text=True)
    existing = listed.stdout if listed.returncode == 0 else ""
    merged = schedule.merge_crontab(existing, block)
    if context.dry_run:
        print(merged, end="")
        return "crontab not changed (dry run)"
    written = subprocess.run([args.crontab_command, "-"], input=merged, capture_output=True,
                             text=True)
    if written.returncode != 0:
        raise TaskError(f"crontab refused the new table: {written.stderr.strip()[:200]}")
    return f"crontab updated: {len(entries)} tasks between the cioctasks markers"


@command
def schedule(argv):
    """Install the schedule (config/schedule.toml): print or install a crontab block, or
    write Task Scheduler XML files and a register.cmd."""

    def add_arguments(parser):
        what = parser.add_mutually_exclusive_group(required=True)
        what.add_argument("--crontab", action="store_true", help="print the crontab block")
        what.add_argument("--install-crontab", action="store_true",
                          help="merge the block into this user's crontab, keeping other lines")
        what.add_argument("--windows", type=Path, metavar="DIR",
                          help="write one Task Scheduler XML per task and register.cmd")
        parser.add_argument("--schedule", type=Path, default=DEFAULT_SCHEDULE)
        parser.add_argument("--root", help="the toolkit's folder on the target machine "
                                           "(default: this one)")
        parser.add_argument("--python", help="the Python to run tasks with (default: this one)")
        parser.add_argument("--crontab-command", default="crontab", help=argparse_hidden())

    return runner.run(run_schedule, add_arguments, name="schedule", argv=argv, command=True,
                      description=schedule.__doc__)


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


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
