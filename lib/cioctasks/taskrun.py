"""One run of a task once its arguments are parsed (see ``runner``): settings, logging, the
lock, the time limit, the outbox, the database fan-out, run history, pings, the failure
report.

With ``-j N`` the databases run N at a time: in threads, or, for a task that declares its
work is Python (``parallel="processes"``), each in a child process (``children``), since
threads of one interpreter take turns at the GIL.
"""

import collections
import logging
import sys
import time
from pathlib import Path

from cioctasks import children, config, host, logs, reports, udl
from cioctasks.errors import FAILED, INTERNAL, LOCKED, OK, USAGE, ConfigError, Skipped, TaskError

PING_TIMEOUT = 10
#: The time limit of a task the schedule does not list (and of the commands).
DEFAULT_MAX_MINUTES = 60


class Context:
    """What a task function gets: its arguments, the settings, a logger, the run state, and
    for a per-database task the database name."""

    def __init__(self, task, args, settings, log, state, database=None):
        self.task = task
        self.args = args
        self.settings = settings
        self.log = log
        self.state = state
        self.database = database
        self.problems = []
        self._mailer = None
        self.prepared = None  # what the job's prepare hook returned, shared by every database

    @property
    def dry_run(self):
        return bool(getattr(self.args, "dry_run", False))

    @property
    def mailer(self):
        """The run's Mailer, created on first use."""
        if self._mailer is None:
            from cioctasks import mail

            self._mailer = mail.Mailer(self.settings, dry_run=self.dry_run, log=self.log)
        return self._mailer

    def connect(self, name=None, query_timeout=None):
        """Open the database of this run (or ``name``) with the runner's timeouts."""
        from cioctasks import db

        return db.connect(name or self.database, self.settings,
                          query_timeout=query_timeout or db.QUERY_TIMEOUT)

    def problem(self, message):
        """Record a failure and go on: the run ends with exit 1 and reports it."""
        self.log.error(message)
        self.problems.append(message)

    def for_database(self, name):
        """A context for one database; it has its own problems and its own mailer."""
        context = Context(self.task, self.args, self.settings, self.log, self.state, name)
        context.prepared = self.prepared
        return context


class Outcome:
    """How one run (of one database) ended."""

    def __init__(self, database, status, exit_code, summary, seconds):
        self.database = database
        self.status = status  # ok, skipped, failed, error (internal)
        self.exit_code = exit_code
        self.summary = summary
        self.seconds = seconds


def ping(settings, name, what, body="", log=None):
    """Ping the healthchecks-style URL: ``/start``, ``/<exit code>``. Never raises."""
    if not settings.ping_url:
        return
    import urllib.request

    url = f"{settings.ping_url}/{name}/{what}"
    try:
        request = urllib.request.Request(url, data=body.encode("utf-8")[:100_000], method="POST")
        with urllib.request.urlopen(request, timeout=PING_TIMEOUT) as response:
            response.read(1024)
    except Exception as error:  # a monitoring failure must never hide the task's result
        if log:
            log.warning("ping %s failed: %s", udl.mask(url, settings.secrets()),
                        udl.mask(str(error), settings.secrets()))


