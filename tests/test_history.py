"""Run history: every run kept CIOC_HISTORY_DAYS (90) days, pruned as runs end, never the
latest of a task and database; ``status --history TASK [-a DB]`` prints one task's runs."""

import datetime
import sys

import pytest

from conftest import SCRIPTS, assert_no_traceback, run_command
from cioctasks import config, state
from cioctasks.errors import ConfigError

NOW = datetime.datetime(2026, 11, 23, 9, 0)
DAY = datetime.timedelta(days=1)


def add(history, task, database, started, seconds=5, status="ok", summary="done"):
    ended = started + datetime.timedelta(seconds=seconds)
    return history.add_run(task, database, started, ended, status, 0 if status == "ok" else 1,
                           summary)


def kept(history, task, database=""):
    return [run["started"][:10] for run in history.history(task, [database] if database else ())]


def test_old_runs_go_but_the_latest_and_the_last_success_of_each_task_stay(tmp_path):
    history = state.State(tmp_path / "state")
    for days in (120, 100, 95, 10, 1):
        add(history, "volnotify", "ciocdemo", NOW - days * DAY)
    add(history, "monthly_task", "", NOW - 100 * DAY)  # has not run for 100 days
    add(history, "geoip_download", "", NOW - 130 * DAY)  # its last success
    add(history, "geoip_download", "", NOW - 120 * DAY, status="failed", summary="401")
    add(history, "geoip_download", "", NOW - 110 * DAY, status="failed", summary="401")
    assert history.prune(NOW) == 4
    assert kept(history, "volnotify", "ciocdemo") == ["2026-11-22", "2026-11-13"]
    assert kept(history, "monthly_task") == ["2026-08-15"]
    assert kept(history, "geoip_download") == ["2026-08-05", "2026-07-16"]
    assert history.last_success("geoip_download") == NOW - 130 * DAY
    history.close()


def test_a_run_that_ends_prunes_once_per_process(tmp_path):
    history = state.State(tmp_path / "state", history_days=30)
    add(history, "plain_task", "", datetime.datetime.now() - 40 * DAY)
    run_id = history.start_run("plain_task")
    history.finish_run(run_id, "ok", 0, "done")
    assert len(history.history("plain_task")) == 1
    add(history, "plain_task", "", datetime.datetime.now() - 40 * DAY)  # id after the run's
    add(history, "plain_task", "", datetime.datetime.now() - 39 * DAY)
    history.finish_run(history.start_run("plain_task"), "ok", 0, "done")
    assert len(history.history("plain_task")) == 4  # not again in this process
    history.close()
    reopened = state.State(tmp_path / "state", history_days=30)
    reopened.finish_run(reopened.start_run("plain_task"), "ok", 0, "done")
    assert len(reopened.history("plain_task")) == 3  # the two old ones went this time
    reopened.close()


def test_a_15_minute_task_on_fifty_databases_does_not_grow_the_state_for_ever(tmp_path):
    """Ten days of a run every 15 minutes on fifty databases, 3 days kept: once the first
    3 days are past, the number of runs and the size of state.sqlite stop growing."""
    history = state.State(tmp_path / "state", history_days=3)
    databases = [f"site{n:02}" for n in range(50)]
    start = datetime.datetime(2026, 11, 1)
    runs, sizes = [], []
    for day in range(10):
        with history._lock:  # one transaction per simulated day: fast
            history._db.execute("BEGIN")
            for quarter in range(96):
                began = start + day * DAY + datetime.timedelta(minutes=15 * quarter)
                history._db.executemany(
                    "INSERT INTO runs (task, database, started, ended, status, exit_code,"
                    " summary) VALUES ('often', ?, ?, ?, 'ok', 0, 'done')",
                    [(name, began.isoformat(sep=" "),
                      (began + datetime.timedelta(seconds=3)).isoformat(sep=" "))
                     for name in databases])
            history._db.execute("COMMIT")
        for quarter in range(96):  # each run's process prunes as it ends
            history.prune(start + day * DAY + datetime.timedelta(minutes=15 * quarter, seconds=5))
        runs.append(history.count_runs("often"))
        history._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        sizes.append(history.path.stat().st_size)
    assert runs[:3] == [96 * 50, 2 * 96 * 50, 3 * 96 * 50]
    assert runs[3:] == [3 * 96 * 50] * 7  # the last 3 days
    assert sizes[-1] <= sizes[4] * 1.05, sizes
    assert [run["status"] for run in history.last_runs()] == ["ok"] * 50
    history.close()


