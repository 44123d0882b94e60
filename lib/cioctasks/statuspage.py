"""The status page: one self-contained HTML file an operator opens on a server without
internet, to see in a few seconds what failed last night, what keeps failing and which task
is getting slower.

One row per task, failures first; one cell per database (a task that runs once, without
a database, gets one wide cell) with the last result and a strip of the last 30 runs as
coloured marks, the time and summary on hover; per task a chart of its durations over
the last 30 days in inline SVG; each failed run linked to the lines it wrote in its task's
log, copied into the page. No script, no web font, no network: inline CSS only, every
text from the run history escaped. ``python -m cioctasks status --html FILE`` writes it,
and with ``CIOC_STATUS_HTML`` set every task run rewrites it at its end (``update``), whole.
"""

import datetime
import html

from cioctasks import files, status

#: The colour of each kind of run (``status.kind``), and how the page names it.
COLOURS = {"ok": "#2e7d32", "failed": "#c62828", "killed": "#6a1b9a", "skipped": "#9e9e9e",
           "queued": "#e08600", "running": "#1565c0"}
LABELS = {"ok": "ok", "failed": "failed", "killed": "killed", "skipped": "skipped",
          "queued": "mail queued", "running": "running"}
CHART_WIDTH, CHART_HEIGHT = 150, 30

STYLE = """
body{font:13px/1.35 system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:12px;
color:#222}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:18px 0 6px}
h3{font-size:14px;margin:12px 0 4px}
.wrap{overflow-x:auto;max-width:100%}
table{border-collapse:collapse}
th,td{border:1px solid #d0d0d0;padding:3px 5px;text-align:left;vertical-align:top}
thead th{background:#f3f3f3;white-space:nowrap;font-weight:600}
th.task{font-weight:600;background:#fafafa;position:sticky;left:0;z-index:1}
.tk{display:flex;justify-content:space-between;gap:8px}
.chart{width:150px;flex:none}
.sched,.next{font-weight:normal;font-size:11px;color:#555;white-space:nowrap}
td.cell{white-space:nowrap;min-width:122px;font-size:12px}
td.cell.k-failed,td.cell.k-killed{background:#fde2e2}
td.cell.k-queued{background:#fff1d6} td.cell.overdue{background:#fff6c2}
td.cell.empty{color:#999}
.badge{display:inline-block;padding:0 4px;border-radius:3px;color:#fff;font-weight:600;
text-decoration:none}
.late{display:inline-block;padding:0 4px;border-radius:3px;background:#f9d71c;color:#000;
font-weight:600}
.took,.when{color:#444;white-space:nowrap} .when{font-variant-numeric:tabular-nums}
.strip{display:flex;gap:1px;height:12px;margin-top:2px}
.m{display:block;width:3px;height:12px;flex:none}
.scale{font-size:11px;color:#555;font-weight:normal}
table.attention td.summary-text{min-width:300px}
table.attention tr.failed td:nth-child(3){color:#c62828;font-weight:600}
table.attention tr.overdue td:nth-child(3){background:#fff6c2}
.legend .m{display:inline-block;vertical-align:middle;margin:0 3px 0 8px}
section.log{border-top:1px solid #ddd;margin-top:10px}
.summary-text{overflow-wrap:anywhere;margin:2px 0}
pre{background:#f6f6f6;padding:6px;overflow-x:auto;font-size:12px;margin:4px 0}
"""
STYLE += "".join(f".k-{kind} .badge,.badge.k-{kind},.m.k-{kind}{{background:{colour}}}\n"
                 for kind, colour in COLOURS.items())


def esc(value):
    """Any text from the run history, a log or a setting, made safe in HTML and attributes."""
    return html.escape(str(value), quote=True)


