"""The Prometheus textfile: what node_exporter (parsed here by prometheus_client) reads."""

import datetime
import os
import sys

import pytest

from conftest import SCRIPTS, assert_no_traceback, run_command

parser = pytest.importorskip("prometheus_client.parser")

from cioctasks import prometheus, state  # noqa: E402

PLAIN = SCRIPTS / "plain_task.py"
NOW = 1_800_000_000.0


def samples(text):
    """{(metric name, frozenset of labels): value} of a metrics text."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in parser.text_string_to_metric_families(text) for s in family.samples}


def labels(task, database=""):
    return frozenset({"task": task, "database": database}.items())


def local(text):
    return datetime.datetime.fromisoformat(text).timestamp()


def spool(folder, name, age):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"Subject: hello\r\n\r\nbody\r\n")
    os.utime(path, (NOW - age, NOW - age))


def test_a_failed_run_shows_exit_code_1_times_and_last_success_per_database(tmp_path):
    runs = [
        {"task": "volnotify", "database": "ciocdemo", "started": "2026-11-23 06:00:00.000",
         "ended": "2026-11-23 06:00:12.500", "status": "failed", "exit_code": 1},
        {"task": "plain_task", "database": "", "started": "2026-11-23 07:00:00.000",
         "ended": None, "status": "running", "exit_code": None},
        {"task": "_reports", "database": "", "started": "2026-11-23 07:00:00.000",
         "ended": None, "status": "ok", "exit_code": 0},
    ]
    success = datetime.datetime(2026, 11, 20, 6, 0)
    text = prometheus.render(runs, {("volnotify", "ciocdemo"): success}, None, NOW)
    found = samples(text)
    volnotify = labels("volnotify", "ciocdemo")
    assert found[("cioctasks_last_run_exit_code", volnotify)] == 1
    assert found[("cioctasks_last_run_start_timestamp_seconds", volnotify)] == local(
        "2026-11-23 06:00:00")
    assert found[("cioctasks_last_run_end_timestamp_seconds", volnotify)] == local(
        "2026-11-23 06:00:12.5")
    assert found[("cioctasks_last_run_duration_seconds", volnotify)] == 12.5
    assert found[("cioctasks_last_success_timestamp_seconds", volnotify)] == success.timestamp()
    # A run still going has a start only; the runner's bookkeeping is not a task.
    plain = {name for name, these in found if these == labels("plain_task")}
    assert plain == {"cioctasks_last_run_start_timestamp_seconds"}
    assert not any(dict(these).get("task") == "_reports" for _, these in found)
    assert "# TYPE cioctasks_last_run_exit_code gauge" in text and text.endswith("\n")


def test_the_outbox_counts_and_the_age_of_its_oldest_waiting_message(tmp_path):
    outbox = tmp_path / "outbox"
    spool(outbox, "a.eml", age=3600)
    spool(outbox, "b.eml", age=60)
    spool(outbox / "failed", "c.eml", age=99999)
    (outbox / "notes.txt").write_text("not a message")
    found = samples(prometheus.render([], {}, outbox, NOW))
    assert found[("cioctasks_outbox_messages", frozenset())] == 2
    assert found[("cioctasks_outbox_failed_messages", frozenset())] == 1
    assert found[("cioctasks_outbox_oldest_message_age_seconds", frozenset())] == 3600


def test_an_empty_or_missing_outbox_is_zero_messages_of_age_zero(tmp_path):
    found = samples(prometheus.render([], {}, tmp_path / "no outbox yet", NOW))
    assert found[("cioctasks_outbox_messages", frozenset())] == 0
    assert found[("cioctasks_outbox_failed_messages", frozenset())] == 0
    assert found[("cioctasks_outbox_oldest_message_age_seconds", frozenset())] == 0


def test_a_hostile_database_name_is_escaped_and_read_back_whole():
    hostile = 'evil"} 1\nfake_metric{x="\\'
    runs = [{"task": "volnotify", "database": hostile, "started": "2026-11-23 06:00:00",
             "ended": "2026-11-23 06:00:01", "status": "ok", "exit_code": 0}]
    text = prometheus.render(runs, {}, None, NOW)
    found = samples(text)
    assert found[("cioctasks_last_run_exit_code", labels("volnotify", hostile))] == 0
    assert not any(name == "fake_metric" for name, _ in found)
    assert "fake_metric" not in [line.split("{")[0] for line in text.splitlines()]


def test_write_replaces_the_file_whole_and_ends_it_with_a_line_feed(tmp_path):
    target = tmp_path / "textfile" / "cioctasks.prom"
    prometheus.write(target, "# first\n" * 1000)
    prometheus.write(target, "cioctasks_outbox_messages 3")
    assert target.read_text(encoding="utf-8") == "cioctasks_outbox_messages 3\n"
    assert os.listdir(target.parent) == ["cioctasks.prom"]  # no temporary left behind


def test_collect_reads_the_run_state(tmp_path):
    history = state.State(tmp_path / "state")
    run = history.start_run("volnotify", "ciocdemo")
    history.finish_run(run, "ok", 0, "done")
    run = history.start_run("volnotify", "ciocdemo")
    history.finish_run(run, "failed", 1, "broke")
    found = samples(prometheus.collect(history, tmp_path / "outbox", NOW))
    history.close()
    volnotify = labels("volnotify", "ciocdemo")
    assert found[("cioctasks_last_run_exit_code", volnotify)] == 1
    assert found[("cioctasks_last_success_timestamp_seconds", volnotify)] < NOW


def test_status_prometheus_writes_the_file_and_keeps_the_exit_code(cioc_env, tmp_path):
    failed = run_command([sys.executable, PLAIN, "--fail"], cioc_env)
    assert failed.returncode == 1
    target = tmp_path / "metrics.prom"
    result = run_command([sys.executable, "-m", "cioctasks", "status", "--prometheus", target],
                         cioc_env)
    assert result.returncode == 1, result.stderr
    assert_no_traceback(result)
    assert f"wrote {target}" in result.stdout
    found = samples(target.read_text(encoding="utf-8"))
    assert found[("cioctasks_last_run_exit_code", labels("plain_task"))] == 1


def test_a_task_run_writes_the_file_when_cioc_prometheus_file_is_set(cioc_env, tmp_path):
    target = tmp_path / "textfile" / "cioctasks.prom"
    env = {**cioc_env, "CIOC_PROMETHEUS_FILE": str(target)}
    result = run_command([sys.executable, PLAIN], env)
    assert result.returncode == 0, result.stderr
    found = samples(target.read_text(encoding="utf-8"))
    assert found[("cioctasks_last_run_exit_code", labels("plain_task"))] == 0
    assert ("cioctasks_last_success_timestamp_seconds", labels("plain_task")) in found
    assert found[("cioctasks_outbox_messages", frozenset())] == 0


def test_a_metrics_file_that_cannot_be_written_is_a_warning_and_the_run_still_exits_0(
        cioc_env, tmp_path):
    folder = tmp_path / "a folder"
    folder.mkdir()
    env = {**cioc_env, "CIOC_PROMETHEUS_FILE": str(folder)}
    result = run_command([sys.executable, PLAIN], env)
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result)
    log = (tmp_path / "logs" / "cioctasks" / "plain_task.log").read_text(encoding="utf-8")
    assert "WARNING" in log and "CIOC_PROMETHEUS_FILE: not written" in log
    assert os.listdir(folder) == []
    assert not list(tmp_path.glob(".a folder.*.tmp"))  # the temporary is gone
