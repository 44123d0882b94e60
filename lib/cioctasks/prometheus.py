"""The run history and the outbox as Prometheus metrics, in the text exposition format that
node_exporter's textfile collector reads from ``*.prom`` files.

Per task and database: the last run's start, end, duration and exit code, and the start of
the last successful run; for the outbox: the messages waiting, those the mail server refused
for good (``failed/``) and the age of the oldest waiting one. Times are Unix timestamps (the
run state keeps local times). The file is written whole (``files.atomic_write``), so the
collector never reads half of it; ``status --prometheus FILE`` writes it, and so does every
task run when ``CIOC_PROMETHEUS_FILE`` is set.
"""

import datetime
import os
import time

from cioctasks import files, outbox

#: (name, help) of each metric family, in the order they are written.
METRICS = (
    ("cioctasks_last_run_start_timestamp_seconds", "When the last run started."),
    ("cioctasks_last_run_end_timestamp_seconds", "When the last run ended."),
    ("cioctasks_last_run_duration_seconds", "How long the last run took."),
    ("cioctasks_last_run_exit_code",
     "Exit code of the last run: 0 ok or skipped, 1 failed or killed, 2 configuration,"
     " 70 internal error."),
    ("cioctasks_last_success_timestamp_seconds", "When the last successful run started."),
    ("cioctasks_outbox_messages", "Messages waiting in the outbox for the mail server."),
    ("cioctasks_outbox_failed_messages",
     "Messages the mail server refused for good, kept in the outbox's failed folder."),
    ("cioctasks_outbox_oldest_message_age_seconds",
     "Age of the oldest message waiting in the outbox (0 when none)."),
)


def _timestamp(text):
    """A Unix timestamp from a local ISO time of the run state, or None."""
    return datetime.datetime.fromisoformat(text).timestamp() if text else None


def escape(value):
    """A label value escaped as the text format requires: backslash, quote, line feed."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value):
    if isinstance(value, int):
        return str(value)
    return repr(round(float(value), 3))


def _mtimes(folder):
    """The modification times of the messages spooled in ``folder``."""
    times = []
    for path in outbox.Outbox(folder).pending():
        try:
            times.append(os.stat(path).st_mtime)
        except OSError:  # sent by a task just now
            pass
    return times


def render(runs, successes, outbox_folder, now):
    """Given the last runs (``state.State.last_runs``), the start of the last successful run
    per (task, database) (``{(task, database): datetime}``), the outbox folder (or None) and
    ``now`` (a Unix timestamp), return the metrics as text ending with a line feed."""
    samples = {name: [] for name, _ in METRICS}
    for run in runs:
        if run["task"].startswith("_"):  # the runner's own bookkeeping, not a task
            continue
        labels = f'task="{escape(run["task"])}",database="{escape(run["database"] or "")}"'
        started, ended = _timestamp(run["started"]), _timestamp(run["ended"])
        values = {
            "cioctasks_last_run_start_timestamp_seconds": started,
            "cioctasks_last_run_end_timestamp_seconds": ended,
            "cioctasks_last_run_duration_seconds": ended - started if ended else None,
            "cioctasks_last_run_exit_code": run["exit_code"],
        }
        success = successes.get((run["task"], run["database"] or ""))
        if success is not None:
            values["cioctasks_last_success_timestamp_seconds"] = success.timestamp()
        for name, value in values.items():
            if value is not None:  # a run still going has no end, duration or exit code
                samples[name].append(f"{name}{{{labels}}} {_number(value)}")
    if outbox_folder is not None:
        box = outbox.Outbox(outbox_folder)
        waiting = _mtimes(box.folder)
        oldest = max(0.0, now - min(waiting)) if waiting else 0
        samples["cioctasks_outbox_messages"].append(f"cioctasks_outbox_messages {len(waiting)}")
        samples["cioctasks_outbox_failed_messages"].append(
            f"cioctasks_outbox_failed_messages {len(_mtimes(box.failed_folder))}")
        samples["cioctasks_outbox_oldest_message_age_seconds"].append(
            f"cioctasks_outbox_oldest_message_age_seconds {_number(oldest)}")
    lines = []
    for name, help_text in METRICS:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", *samples[name]]
    return "\n".join(lines) + "\n"


def write(path, text):
    """Write ``text`` to ``path`` whole (a reader sees the old file or the new one), ending
    with a line feed as node_exporter requires."""
    files.atomic_write(path, text if text.endswith("\n") else text + "\n")


def collect(state, outbox_folder, now=None):
    """The metrics of the run state ``state`` (a ``state.State``) and the outbox as text."""
    runs = state.last_runs()
    successes = {(r["task"], r["database"] or ""): state.last_success(r["task"], r["database"])
                 for r in runs}
    return render(runs, successes, outbox_folder, time.time() if now is None else now)


def update(settings, path):
    """Write the metrics of ``settings``' run state and outbox to ``path``. Raise OSError or
    TaskError if it cannot."""
    from cioctasks import state as run_state

    state = run_state.State(settings.state_dir)
    try:
        text = collect(state, settings.mail_outbox)
    finally:
        state.close()
    write(path, text)
