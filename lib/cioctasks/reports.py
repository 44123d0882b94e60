"""Failure reports by mail to ``CIOC_TASK_NOTIFY_EMAIL``, and when not to send them again.

A task that fails every 15 minutes must not send a mail every 15 minutes: the same failure
(same task, same failing databases, same first lines with numbers blurred) is mailed again
only after ``CIOC_REPORT_REPEAT_HOURS`` (default 6; 0 mails every time). When a task that
had a failure mailed succeeds again, one "recovered" mail says so. The report never hides
the failure it reports: any error here is logged and swallowed.
"""

import datetime
import hashlib
import re
import socket

from cioctasks import udl

#: Watermark task name under which the last report of each task is kept.
REPORTS = "_reports"


def signature(text):
    """A fingerprint of a report that ignores numbers (durations, counts, times, pids)."""
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
        host = socket.gethostname()
        status = _send(settings, f"[cioctasks] {name} failed on {host}", text, log, dry_run)
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
        host = socket.gethostname()
        text = (f"{name} on {host} ran without failure again.\n\n"
                f"The failure mailed at {last['sent']} is over.\n\n{summary}")
        status = _send(settings, f"[cioctasks] {name} recovered on {host}", text, log, dry_run)
        state.delete(REPORTS, name)
        log.info("recovery note %s to %s", status, settings.task_notify_email)
        return status
    except Exception as error:
        log.error("cannot mail the recovery note: %s", udl.mask(str(error), settings.secrets()))
        return None
    finally:
        state.close()
