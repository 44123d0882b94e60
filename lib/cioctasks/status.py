"""What the run history says about each scheduled task: last run, result, duration, next
due time, and whether it failed or is overdue. Shown as text, JSON or a static HTML page.

A task is overdue when it was due more than ``GRACE`` ago and has not started since; a task
that never ran is overdue once the run history is older than its last due time (a task
missing from the scheduler shows up, a new install does not cry wolf). A run whose process
is gone without recording its end is ``killed``: a failure. Mail the server refused for
good (kept in the outbox's ``failed/`` folder) is one more failed row, ``mail outbox``.
"""

import datetime
import html

GRACE = datetime.timedelta(minutes=30)


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
    """A static HTML page of the rows, for an operator's browser."""
    def cell(value):
        return f"<td>{html.escape(str(value if value is not None else '-'))}</td>"

    body = []
    for r in rows_:
        css = "failed" if r["failed"] else "overdue" if r["overdue"] else "ok"
        took = "-" if r["seconds"] is None else f"{r['seconds']:.1f}s"
        body.append(f'<tr class="{css}">' + "".join(cell(v) for v in (
            r["task"], r["database"] or "-", r["status"], r["started"], took, r["schedule"],
            r["next_due"], marks(r), r["summary"][:200])) + "</tr>")
    problems = sum(1 for r in rows_ if r["failed"] or r["overdue"])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>cioctasks status</title>
<style>body{{font-family:sans-serif}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}
tr.failed{{background:#fdd}} tr.overdue{{background:#ffd}}</style></head><body>
<h1>cioctasks status</h1>
<p>{html.escape(now.strftime('%Y-%m-%d %H:%M'))}: {len(rows_)} tasks and databases,
{problems} failed or overdue.</p>
<table><tr><th>task</th><th>database</th><th>result</th><th>started</th><th>took</th>
<th>schedule</th><th>next due</th><th></th><th>summary</th></tr>
{chr(10).join(body)}
</table></body></html>
"""
