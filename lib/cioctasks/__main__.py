"""cioctasks commands: ``check`` the databases and mail, ``status`` of the last runs,
``schedule`` the tasks in cron, Task Scheduler or systemd.

    python -m cioctasks check [-a DB]... [--send-test]
    python -m cioctasks status [--json | --html FILE | --prometheus FILE]
    python -m cioctasks status --history TASK [-a DB]... [--limit N] [--json]
    python -m cioctasks schedule --crontab | --install-crontab | --windows DIR | --systemd DIR |
                                 --install-systemd
"""

import sys
from pathlib import Path

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
    elif settings.mail_backend == "file":
        where = f"file backend: writes each message into {settings.mail_dir}"
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


def folder_unwritable(folder):
    """Why files cannot be written into ``folder`` (made on first use), or None if they
    can; nothing is created."""
    import os

    existing = Path(folder)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"cannot write into {existing}"
    return None


def probe_recipient(settings, address):
    """Return None if the SMTP server takes a message from and to ``address`` (nothing is
    sent), else its answer; raise OSError if the server cannot be used."""
    from cioctasks import smtp

    client = smtp.connect(settings)
    try:
        return smtp.probe(client, address)
    finally:
        try:
            client.quit()
        except OSError:
            pass
        smtp.close(client)


def check_notify(context, mail_failed):
    """Say who hears of a failure: (result, detail, problem). FAILED when nobody would:
    no CIOC_TASK_NOTIFY_EMAIL, a backend that keeps messages in the process (``memory``),
    a mail folder that cannot be written (``file``), a mail server that fails or refuses
    the address (``smtp``). ``problem`` is the line for stderr, None when the mail row
    already says it."""
    settings = context.settings
    address = settings.task_notify_email
    if not address:
        why = ("CIOC_TASK_NOTIFY_EMAIL is not set: a failure of a scheduled task is "
               "mailed to no one")
        return "FAILED", why, why
    backend = settings.mail_backend
    if backend == "memory":
        why = f"failures to {address} stay in memory (the test backend): nobody gets them"
        return "FAILED", why, why
    if backend == "file":
        unwritable = folder_unwritable(settings.mail_dir)
        if unwritable:
            why = f"failures to {address} cannot be written: {unwritable}"
            return "FAILED", why, why
        return "ok", (f"failures to {address} are written into {settings.mail_dir}, not "
                      f"mailed: someone must read that folder"), None
    if mail_failed:
        return "FAILED", f"failures to {address} cannot be mailed: the mail server fails", None
    from cioctasks import mail

    mailer = mail.Mailer(settings)
    try:
        refused = probe_recipient(settings, address)
    except OSError as error:
        why = f"failures to {address} cannot be mailed: {mailer.describe(error)}"
        return "FAILED", why, why
    if refused:
        why = mailer.mask(f"failures to {address} cannot be mailed: mail server "
                          f"{mailer.where()} answers {refused}")
        return "FAILED", why, why
    return "ok", f"failures are mailed to {address} (the server takes it, from and to)", None


def check_outbox(settings):
    """Count the messages waiting in the outbox and those refused for good (``failed/``):
    (result, detail). FAILED when some were refused: nobody got them."""
    import datetime
    import os

    from cioctasks import outbox

    box = outbox.Outbox(settings.mail_outbox)

    def messages(folder):
        """The modification times of the messages in ``folder``."""
        times = []
        try:
            with os.scandir(folder) as found:
                for entry in found:
                    if entry.name.endswith(".eml") and not entry.name.startswith("."):
                        try:
                            times.append(entry.stat().st_mtime)
                        except FileNotFoundError:  # sent by a task just now
                            pass
        except (FileNotFoundError, NotADirectoryError):
            pass
        return times

    waiting = messages(box.folder)
    try:  # left by a run that died while sending them: the next flush sends them
        waiting += [t for f in box.sending_folder.iterdir() if f.is_dir() for t in messages(f)]
    except (FileNotFoundError, NotADirectoryError):
        pass
    failed = messages(box.failed_folder)
    detail = f"{len(waiting)} waiting in {box.folder}"
    if waiting:
        detail += f" (oldest {datetime.datetime.fromtimestamp(min(waiting)):%Y-%m-%d %H:%M})"
    if not failed:
        return "ok", detail + ", none failed"
    return "FAILED", (f"{len(failed)} refused for good by the mail server, kept in "
                      f"{box.failed_folder} (a file moved back into {box.folder} is sent "
                      f"again); {detail}")


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
    backend = context.settings.mail_backend
    try:
        rows.append(("mail", backend, "ok", check_mail(context)))
        mail_failed = False
    except Exception as error:
        context.problem(f"mail: {error}")
        rows.append(("mail", backend, "FAILED", str(error)))
        mail_failed = True
    result, detail, problem = check_notify(context, mail_failed)
    rows.append(("notify", backend, result, detail))
    if problem:
        context.problem(f"notify: {problem}")
    try:
        result, detail = check_outbox(context.settings)
    except OSError as error:
        result, detail = "FAILED", f"cannot read {context.settings.mail_outbox}: " + (
            error.strerror or str(error))
    rows.append(("outbox", backend, result, detail))
    if result == "FAILED":
        context.problem(f"outbox: {detail}")
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

    Then: mail (the server: connect, TLS, login), notify (who hears of a failure: FAILED
    when nobody would, as without CIOC_TASK_NOTIFY_EMAIL or when the server refuses that
    address; the file backend only writes .eml files, and says so) and outbox (messages
    waiting, and those the server refused for good, in outbox/failed: FAILED).
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

    from cioctasks import schedule, state, statuspage
    from cioctasks import status as status_report
    from cioctasks.errors import ConfigError

    args = context.args
    if args.database and not args.history:
        raise ConfigError("-a/--database goes with --history TASK")
    if args.history and (args.html or args.prometheus):
        raise ConfigError("--history prints the runs of one task: not with --html or "
                          "--prometheus")
    now = datetime.datetime.now().replace(microsecond=0)
    entries = schedule.load(args.schedule)
    history = state.State.open(context.settings)
    try:
        if args.history:
            return run_history(history, entries, args)
        rows = status_report.rows(history.last_runs(), entries, now,
                                  outbox=context.settings.mail_outbox)
        if args.json:
            print(json.dumps(rows, indent=2))
        elif not (args.html or args.prometheus):
            print(status_report.table(rows))
        if args.html:
            statuspage.write(args.html, statuspage.build(
                history, entries, context.settings.mail_outbox, context.settings.log_root, now))
            print(f"wrote {args.html}")
        if args.prometheus:
            from cioctasks import prometheus

            prometheus.write(args.prometheus,
                             prometheus.collect(history, context.settings.mail_outbox))
            print(f"wrote {args.prometheus}")
    finally:
        history.close()
    for row in rows:
        if row["task"] == "mail" and row["database"] == "outbox" and row["failed"]:
            context.problem(f"mail outbox: {row['summary']}")
        elif row["failed"] or row["overdue"]:
            where = f"{row['task']} {row['database']}".strip()
            what = "last run " + row["status"] if row["failed"] else "overdue"
            context.problem(f"{where}: {what} (started {row['started'] or 'never'})")
    return f"{len(rows)} tasks and databases"


