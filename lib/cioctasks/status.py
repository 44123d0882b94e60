"""What the run history says about each scheduled task: last run, result, duration, next
due time, and whether it failed or is overdue. Shown as text, JSON or a static HTML page.

A task is overdue when it was due more than ``GRACE`` ago and has not started since; a task
that never ran is overdue once the run history is older than its last due time (a task
missing from the scheduler shows up, a new install does not cry wolf). A run whose process
is gone without recording its end is ``killed``: a failure. Mail the server refused for
good (kept in the outbox's ``failed/`` folder) is one more failed row, ``mail outbox``.

For the status page, ``history`` adds to each row the strip of its last runs, per task the
durations of the last 30 days, and for the failed runs the lines of the task's log that
they wrote (``log_excerpts``).
"""

import datetime
import re

GRACE = datetime.timedelta(minutes=30)
#: How many runs the status page shows per task and database, and how many days of durations.
STRIP_RUNS = 30
CHART_DAYS = 30
#: At most this many failed runs get their log lines on the page, each at most MAX_LINES.
MAX_EXCERPTS = 40
MAX_LINES = 200
#: The problem a run records when the mail server could not take its messages (mail.Mailer).
QUEUED = re.compile(r"queued \d+ messages? for the next run \(")


def _time(text):
    return datetime.datetime.fromisoformat(text) if text else None


def rows(runs, entries, now, outbox=None):
    """Return one dict per (scheduled or recorded task, database), sorted, and last the
    ``mail outbox`` row when the outbox folder ``outbox`` keeps refused mail."""
    first_seen = min((_time(r["started"]) for r in runs), default=None)
    by_task = {}
    for run in runs:
        by_task.setdefault(run["task"], []).append(run)
    result, seen = [], set()
    for entry in entries:
        due = entry.previous_due(now)
        next_due = entry.next_due(now)
        task_runs = by_task.get(entry.task) or [None]
        seen.add(entry.task)
        for run in task_runs:
            started = _time(run["started"]) if run else None
            ended = _time(run["ended"]) if run else None
            late = now - due > GRACE
            if started is None:
                overdue = late and first_seen is not None and first_seen < due
            else:
                overdue = late and started < due - datetime.timedelta(minutes=1)
            status = run["status"] if run else "never run"
            result.append(_row(entry.name, run, status, started, ended, next_due, overdue,
                               entry.describe()))
    for task, task_runs in by_task.items():
        if task not in seen and not task.startswith("_"):
            for run in task_runs:
                result.append(_row(task, run, run["status"], _time(run["started"]),
                                   _time(run["ended"]), None, False, "not scheduled"))
    result.sort(key=lambda r: (r["task"], r["database"]))
    refused = failed_mail(outbox) if outbox else None
    return result + [refused] if refused else result


def failed_mail(outbox_folder):
    """The ``mail outbox`` row: how many messages the mail server refused for good are kept
    in the outbox's ``failed/`` folder, the newest one's time and the folder; None when
    there are none."""
    import os

    from cioctasks import outbox

    folder = outbox.Outbox(outbox_folder).failed_folder
    kept = outbox.Outbox(folder).pending()  # failed/ holds .eml files as the outbox does
    if not kept:
        return None
    try:
        newest = datetime.datetime.fromtimestamp(os.stat(kept[-1]).st_mtime)
    except OSError:
        newest = None
    what = "message" if len(kept) == 1 else "messages"
    summary = f"{len(kept)} {what} the mail server refused, kept in {folder}"
    return _row("mail", {"database": "outbox", "summary": summary}, f"{len(kept)} refused",
                newest, None, None, False, "")


def _row(task, run, status, started, ended, next_due, overdue, schedule):
    duration = (ended - started).total_seconds() if started and ended else None
    failed = status not in ("ok", "skipped", "running", "never run")  # killed is a failure
    return {
        "task": task,
        "database": (run or {}).get("database") or "",
        "status": status,
        "started": started.isoformat(sep=" ", timespec="seconds") if started else None,
        "seconds": duration,
        "summary": (run or {}).get("summary") or "",
        "schedule": schedule,
        "next_due": next_due.isoformat(sep=" ", timespec="minutes") if next_due else None,
        "failed": failed,
        "overdue": overdue,
    }


def kind(run):
    """What a run's mark on the status page shows: ok, failed, killed, skipped, running or
    queued (exit 1 only because the mail server could not take its mail now: the messages
    wait in the outbox for the next run). An internal error is failed."""
    status = run["status"]
    if status in ("ok", "skipped", "killed", "running"):
        return status
    if status == "failed" and mail_queued_only(run.get("summary")):
        return "queued"
    return "failed"


def mail_queued_only(summary):
    """Whether a failed run's summary says that queued mail was its only problem: the
    summary is the task's own, then "; " and each problem (``taskrun``), so every part but
    the first must be the queued-mail one. Anything else counts as a failure."""
    parts = (summary or "").split("; ")
    others = [i for i, part in enumerate(parts) if not QUEUED.match(part)]
    return len(others) < len(parts) and others in ([], [0])