def _run_one(task, context, name, on_start=None):
    token = logs.current_database.set(name or "-")
    started = time.monotonic()
    run_id = None
    try:
        if not context.dry_run:
            run_id = context.state.start_run(context.task, name or "")
            if on_start is not None and run_id is not None:
                on_start(run_id)
        if name is None:
            summary = task(context)
        else:
            summary = task(context, name)
            # A database's own mailer (for_database) reports what it could not deliver.
            if context._mailer is not None:
                for line in context._mailer.problems:
                    if line not in context.problems:
                        context.problem(line)
        if context.problems:
            status, code = "failed", FAILED
            summary = "; ".join(filter(None, [summary, *context.problems]))
        else:
            status, code = "ok", OK
    except Skipped as error:
        context.log.info("skipped: %s", error)
        status, code, summary = "skipped", OK, str(error)
    except TaskError as error:
        context.log.error("%s", error)
        if context.args.verbose:
            context.log.debug("details", exc_info=True)
        # A configuration error of the whole task is exit 2; of one database (a bad UDL),
        # that database failed and the others go on.
        code = error.exit_code if name is None else FAILED
        status, summary = "failed", str(error)
    except OSError as error:
        # The system refused (a path that is a folder, a full disk, no permission): that
        # run failed, said in one line; the traceback goes to the log for whoever digs.
        target = error.filename2 or error.filename  # a rename names its target second
        where = f": {target}" if target else ""
        summary = f"{error.strerror or error.__class__.__name__}{where}"
        context.log.error("%s", summary, exc_info=True)  # the console shows one line only
        status, code = "failed", FAILED
    except Exception as error:
        context.log.error("internal error: %s: %s", error.__class__.__name__, error, exc_info=True)
        status, code = "error", INTERNAL
        summary = f"internal error: {error.__class__.__name__}: {error}"
    summary = udl.mask(str(summary or ""), context.settings.secrets())
    seconds = time.monotonic() - started
    try:
        context.log.info("%s (%.1fs) %s", status, seconds, summary)
        if run_id is not None:
            context.state.finish_run(run_id, status, code, summary)
    except TaskError as error:  # the run state cannot be written (a full disk)
        context.log.error("%s", error)
        status, code = "failed", FAILED
    finally:
        logs.current_database.reset(token)
    return Outcome(name or "", status, code, summary, seconds)


def _run_all(job, context, databases, jobs, running):
    task = job.task
    if databases is None:
        return [_run_one(task, context, None)]
    if jobs <= 1 or len(databases) <= 1:
        return [_run_one(task, context.for_database(name), name) for name in databases]
    if job.parallel == "processes" and not job.command:
        command = children.child_command(task, job.argv)
        if command is not None:
            return children.run_children(command, job, context, databases, jobs, running)
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [
            pool.submit(_run_one, task, context.for_database(name), name) for name in databases
        ]
        return [future.result() for future in futures]


#: What the runner knows of a task script: its function, its name, whether it runs once per
#: database, whether it is a built-in command, its ``prepare(context)`` hook (or None), the
#: name of the lock it takes, how its databases run side by side with -j ("threads" or
#: "processes") and its arguments (None: sys.argv), which a child process is given again.
Job = collections.namedtuple("Job", "task name per_database command prepare lock parallel argv",
                             defaults=("threads", None))


def execute(job, args, usage_error, console, environ=None, notify=False):
    """Load the settings, set up logging and run ``job``; return the exit code. ``notify``
    says whether failures are mailed even with a console (--notify-errors)."""
    parent = children.parent_of(job, environ)
    if parent is not None:
        return children.run_as_child(job, args, usage_error, environ, parent)
    name = job.name
    settings = None
    try:
        settings = config.load(environ)
        if usage_error is not None:
            raise usage_error
    except ConfigError as error:
        return reports.early_failure(error, console, notify, name, settings, environ)

    try:
        log = logs.setup(
            name, settings.log_root, settings.secrets(),
            console_stream=sys.stderr if console else None,
            verbosity=args.verbose, quiet=args.quiet,
        )
    except ConfigError as error:
        return reports.early_failure(error, console, notify, name, settings, environ,
                                      log_failed=True)
    if not console:
        sys.stdout = logs.LogStream(log, logging.INFO)
        sys.stderr = logs.LogStream(log, logging.ERROR)

    try:
        return _run_locked(job, args, settings, log, console)
    except Exception as error:  # the last net: never a silent death under the scheduler
        import traceback

        log.critical("internal error: %s", error, exc_info=True)
        if not console or args.notify_errors:
            reports.failure(settings, name, traceback.format_exc(), log, args.dry_run)
        elif args.verbose:
            traceback.print_exc()
        else:
            print(f"{name}: internal error: {udl.mask(str(error), settings.secrets())} "
                  f"(see {logs.log_path(settings.log_root, name)})", file=sys.stderr)
        return INTERNAL
    finally:
        logging.shutdown()