def run_history(history, entries, args):
    """Print the runs of the task ``args.history`` (on the ``-a`` databases), newest first.
    Raise ConfigError naming the known tasks, or the task's databases, for an unknown one."""
    import json

    from cioctasks.errors import ConfigError
    from cioctasks.statuspage import seconds_of, took

    last = [run for run in history.last_runs() if not run["task"].startswith("_")]
    recorded = {entry.name: entry.task for entry in entries}
    recorded.update({run["task"]: run["task"] for run in last})
    task = recorded.get(args.history)
    if task is None:
        raise ConfigError(f"unknown task {args.history!r}; known tasks: "
                          f"{', '.join(sorted(recorded))}")
    known = {run["database"].lower(): run["database"] for run in last
             if run["task"] == task and run["database"]}
    unknown = [name for name in args.database if name.lower() not in known]
    if unknown:
        listed = ", ".join(sorted(known.values())) or "none: it runs without a database"
        raise ConfigError(f"{task} has no runs on {', '.join(unknown)}; its databases: "
                          f"{listed}")
    databases = sorted({known[name.lower()] for name in args.database})
    runs = history.history(task, databases, limit=args.limit or None)
    kept = history.count_runs(task, databases)
    for run in runs:
        run["seconds"] = seconds_of(run)
    if args.json:
        print(json.dumps(runs, indent=2))
        return f"{len(runs)} runs of {task}"
    print(f"{task}: {kept} runs kept ({history.history_days} days of history), newest first"
          + (f"; the last {len(runs)} shown (--limit 0 for all)" if len(runs) < kept else ""))
    if runs:
        print(format_table(
            ("started", "ended", "took", "database", "result", "summary"),
            [(run["started"][:19], (run["ended"] or "-")[:19], took(run["seconds"]) or "-",
              run["database"] or "-", run["status"],
              " ".join((run["summary"] or "").split())[:200]) for run in runs]))
    return f"{len(runs)} runs of {task}"


@command
def status(argv):
    """Print the last run of each task and database; exit 1 if any failed or is overdue.

    Failed and overdue ones are marked; --json and --html give the same for machines and
    for a browser (the last 30 runs of each, durations over 30 days, the log lines of each
    failure), --prometheus FILE as metrics for node_exporter's textfile collector.
    --history TASK [-a DB] prints the runs of one task kept in the history (CIOC_HISTORY_DAYS,
    default 90 days), newest first.
    """

    def add_arguments(parser):
        parser.add_argument("--json", action="store_true", help="print JSON for machines")
        parser.add_argument("--html", type=Path, metavar="FILE", help="write the status page")
        parser.add_argument("--prometheus", type=Path, metavar="FILE",
                            help="write the metrics for node_exporter's textfile collector")
        parser.add_argument("--schedule", type=Path, default=DEFAULT_SCHEDULE,
                            help="the schedule (default config/schedule.toml)")
        parser.add_argument("--history", metavar="TASK",
                            help="print the runs of TASK kept in the history, newest first")
        parser.add_argument("-a", "--database", action="append", default=[], metavar="NAME",
                            help="with --history: the runs on this database only (repeatable)")
        parser.add_argument("--limit", type=runner.number(0, 10_000_000), default=100,
                            metavar="N", help="with --history: at most N runs (100; 0: all)")

    return runner.run(run_status, add_arguments, name="status", argv=argv, command=True,
                      description=status.__doc__)


@command
def schedule(argv):
    """Put config/schedule.toml into cron, Task Scheduler or systemd timers."""
    from cioctasks import schedule as timetable

    return runner.run(timetable.run_command, timetable.add_arguments, name="schedule",
                      argv=argv, command=True, description=timetable.COMMAND_DESCRIPTION)


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