def history(state, entries, now, outbox=None, log_root=None):
    """The rows (``rows``), each with ``runs``: its last STRIP_RUNS runs, oldest first, and
    ``recorded_as``: the task name of its runs; the durations per task of the last
    CHART_DAYS days (``State.daily_durations``); and the log lines of the failed runs
    shown, {run id: excerpt} (``log_excerpts``; none without ``log_root``)."""
    rows_ = rows(state.last_runs(), entries, now, outbox)
    recorded = {entry.name: entry.task for entry in entries}
    for row in rows_:
        row["recorded_as"] = recorded.get(row["task"], row["task"])
        known = row["started"] is not None and row["task"] != "mail"
        row["runs"] = state.recent_runs(row["recorded_as"], row["database"],
                                        STRIP_RUNS) if known else []
    durations = state.daily_durations(now - datetime.timedelta(days=CHART_DAYS))
    excerpts = log_excerpts(log_root, failed_runs(rows_, now)) if log_root else {}
    return rows_, durations, excerpts


def failed_runs(rows_, now):
    """The failed and killed runs of the strips whose log lines the page shows, as
    (run, until): the last result of each row first, then the others newest first; at most
    MAX_EXCERPTS. ``until`` is the run's end, else the start of the next run, else now."""
    last, earlier = [], []
    for row in rows_:
        runs = row.get("runs") or []
        for index, run in enumerate(runs):
            if kind(run) not in ("failed", "killed"):
                continue
            following = runs[index + 1]["started"] if index + 1 < len(runs) else None
            until = _time(run["ended"] or following) or now
            (last if index == len(runs) - 1 else earlier).append((run, until))
    earlier.sort(key=lambda pair: pair[0]["started"], reverse=True)
    return (last + earlier)[:MAX_EXCERPTS]


def log_excerpts(log_root, wanted):
    """Given the log root and [(run, until)], return {run id: excerpt}: the lines each run
    wrote to its task's log (``<log_root>/cioctasks/<task>.log`` and its rotated backups
    ``.1`` to ``.5``), found by task, database and time. An excerpt is a dict: ``file``
    (the current log), ``lines`` [(path, line number, text)] (the last MAX_LINES) and
    ``left_out`` (how many earlier lines were left out)."""
    from cioctasks import logs

    by_task = {}
    for run, until in wanted:
        by_task.setdefault(run["task"], []).append((run, until))
    found = {}
    for task, runs in by_task.items():
        found.update(_task_excerpts(logs.log_path(log_root, task), runs))
    return found


def _task_excerpts(path, runs):
    second = datetime.timedelta(seconds=1)
    windows = []  # (low, high, prefix of its lines, lines)
    for run, until in runs:
        low = (_time(run["started"]) - second).isoformat(sep=" ", timespec="seconds")
        high = (until + second).isoformat(sep=" ", timespec="seconds")
        windows.append((low, high, f"{run['task']}[{run['database'] or '-'}] ", []))
    earliest = min(_time(run["started"]) for run, _ in runs).timestamp() - 2
    lowest, highest = min(w[0] for w in windows), max(w[1] for w in windows)
    backups = [path.with_name(f"{path.name}.{n}") for n in range(5, 0, -1)]
    for source in [*backups, path]:
        try:
            if source.stat().st_mtime < earliest:  # last written before these runs began
                continue
            handle = source.open(encoding="utf-8", errors="replace")
        except OSError:
            continue
        with handle:
            taking = []
            for number, line in enumerate(handle, 1):
                line = line.rstrip("\n")
                if len(line) > 24 and line[:4].isdigit() and line[4] == "-" and line[10] == " ":
                    stamp = line[:19]
                    if not lowest <= stamp <= highest:
                        taking = []
                        continue
                    rest = line[24:]
                    rest = rest[rest.find(" "):].lstrip(" ")  # after the level
                    taking = [w[3] for w in windows
                              if w[0] <= stamp <= w[1] and rest.startswith(w[2])]
                for lines in taking:  # a traceback's lines follow their record
                    lines.append((source, number, line))
    return {run["id"]: {"file": path, "lines": window[3][-MAX_LINES:],
                        "left_out": max(0, len(window[3]) - MAX_LINES)}
            for (run, _), window in zip(runs, windows)}


def marks(row):
    return " ".join(m for m, on in (("FAILED", row["failed"]), ("OVERDUE", row["overdue"])) if on)


def table(rows_):
    headers = ("task", "database", "result", "started", "took", "next due", "")
    lines = [(r["task"], r["database"] or "-", r["status"], r["started"] or "-",
              "-" if r["seconds"] is None else f"{r['seconds']:.1f}s", r["next_due"] or "-",
              marks(r)) for r in rows_]
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *lines)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip(),
           "  ".join("-" * w for w in widths)]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    # Why each failure failed, and where the refused mail is: the table has no room for it.
    reasons = [f"{' '.join(filter(None, (r['task'], r['database'])))}: {r['summary'][:300]}"
               for r in rows_ if r["failed"] and r["summary"]]
    if reasons:
        out += ["", *reasons]
    return "\n".join(out)


def page(rows_, now):
    """The status page of ``rows`` alone (no history: no strips, no charts, no logs)."""
    from cioctasks import statuspage

    return statuspage.render(rows_, now)