def test_history_days_is_read_from_the_settings_and_checked():
    def days(value):
        return state.history_days(config.from_mapping({"CIOC_HISTORY_DAYS": value}))

    assert state.history_days(config.from_mapping({})) == 90
    assert days("365") == 365
    with pytest.raises(ConfigError, match=r"CIOC_HISTORY_DAYS: not a whole number of days: '3\.5'"):
        days("3.5")
    with pytest.raises(ConfigError,
                       match="CIOC_HISTORY_DAYS: whole number of days out of range 1-3650: 0"):
        days("0")


def test_a_bad_history_days_stops_status_with_exit_2_and_one_line(cioc_env):
    result = run_command([sys.executable, "-m", "cioctasks", "status"],
                         dict(cioc_env, CIOC_HISTORY_DAYS="ninety"))
    assert result.returncode == 2
    assert_no_traceback(result)
    assert "CIOC_HISTORY_DAYS: not a whole number of days: 'ninety'" in result.stderr


def test_a_task_run_keeps_the_history_days_it_is_given(cioc_env, tmp_path):
    """The runner opens the run state with ``State.open(settings)``: CIOC_HISTORY_DAYS
    applies to the pruning at the end of every run, and a bad value is exit 2."""
    history = state.State(tmp_path / "state")
    old = add(history, "plain_task", "", datetime.datetime.now() - 20 * DAY)
    history.close()
    result = run_command([sys.executable, SCRIPTS / "plain_task.py"],
                         dict(cioc_env, CIOC_HISTORY_DAYS="30"))
    assert result.returncode == 0, result.stderr
    history = state.State(tmp_path / "state")
    assert old in [run["id"] for run in history.history("plain_task")]
    history.close()
    result = run_command([sys.executable, SCRIPTS / "plain_task.py"],
                         dict(cioc_env, CIOC_HISTORY_DAYS="10"))
    assert result.returncode == 0, result.stderr
    history = state.State(tmp_path / "state")
    assert old not in [run["id"] for run in history.history("plain_task")]
    history.close()
    bad = run_command([sys.executable, SCRIPTS / "plain_task.py"],
                      dict(cioc_env, CIOC_HISTORY_DAYS="-1"))
    assert bad.returncode == 2
    assert_no_traceback(bad)
    assert "CIOC_HISTORY_DAYS" in bad.stderr


@pytest.fixture
def recorded(cioc_env, tmp_path):
    """Three nights of volnotify on two databases (one failure) and one plain_task run."""
    history = state.State(tmp_path / "state")
    night = datetime.datetime.now().replace(hour=1, minute=0, second=0, microsecond=0)
    for days in (2, 1, 0):
        for minute, name in enumerate(("ciocdemo", "ciocnord")):
            failed = days == 1 and name == "ciocnord"
            add(history, "volnotify", name,
                night - days * DAY + datetime.timedelta(minutes=minute), seconds=12 + days,
                status="failed" if failed else "ok",
                summary="cannot reach the mail server" if failed else f"sent {days} messages")
    add(history, "plain_task", "", night, seconds=1)
    history.close()
    return cioc_env


def history_lines(result):
    """The table rows of ``status --history``: [started, ended, took, database, result]."""
    return [line.split()[:7] for line in result.stdout.splitlines()[3:]]


