"""Failure reports by mail to ``CIOC_TASK_NOTIFY_EMAIL``, and when not to send them again.

A task that fails every 15 minutes must not send a mail every 15 minutes: the same failure
(same task, same failing databases, same first lines with numbers blurred) is mailed again
only after ``CIOC_REPORT_REPEAT_HOURS`` (default 6; 0 mails every time). When a task that
had a failure mailed succeeds again, one "recovered" mail says so. The report never hides
the failure it reports: any error here is logged and swallowed.

A failure before the task's log can be opened (a setting that does not load, a log folder
that cannot be written) goes to the fallback log (``fallback_logs``), which needs no setting.
"""

import datetime
import logging
import os
import re
import sys
from pathlib import Path

from cioctasks import host, logs, udl
from cioctasks.errors import USAGE, ConfigError

#: Watermark task name under which the last report of each task is kept.
REPORTS = "_reports"


def report_text(name, outcomes, problems):
    """The text of a run's report: one line per database (or the task) and per problem."""
    machine = host.name()
    lines = [f"{name} on {machine}:", ""]
    for outcome in outcomes:
        where = outcome.database or name
        lines.append(f"- {where}: {outcome.status} ({outcome.seconds:.1f}s) {outcome.summary}")
    for problem in problems:
        lines.append(f"- {problem}")
    return "\n".join(lines) + "\n"


def signature(text):
    """A fingerprint of a report that ignores numbers (durations, counts, times, pids)."""
    import hashlib  # only when a failure is reported: start-up stays fast

    blurred = re.sub(r"\d+", "#", text)
    return hashlib.sha256(blurred.encode("utf-8")).hexdigest()[:16]


def _open_state(settings):
    from cioctasks import state

    try:
        return state.State(settings.state_dir)
    except Exception:  # without run state every failure is mailed: better twice than never
        return None


def _send(settings, subject, text, log, dry_run):
    from cioctasks import mail

    message = mail.Message(
        to=settings.task_notify_email,
        sender=settings.task_notify_email,
        subject=subject,
        text=udl.mask(text, settings.secrets()),
    )
    mailer = mail.Mailer(settings, dry_run=dry_run, log=log)
    with mailer.session() as session:
        return session.send(message)


def failure(settings, name, text, log, dry_run=False, now=None):
    """Mail a failure report unless the same one went out within the repeat window."""
    if not settings.task_notify_email:
        log.error("CIOC_TASK_NOTIFY_EMAIL is not set: this failure cannot be mailed")
        return None
    now = now or datetime.datetime.now()
    state = None if dry_run else _open_state(settings)
    try:
        fingerprint = signature(text)
        last = state.get(REPORTS, name) if state else None
        window = datetime.timedelta(hours=settings.report_repeat_hours)
        if last and last.get("signature") == fingerprint and window:
            sent = datetime.datetime.fromisoformat(last["sent"])
            if now - sent < window:
                log.info("failure report not mailed again: the same failure was mailed at %s",
                         last["sent"])
                return "repeat"
        machine = host.name()
        status = _send(settings, f"[cioctasks] {name} failed on {machine}", text, log, dry_run)
        log.info("failure report %s to %s", status, settings.task_notify_email)
        if state:
            state.set(REPORTS, name, {"signature": fingerprint, "sent": now.isoformat()})
        return status
    except Exception as error:  # the report must not replace the failure it reports
        log.error("cannot mail the failure report: %s", udl.mask(str(error), settings.secrets()))
        return None
    finally:
        if state:
            state.close()


def success(settings, name, summary, log, dry_run=False):
    """After a success, mail "recovered" once if a failure of this task was mailed."""
    if dry_run or not settings.task_notify_email:
        return None
    state = _open_state(settings)
    if state is None:
        return None
    try:
        last = state.get(REPORTS, name)
        if not last:
            return None
        machine = host.name()
        text = (f"{name} on {machine} ran without failure again.\n\n"
                f"The failure mailed at {last['sent']} is over.\n\n{summary}")
        status = _send(settings, f"[cioctasks] {name} recovered on {machine}", text, log, dry_run)
        state.delete(REPORTS, name)
        log.info("recovery note %s to %s", status, settings.task_notify_email)
        return status
    except Exception as error:
        log.error("cannot mail the recovery note: %s", udl.mask(str(error), settings.secrets()))
        return None
    finally:
        state.close()