def _run_locked(job, args, settings, log, console):
    from cioctasks import lock as locking

    held = None
    name, command = job.name, job.command
    if not command:
        try:
            held = locking.TaskLock(Path(settings.state_dir) / "locks", job.lock).acquire()
        except TaskError as error:
            if error.exit_code == LOCKED:  # skipped, not a failure: nobody is mailed
                log.warning("%s", error)
                if console and args.quiet:
                    print(f"{name}: {error}", file=sys.stderr)
                return LOCKED
            # The lock folder cannot be used (exit 2) or written (exit 1): nothing can run.
            log.error("%s", error)
            if not console or args.notify_errors:
                reports.failure(settings, name, f"{error}\n", log, args.dry_run)
            return error.exit_code
    watchdog = locking.Watchdog(getattr(args, "max_minutes", None)
                                or (lambda: max_minutes(args, name, log)))
    watchdog.children = children.Children()
    watchdog.start(lambda: _time_limit_reached(job, args, settings, log, console, held,
                                               watchdog))
    try:
        return _run_body(job, args, settings, log, console, watchdog)
    finally:
        watchdog.stop()
        if held:
            held.release()


def max_minutes(args, name, log):
    """The run's time limit in minutes: --max-minutes; else a little less than the task's
    time_limit_minutes in the schedule, so that the run reports itself before Task
    Scheduler's own limit stops it without a word; else DEFAULT_MAX_MINUTES."""
    if getattr(args, "max_minutes", None):
        return args.max_minutes
    from cioctasks import schedule

    try:
        entries = schedule.load(schedule.DEFAULT_SCHEDULE)
    except TaskError as error:  # a broken schedule must not stop every task
        log.warning("time limit: %s; %d minutes", error, DEFAULT_MAX_MINUTES)
        return DEFAULT_MAX_MINUTES
    limits = [entry.time_limit_minutes for entry in entries if name in (entry.task, entry.name)]
    if not limits:
        return DEFAULT_MAX_MINUTES
    return limits[0] - min(1, limits[0] / 10)


def _time_limit_reached(job, args, settings, log, console, held, watchdog):
    """What the watchdog does at the time limit: record the runs still open as killed,
    report the failure (mail without a console), ping, flush the log, release the lock."""
    name = job.name
    reason = f"time limit: stopped after {watchdog.minutes:g} minutes (--max-minutes)"
    try:
        if watchdog.children is not None:
            watchdog.children.stop(reason)
        killed = watchdog.state.kill_open_runs(reason) if watchdog.state else []
        running = f"; still running: {', '.join(d or name for d in killed)}" if killed else ""
        log.error("%s%s", reason, running)
        text = f"{name} on {host.name()}: {reason}{running}\n"
        if not console or args.notify_errors:
            reports.failure(settings, name, text, log, args.dry_run)
        if not (job.command or args.dry_run):
            ping(settings, name, str(FAILED), text, log=log)
        log.info("end: exit %d", FAILED)
    except Exception as error:  # the process must end all the same
        log.critical("time limit: %s", error, exc_info=True)
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        logging.shutdown()
        if held:
            held.release()