def test_status_history_prints_the_runs_of_one_task_newest_first(recorded):
    result = run_command([sys.executable, "-m", "cioctasks", "status", "--history", "volnotify"],
                         recorded)
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result)
    lines = result.stdout.splitlines()
    assert lines[0] == "volnotify: 6 runs kept (90 days of history), newest first"
    assert lines[1].split() == ["started", "ended", "took", "database", "result", "summary"]
    rows = history_lines(result)
    starts = [" ".join(row[:2]) for row in rows]
    assert starts == sorted(starts, reverse=True) and len(rows) == 6
    assert [row[5:7] for row in rows] == [["ciocnord", "ok"], ["ciocdemo", "ok"],
                                          ["ciocnord", "failed"], ["ciocdemo", "ok"],
                                          ["ciocnord", "ok"], ["ciocdemo", "ok"]]
    failed = [line for line in lines if " failed " in line]
    assert len(failed) == 1 and "ciocnord" in failed[0]
    assert "cannot reach the mail server" in failed[0]
    assert "13s" in failed[0]


def test_status_history_of_one_database_in_any_case(recorded):
    result = run_command([sys.executable, "-m", "cioctasks", "status", "--history", "volnotify",
                          "-a", "CIOCNORD", "--limit", "2"], recorded)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == ("volnotify: 3 runs kept (90 days of history), "
                                             "newest first; the last 2 shown (--limit 0 for all)")
    rows = history_lines(result)
    assert [row[5] for row in rows] == ["ciocnord", "ciocnord"]
    assert [row[6] for row in rows] == ["ok", "failed"]


def test_status_history_of_an_unknown_task_or_database_is_exit_2_with_one_line(recorded):
    result = run_command([sys.executable, "-m", "cioctasks", "status", "--history", "volnotfy"],
                         recorded)
    assert result.returncode == 2
    assert_no_traceback(result)
    (line,) = result.stderr.strip().splitlines()
    assert "unknown task 'volnotfy'; known tasks: " in line
    assert "volnotify" in line and "plain_task" in line and "nightly_db_maintenance" in line
    result = run_command([sys.executable, "-m", "cioctasks", "status", "--history", "volnotify",
                          "-a", "ciocsud"], recorded)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "volnotify has no runs on ciocsud; its databases: ciocdemo, ciocnord" in line


def test_status_history_of_a_scheduled_task_that_never_ran_says_so(recorded):
    result = run_command([sys.executable, "-m", "cioctasks", "status", "--history",
                          "nightly_db_maintenance"], recorded)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ("nightly_db_maintenance: 0 runs kept (90 days of "
                                     "history), newest first")


def test_status_history_as_json(recorded):
    import json

    result = run_command([sys.executable, "-m", "cioctasks", "status", "--history",
                          "plain_task", "--json"], recorded)
    assert result.returncode == 0, result.stderr
    (run,) = json.loads(result.stdout)
    assert (run["task"], run["status"], run["seconds"]) == ("plain_task", "ok", 1.0)


def test_database_and_history_flags_that_do_not_go_together_are_exit_2(recorded, tmp_path):
    alone = run_command([sys.executable, "-m", "cioctasks", "status", "-a", "ciocdemo"],
                        recorded)
    assert alone.returncode == 2
    assert "-a/--database goes with --history TASK" in alone.stderr
    both = run_command([sys.executable, "-m", "cioctasks", "status", "--history", "volnotify",
                        "--html", tmp_path / "page.html"], recorded)
    assert both.returncode == 2
    assert_no_traceback(both)
    assert not (tmp_path / "page.html").exists()


def test_watermarks_are_read_by_name_many_at_a_time_and_dropped_by_prefix(tmp_path):
    kept = state.State(tmp_path / "state")
    kept.set_many("volnotify", {f"db:1:w:{n:04d}": [n] for n in range(1200)})
    kept.set_many("volnotify", {"db:2:w:0001": [2]})
    kept.set_many("other", {"db:1:w:0001": ["other task"]})
    wanted = [f"db:1:w:{n:04d}" for n in range(0, 1300, 2)]  # more than one IN list; some absent
    assert kept.get_many("volnotify", wanted) == {key: [int(key[-4:])] for key in wanted
                                                  if int(key[-4:]) < 1200}
    assert kept.get_many("volnotify", []) == {}
    assert kept.delete_prefix("volnotify", "db:1:") == 1200
    assert kept.items("volnotify") == {"db:2:w:0001": [2]}
    assert kept.items("other") == {"db:1:w:0001": ["other task"]}