def took(seconds):
    """A duration as a few characters: 0.4s, 12s, 3m05s, 2h10m."""
    if seconds is None:
        return ""
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes}m{int(seconds % 60):02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def short(when):
    """A time of the run history (ISO text) as month-day hour:minute, the year left out."""
    return when[5:16] if when else ""


def seconds_of(run):
    if not (run.get("started") and run.get("ended")):
        return None
    started = datetime.datetime.fromisoformat(run["started"])
    return (datetime.datetime.fromisoformat(run["ended"]) - started).total_seconds()


def row_kind(row):
    """The kind of a row's last result, ``never`` when it never ran."""
    return "never" if row["status"] == "never run" else status.kind(row)


def is_outbox(row):
    return row["task"] == "mail" and row["database"] == "outbox"


def rank(task_rows):
    """0 for a task with a failed, killed or overdue last result, 1 for mail queued, 2 else."""
    kinds = {row_kind(r) for r in task_rows}
    if kinds & {"failed", "killed"} or any(r["overdue"] for r in task_rows):
        return 0
    return 1 if "queued" in kinds else 2


def render(rows, now, durations=None, excerpts=None):
    """The page of the status rows (``status.rows``, or ``status.history`` for the
    strips, the durations per task and the log excerpts per run id) as HTML text."""
    durations, excerpts = durations or {}, excerpts or {}
    tasks = {}
    for row in rows:
        if not is_outbox(row):
            tasks.setdefault(row["task"], []).append(row)
    ordered = sorted(tasks.items(), key=lambda item: (rank(item[1]), item[0]))
    columns = sorted({r["database"] for r in rows if r["database"] and not is_outbox(r)})
    if any(r["database"] == "" for t in tasks.values() for r in t if len(t) > 1):
        columns.insert(0, "")  # a task with runs both per database and as a whole
    counts = {kind: sum(row_kind(r) == kind for t in tasks.values() for r in t)
              for kind in ("failed", "killed", "queued")}
    overdue = sum(r["overdue"] for t in tasks.values() for r in t)
    outbox = [r for r in rows if is_outbox(r)]
    parts = [f"<b>{counts['failed']} failed</b>" if counts["failed"] else "0 failed",
             f"<b>{counts['killed']} killed</b>" if counts["killed"] else "",
             f"<b>{overdue} overdue</b>" if overdue else "",
             f"{counts['queued']} with mail queued" if counts["queued"] else "",
             f"<b>{outbox[0]['status']} mail</b>" if outbox else ""]
    body = [f"<h1>cioctasks status</h1>\n<p>{esc(now.strftime('%Y-%m-%d %H:%M'))}: "
            f"{len(tasks)} tasks, {', '.join(p for p in parts if p)}.</p>",
            legend()]
    attention = [r for _, task_rows in ordered for r in task_rows
                 if r["failed"] or r["overdue"]] + outbox
    if attention:
        body.append(attention_table(attention, excerpts))
    body += ["<h2>Tasks</h2>", task_table(ordered, columns, durations, excerpts, now)]
    shown = {run["id"]: (row, run) for _, task_rows in ordered for row in task_rows
             for run in row.get("runs") or () if run["id"] in excerpts}
    if shown:
        body.append("<h2>Log lines of the failed runs</h2>")
        body += [log_section(row, run, excerpts[run["id"]])
                 for row, run in sorted(shown.values(), key=lambda pair: pair[1]["started"],
                                        reverse=True)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width\">\n"
            f"<title>cioctasks status {esc(now.strftime('%Y-%m-%d %H:%M'))}</title>\n"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def legend():
    marks = "".join(f'<span class="m k-{kind}"></span>{LABELS[kind]}' for kind in COLOURS)
    return (f'<p class="legend">Each cell: the last result, then its last runs, oldest first:'
            f'{marks}</p>')


def attention_table(rows, excerpts):
    """What needs someone: the failed, killed, overdue and mail-queued results, and the
    mail the server refused for good, each with its summary and a link to its log lines."""
    lines, late = [], {}
    for row in rows:  # overdue ones as one line per task: there may be fifty databases
        if row["overdue"] and not row["failed"]:
            late.setdefault(row["task"], []).append(row)
    # Failures first, mail queued after them (sorted is stable), overdue last.
    for row in sorted(rows, key=lambda r: not is_outbox(r) and row_kind(r) == "queued"):
        if row["overdue"] and not row["failed"]:
            continue
        kind = "failed" if is_outbox(row) else row_kind(row)
        result = LABELS["queued"] if kind == "queued" else row["status"]
        css = "queued" if kind == "queued" else "failed"
        if row["overdue"]:
            result = f"{result}, overdue"
        runs = row.get("runs") or []
        link = (f' <a href="#log-{runs[-1]["id"]}">log lines</a>'
                if runs and runs[-1]["id"] in excerpts else "")
        lines.append(
            f'<tr class="{css}"><td>{esc(row["task"])}</td><td>{esc(row["database"] or "-")}'
            f'</td><td>{esc(result)}</td><td class="when">{esc((row["started"] or "never")[:16])}'
            f'</td><td class="took">{took(row["seconds"])}</td><td class="summary-text">'
            f'{esc(row["summary"][:500])}{link}</td></tr>')
    for task, late_rows in late.items():
        names = ", ".join(r["database"] for r in late_rows if r["database"]) or "-"
        lines.append(
            f'<tr class="overdue"><td>{esc(task)}</td><td class="summary-text">{esc(names)}'
            f'</td><td>overdue</td><td class="when">'
            f'{esc((min(r["started"] or "never" for r in late_rows))[:16])}</td><td></td>'
            f'<td class="summary-text">not started since it was due; '
            f'{esc(late_rows[0]["schedule"])}, next due <span class="when">'
            f'{esc(late_rows[0]["next_due"] or "-")}</span></td></tr>')
    return ('<h2>Needs attention</h2>\n<table class="attention"><thead><tr><th>task</th>'
            '<th>database</th><th>result</th><th>started</th><th>took</th><th>summary</th>'
            '</tr></thead><tbody>\n' + "\n".join(lines) + "\n</tbody></table>")


def task_table(ordered, columns, durations, excerpts, now):
    head = "".join(f"<th>{esc(name or '(whole task)')}</th>" for name in columns)
    lines = [f'<div class="wrap"><table>\n<thead><tr><th class="task">task, and its '
             f'durations over {status.CHART_DAYS} days</th>{head}</tr></thead><tbody>']
    for number, (task, task_rows) in enumerate(ordered, 1):
        css = ("failed", "queued", "ok")[rank(task_rows)]
        first = task_rows[0]
        next_due = (f'<div class="next">next <span class="when">{esc(first["next_due"])}</span>'
                    "</div>") if first["next_due"] else ""
        graph = chart(durations.get(first.get("recorded_as", task), ()), now)
        cells = [f'<th class="task" id="task-{number}"><div class="tk"><div>{esc(task)}'
                 f'<div class="sched">{esc(first["schedule"])}</div>{next_due}</div>'
                 f'{graph}</div></th>']
        by_database = {r["database"]: r for r in task_rows}
        if set(by_database) == {""}:
            cells.append(cell(by_database[""], excerpts, max(len(columns), 1)))
        else:
            for name in columns:
                row = by_database.get(name)
                cells.append(cell(row, excerpts) if row else '<td class="cell empty">-</td>')
        lines.append(f'<tr class="{css}">' + "".join(cells) + "</tr>")
    lines.append("</tbody></table></div>")
    return "\n".join(lines)


def cell(row, excerpts, span=1):
    kind = row_kind(row)
    colspan = f' colspan="{span}"' if span > 1 else ""
    overdue = " overdue" if row["overdue"] else ""
    late = ' <span class="late">overdue</span>' if row["overdue"] else ""
    if kind == "never":
        return f'<td class="cell k-never{overdue}"{colspan}>never run{late}</td>'
    runs = row.get("runs") or []
    label = LABELS[kind] if row["status"] != "error" else "internal error"
    hover = (f"{label} {row['started'] or ''} {took(row['seconds'])}"
             f"\n{row['summary'][:300]}").strip()
    last = runs[-1]["id"] if runs else None
    badge = (f'<a class="badge" href="#log-{last}">{esc(label)}</a>' if last in excerpts
             else f'<span class="badge">{esc(label)}</span>')
    strip = "".join(mark(run, excerpts) for run in runs)
    return (f'<td class="cell k-{kind}{overdue}"{colspan} title="{esc(hover)}">{badge} '
            f'<span class="took">{took(row["seconds"])}</span><br>'
            f'<span class="when">{esc(short(row["started"]))}</span>{late}'
            f'<div class="strip">{strip}</div></td>')


def mark(run, excerpts):
    kind = status.kind(run)
    hover = esc(f"{run['started'][:19]} {LABELS[kind]} {took(seconds_of(run))}"
                f"\n{(run['summary'] or '')[:300]}".strip())
    if run["id"] in excerpts:
        return f'<a class="m k-{kind}" href="#log-{run["id"]}" title="{hover}"></a>'
    return f'<span class="m k-{kind}" title="{hover}"></span>'


def chart(days, now):
    """The durations of a task's runs per day over the last CHART_DAYS days: a bar up to the
    longest run of the day (red when one failed) and a dark tick at the mean."""
    if not days:
        return '<div class="chart scale">no finished run</div>'
    first = now.date() - datetime.timedelta(days=status.CHART_DAYS - 1)
    top = max(longest or 0 for *_, longest in days) or 1
    step = CHART_WIDTH / status.CHART_DAYS
    shapes = []
    for day, runs, failed, queued, mean, longest in days:
        slot = (datetime.date.fromisoformat(day) - first).days
        if not 0 <= slot < status.CHART_DAYS:
            continue
        height = max(1.0, (longest or 0) / top * CHART_HEIGHT)
        tick = CHART_HEIGHT - (mean or 0) / top * CHART_HEIGHT
        colour = COLOURS["failed"] if failed else COLOURS["queued"] if queued else "#90caf9"
        what = (f"{day}: {runs} run{'s' if runs != 1 else ''}"
                f"{f', {failed} failed' if failed else ''}"
                f"{f', {queued} with mail queued' if queued else ''}; mean {took(mean)}, "
                f"longest {took(longest)}")
        x = slot * step
        shapes.append(f'<g><title>{esc(what)}</title><rect x="{x:.1f}" '
                      f'y="{CHART_HEIGHT - height:.1f}" width="{step - 1:.1f}" '
                      f'height="{height:.1f}" fill="{colour}"/><rect x="{x:.1f}" '
                      f'y="{min(tick, CHART_HEIGHT - 1.5):.1f}" width="{step - 1:.1f}" '
                      f'height="1.5" fill="#0d47a1"/></g>')
    return (f'<div class="chart"><svg xmlns="http://www.w3.org/2000/svg" width="{CHART_WIDTH}" '
            f'height="{CHART_HEIGHT}" viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT}" role="img">'
            f'<rect width="{CHART_WIDTH}" height="{CHART_HEIGHT}" fill="#f7f7f7"/>'
            f'{"".join(shapes)}</svg><div class="scale">longest {took(top)}</div></div>')


def log_section(row, run, excerpt):
    where = f" [{run['database']}]" if run["database"] else ""
    kind = status.kind(run)
    head = (f'<h3>{esc(row["task"])}{esc(where)}: {LABELS[kind]} '
            f'<span class="when">{esc(run["started"][:19])}</span> '
            f'{took(seconds_of(run))}</h3>')
    summary = f'<p class="summary-text">{esc(run["summary"] or "")}</p>'
    lines = excerpt["lines"]
    if not lines:
        where_text = (f"No line of this run is left in {excerpt['file']} or its backups "
                      "(rotated away, or the log root changed).")
        return (f'<section class="log" id="log-{run["id"]}">{head}{summary}'
                f'<p>{esc(where_text)}</p></section>')
    spans = {}
    for path, number, _ in lines:
        low, high = spans.get(path, (number, number))
        spans[path] = (min(low, number), max(high, number))
    named = "; ".join(f"{path}, lines {low}-{high}" for path, (low, high) in spans.items())
    left = (f" ({excerpt['left_out']} earlier lines left out)" if excerpt["left_out"] else "")
    text = "\n".join(f"{number:>6}  {line}" for _, number, line in lines)
    return (f'<section class="log" id="log-{run["id"]}">{head}{summary}'
            f'<p>{esc(named)}{esc(left)}</p><pre>{esc(text)}</pre></section>')


def build(state, entries, outbox=None, log_root=None, now=None):
    """The page of a run state (``state.State``) and the schedule's entries, as HTML."""
    now = now or datetime.datetime.now().replace(microsecond=0)
    rows, durations, excerpts = status.history(state, entries, now, outbox, log_root)
    return render(rows, now, durations, excerpts)


def write(path, text):
    """Write the page to ``path`` whole: a browser or a copy sees the old page or the new."""
    files.atomic_write(path, text)


def update(settings, path, schedule_path=None):
    """Rewrite the page of ``settings``' run state, schedule, outbox and logs at ``path``;
    what the runner calls at the end of every run when ``CIOC_STATUS_HTML`` is set. Raise
    ConfigError, TaskError or OSError if it cannot."""
    from cioctasks import schedule
    from cioctasks import state as run_state

    entries = schedule.load(schedule_path or schedule.DEFAULT_SCHEDULE)
    history = run_state.State.open(settings)
    try:
        text = build(history, entries, settings.mail_outbox, settings.log_root)
    finally:
        history.close()
    write(path, text)