def _run_body(job, args, settings, log, console, watchdog):
    name, command, per_database = job.name, job.command, job.per_database
    from cioctasks import db
    from cioctasks import state as run_state

    try:
        state = None if command else run_state.State.open(settings)
    except ConfigError as error:
        log.error("%s", error)
        if not console or args.notify_errors:
            reports.failure(settings, name, f"{error}\n", log, args.dry_run)
        return USAGE
    watchdog.state = state
    context = Context(task=name, args=args, settings=settings, log=log, state=_NoState()
                      if state is None else state)
    dry = " (dry run)" if args.dry_run else ""
    log.info("start%s", dry)
    if state is not None:
        _report_killed_runs(state, name, args, settings, log, console)
    pinging = not (command or args.dry_run)
    if pinging:
        ping(settings, name, "start", log=log)
    problems = []

    def configuration_failure(error):
        """One line, a report, and the end ping with exit 2 (monitoring sees a failure,
        not a run that started and never ended)."""
        log.error("%s", error)
        if not console or args.notify_errors:
            reports.failure(settings, name, f"{error}\n", log, args.dry_run)
        if pinging:
            ping(settings, name, str(USAGE), str(error), log=log)
        return USAGE

    try:
        databases = None
        if per_database:
            if not command and not Path(settings.udl_base).is_dir():
                return configuration_failure(ConfigError(
                    f"CIOC_UDL_BASE: {settings.udl_base} is not a folder (it holds "
                    "<Database>/cron_job_runner.udl)"))
            try:
                databases = db.select_databases(settings.udl_base, args.database)
            except ConfigError as error:
                return configuration_failure(error)
            if not databases:
                problems.append(f"no databases under {settings.udl_base}")
        if not (command or args.dry_run):
            _flush_outbox(context, problems)
        if job.prepare is not None:
            try:
                context.prepared = job.prepare(context)
            except ConfigError as error:
                return configuration_failure(error)
        outcomes = _run_all(job, context, databases, getattr(args, "jobs", 1),
                            watchdog.children)
        if context._mailer is not None:
            problems.extend(context._mailer.problems)
    finally:
        watchdog.stop()  # the work is over: the report and pings have timeouts of their own
        if state is not None:
            state.close()

    failed = [o for o in outcomes if o.status not in ("ok", "skipped")]
    code = OK
    if failed or problems:
        codes = {o.exit_code for o in failed}
        code = next((c for c in (INTERNAL, USAGE) if c in codes), FAILED)
    summary = reports.report_text(name, outcomes, problems)
    if console and not command and not args.quiet:
        for outcome in outcomes:
            where = outcome.database or name
            print(f"{where}: {outcome.status} ({outcome.seconds:.1f}s) {outcome.summary}{dry}")
    if code != OK:
        for problem in problems:
            log.error("%s", problem)
        if console and per_database:
            names = ", ".join(o.database for o in failed) or "see the log"
            print(f"{name}: failed: {names}", file=sys.stderr)
        if not console or args.notify_errors:
            reports.failure(settings, name, summary, log, args.dry_run)
    elif not command:
        reports.success(settings, name, summary, log, args.dry_run)
    if not (command or args.dry_run):
        _write_metrics(settings, log)
    log.info("end: exit %d", code)
    if pinging:
        ping(settings, name, str(code), summary, log=log)
    return code


def _report_killed_runs(state, name, args, settings, log, console):
    """Record the runs of this task that were killed (their process is gone without having
    recorded their end), say so, and mail it when unattended: nobody heard of them yet."""
    try:
        found = state.record_killed(name, dry_run=args.dry_run)
    except TaskError as error:
        log.warning("%s", error)
        return
    for line in found:
        log.warning("%s", line)
    if found and (not console or args.notify_errors):
        reports.failure(settings, name, "\n".join(found) + "\n", log, args.dry_run)


def _write_metrics(settings, log):
    """Rewrite the Prometheus metrics file (CIOC_PROMETHEUS_FILE) and the status page
    (CIOC_STATUS_HTML) when they are set. Never raises: monitoring that cannot be written
    must not change the run's result."""
    for variable, module in (("CIOC_PROMETHEUS_FILE", "prometheus"),
                             ("CIOC_STATUS_HTML", "statuspage")):
        try:
            path = config.setting_text(settings, variable)
            if path:
                import importlib  # the module only then: start-up stays fast

                importlib.import_module(f"cioctasks.{module}").update(settings, path)
        except Exception as error:
            log.warning("%s: not written: %s", variable,
                        udl.mask(str(error), settings.secrets()))


def _flush_outbox(context, problems):
    from cioctasks import outbox

    # An empty outbox, the usual case, is seen without loading mail (email, ssl): the
    # 15-minute task with nothing to do starts that much faster.
    try:
        if outbox.Outbox(context.settings.mail_outbox).idle():
            return
        report = context.mailer.flush_outbox()
    except Exception as error:  # a broken outbox must not stop the task itself
        problems.append(f"outbox: {udl.mask(str(error), context.settings.secrets())}")
        return
    if report.sent or report.failed:
        context.log.info("outbox: %d sent, %d left, %d failed", report.sent, report.remaining,
                         report.failed)


class _NoState:
    """Stands in for the run state where a command keeps no history (``status``): with
    no run id, ``_run_one`` records nothing."""

    def start_run(self, task, database=""):
        return None