FALLBACK_LOG = "early-failures.log"


def fallback_logs(environ=None):
    """The places of the fallback log, best first: a per-user folder that needs no setting
    and that a scheduled task can write (``%LOCALAPPDATA%\\cioctasks\\early-failures.log`` on
    Windows, ``$XDG_STATE_HOME/cioctasks/early-failures.log``, by default under
    ``~/.local/state``, elsewhere), then the system's temporary folder, which is always
    there but may be cleaned (``cioctasks-<user>-early-failures.log``)."""
    import tempfile

    environ = os.environ if environ is None else environ
    if sys.platform.startswith("win"):
        base = environ.get("LOCALAPPDATA")
    else:
        base = environ.get("XDG_STATE_HOME")
        if not base and environ.get("HOME"):
            base = os.path.join(environ["HOME"], ".local", "state")
    places = [Path(base) / "cioctasks" / FALLBACK_LOG] if base and os.path.isabs(base) else []
    user = environ.get("USER") or environ.get("USERNAME") or environ.get("LOGNAME") or "user"
    user = re.sub(r"[^\w.-]", "_", user)
    return places + [Path(tempfile.gettempdir()) / f"cioctasks-{user}-{FALLBACK_LOG}"]


def write_fallback(name, message, environ=None):
    """Append a dated line naming the task and its host to the first fallback log that can
    be written; return its path, or None when none can."""
    text = " ".join(udl.mask(message).split())
    line = f"{datetime.datetime.now():%Y-%m-%d %H:%M:%S} {name} on {host.name()}: {text}\n"
    # No link is followed: in a shared temporary folder another user could plant one.
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    for path in fallback_logs(environ):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = os.open(path, flags, 0o600)
            try:
                os.write(handle, line.encode("utf-8"))
            finally:
                os.close(handle)
            return path
        except OSError:
            continue
    return None


def settings_for_report(environ):
    """Given the environment whose settings did not load, return (settings, dropped):
    Settings good enough to report why, and the names of the variables left at their
    default for that. The ``.env`` file is read leniently (lines that cannot be read are
    left out) and each variable an error names (``CIOC_MAIL_PORT: ...``) is dropped in
    turn; settings is None when that is not enough."""
    from cioctasks import config

    environ = dict(os.environ if environ is None else environ)
    dropped = []
    for _ in range(10):
        given = {key: value for key, value in environ.items() if key not in dropped}
        try:
            env_file = config.find_env_file(given)
            values = dict(config.read_env_file(env_file, strict=False)) if env_file else {}
            values.update(given)
            for key in dropped:
                values.pop(key, None)
            return config.from_mapping(values, env_file), dropped
        except ConfigError as again:
            match = re.match(r"(CIOC_\w+):", str(again))
            if not match or match.group(1) in dropped:
                return None, dropped
            dropped.append(match.group(1))
        except Exception:  # the report must not replace the failure it reports
            return None, dropped
    return None, dropped


def early_failure(error, console, notify, name, settings=None, environ=None, log_failed=False):
    """Report a configuration error found before the run's log was open; return exit 2.

    With a console it is one line on stderr. Unattended (no console, or --notify-errors as
    cron runs it) it is also a line in the task's log, or in the fallback log when that
    cannot be opened, and a mail when the mail settings allow it; settings that did not
    load are tried again with each variable the errors name left at its default.
    """
    message = str(error)
    if console:
        print(f"{name}: error: {message}", file=sys.stderr)
        if not notify:
            return USAGE
    note = ""
    if settings is None:
        settings, dropped = settings_for_report(environ)
        if settings is not None and dropped:
            note = f"\n(this report was sent with {', '.join(dropped)} at the default)\n"
    log = None
    if settings is not None and not log_failed:
        try:
            log = logs.setup(name, settings.log_root, settings.secrets())
            log.error("%s", message)
        except ConfigError:
            log = None
    if log is None:
        where = write_fallback(name, message, environ)
        log = logging.getLogger("cioctasks.early")
        if where:
            note += f"\n(also written to {where})\n"
    if settings is not None:
        failure(settings, name, f"{message}\n{note}", log)
    return USAGE
