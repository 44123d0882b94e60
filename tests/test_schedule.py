"""The schedule installed on cron and Task Scheduler, and status against it."""

import datetime
import json
import sys
import xml.etree.ElementTree as ElementTree

import pytest
from croniter import croniter

from cioctasks import schedule
from cioctasks.errors import ConfigError
from conftest import ROOT, SCRIPTS, assert_no_traceback, run_command

TOML = ROOT / "config" / "schedule.toml"
NS = {"t": schedule.TASK_NAMESPACE}
MONDAY = datetime.datetime(2026, 11, 23, 7, 0)


def test_every_task_script_of_the_toolkit_is_scheduled():
    entries = schedule.load(TOML)
    scheduled = {e.script for e in entries}
    assert {"cron/nightly_db_maintenance.py", "cron/cic_changes_for_vol.py",
            "cron/update_offline_tools_map.py", "cron/getinvolvedapi.py",
            "volnotify/volnotify.py", "downloads/newdownloads.py",
            "cron/process_logged_errors.py", "cron/geoip_download.py"} <= scheduled
    stats = next(e for e in entries if e.name == "newdownloads_stats")
    assert stats.args == ("-s",) and stats.days == ("Sun",)


def test_crontab_lines_parse_and_fire_when_the_schedule_says(cioc_env):
    result = run_command([sys.executable, "-m", "cioctasks", "schedule", "--crontab"], cioc_env)
    assert result.returncode == 0, result.stderr
    lines = [l for l in result.stdout.splitlines() if l and not l.startswith("#")]
    entries = {e.name: e for e in schedule.load(TOML)}
    comments = [l[2:].split(":")[0] for l in result.stdout.splitlines()[1:-1] if l.startswith("# ")]
    assert len(lines) == len(entries) == len(comments)
    for name, line in zip(comments, lines):
        spec, command = " ".join(line.split()[:5]), " ".join(line.split()[5:])
        assert croniter.is_valid(spec), line
        fired = croniter(spec, MONDAY).get_next(datetime.datetime)
        assert fired == entries[name].next_due(MONDAY), name
        assert "PYTHONUTF8=1" in command and "PATH=" in command and "--notify-errors" in command
        assert command.startswith(f"cd {ROOT} && ")
        assert sys.executable in command


def test_percent_signs_in_paths_are_escaped_for_cron():
    entry = schedule.Entry("t", "cron/x.py", ("--since", "50%"), at=datetime.time(1, 0))
    block = schedule.crontab_block([entry], "/opt/to%ols", "/usr/bin/python3")
    line = block.splitlines()[2]
    assert "%" not in line.replace("\\%", "")


def fake_crontab(tmp_path):
    table = tmp_path / "crontab.txt"
    script = tmp_path / "crontab"
    script.write_text(f"""#!/bin/sh
if [ "$1" = "-l" ]; then [ -f {table} ] && cat {table} || {{ echo "no crontab for user" >&2; exit 1; }}
else cat > {table}; fi
""", encoding="utf-8")
    script.chmod(0o755)
    return script, table


def test_install_crontab_merges_between_markers_and_keeps_other_lines(cioc_env, tmp_path):
    command, table = fake_crontab(tmp_path)
    table.write_text("MAILTO=ops@example.org\n15 * * * * /usr/local/bin/backup\n", encoding="utf-8")
    args = [sys.executable, "-m", "cioctasks", "schedule", "--install-crontab",
            "--crontab-command", command]
    first = run_command(args, cioc_env)
    assert first.returncode == 0, first.stderr
    once = table.read_text(encoding="utf-8")
    assert once.startswith("MAILTO=ops@example.org\n15 * * * * /usr/local/bin/backup\n")
    assert once.count(schedule.BEGIN) == 1
    again = run_command(args, cioc_env)
    assert again.returncode == 0
    assert table.read_text(encoding="utf-8") == once


def test_install_crontab_starts_a_table_for_a_user_without_one(cioc_env, tmp_path):
    command, table = fake_crontab(tmp_path)
    result = run_command([sys.executable, "-m", "cioctasks", "schedule", "--install-crontab",
                          "--crontab-command", command], cioc_env)
    assert result.returncode == 0, result.stderr
    assert table.read_text(encoding="utf-8").startswith(schedule.BEGIN)


def test_windows_task_files_have_what_task_scheduler_needs(cioc_env, tmp_path):
    out = tmp_path / "tasks"
    result = run_command([sys.executable, "-m", "cioctasks", "schedule", "--windows", out,
                          "--root", r"D:\tools\cioc"], cioc_env)
    assert result.returncode == 0, result.stderr
    entries = schedule.load(TOML)
    for entry in entries:
        data = (out / f"{entry.name}.xml").read_bytes()
        assert data.startswith(b"\xff\xfe")
        task = ElementTree.fromstring(data.decode("utf-16").split("?>", 1)[1])
        exec_ = task.find("t:Actions/t:Exec", NS)
        assert exec_.find("t:Command", NS).text == r"D:\tools\cioc\.venv\Scripts\pythonw.exe"
        assert exec_.find("t:WorkingDirectory", NS).text == r"D:\tools\cioc"
        assert exec_.find("t:Arguments", NS).text.startswith(entry.script.replace("/", "\\"))
        settings = task.find("t:Settings", NS)
        assert settings.find("t:MultipleInstancesPolicy", NS).text == "IgnoreNew"
        assert settings.find("t:StartWhenAvailable", NS).text == "true"
        assert settings.find("t:ExecutionTimeLimit", NS).text == f"PT{entry.time_limit_minutes}M"
        trigger = task.find("t:Triggers/t:CalendarTrigger", NS)
        assert trigger.find("t:StartBoundary", NS) is not None
        if entry.every_minutes:
            assert trigger.find("t:Repetition/t:Interval", NS).text == f"PT{entry.every_minutes}M"
        if entry.days:
            days = [d.tag.split("}")[1] for d in trigger.find("t:ScheduleByWeek/t:DaysOfWeek", NS)]
            assert days == [schedule.WINDOWS_DAYS[d] for d in entry.days]
    register = (out / "register.cmd").read_text(encoding="utf-8")
    assert register.count("schtasks /Create") == len(entries)


@pytest.mark.parametrize("text, reason", [
    ('[tasks.x]\nscript = "a.py"\n', "needs either at or every_minutes"),
    ('[tasks.x]\nscript = "a.py"\nat = "25:00"\n', "at must be HH:MM"),
    ('[tasks.x]\nscript = "a.py"\nevery_minutes = 7\n', "every_minutes must divide an hour"),
    ('[tasks.x]\nscript = "a.py"\nat = "01:00"\ndays = ["Funday"]\n', "days must be among"),
    ("[tasks.x\n", "schedule.toml"),
])
def test_a_bad_schedule_is_one_clear_error(tmp_path, text, reason):
    path = tmp_path / "schedule.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=reason):
        schedule.load(path)


def test_a_schedule_that_is_not_text_or_not_a_file_is_one_clear_error(tmp_path):
    binary = tmp_path / "schedule.toml"
    binary.write_bytes(b"\xff\xfe[tasks.x]\n")
    with pytest.raises(ConfigError, match="not a TOML file"):
        schedule.load(binary)
    with pytest.raises(ConfigError, match="cannot read the schedule"):
        schedule.load(tmp_path)


def test_records_as_names_the_task_in_the_history(tmp_path):
    path = tmp_path / "schedule.toml"
    path.write_text('[tasks.a]\nscript = "d/x.py"\nat = "01:00"\nrecords_as = "x_stats"\n'
                    '[tasks.b]\nscript = "d/x.py"\nat = "02:00"\n', encoding="utf-8")
    assert [entry.task for entry in schedule.load(path)] == ["x_stats", "x"]
    path.write_text('[tasks.a]\nscript = "d/x.py"\nat = "01:00"\nrecords_as = "../x"\n',
                    encoding="utf-8")
    with pytest.raises(ConfigError, match="records_as must be a task name"):
        schedule.load(path)


def test_due_times_follow_the_schedule():
    weekly = schedule.Entry("w", "x.py", at=datetime.time(6, 0), days=("Tue", "Fri"))
    assert weekly.previous_due(MONDAY) == datetime.datetime(2026, 11, 20, 6, 0)
    assert weekly.next_due(MONDAY) == datetime.datetime(2026, 11, 24, 6, 0)
    often = schedule.Entry("o", "x.py", every_minutes=15)
    assert often.previous_due(datetime.datetime(2026, 11, 23, 7, 14)) == datetime.datetime(2026, 11, 23, 7, 0)
    monthly = schedule.Entry("m", "x.py", at=datetime.time(5, 15), day_of_month=3)
    assert monthly.next_due(MONDAY) == datetime.datetime(2026, 12, 3, 5, 15)


def write_schedule(tmp_path, at):
    path = tmp_path / "schedule.toml"
    path.write_text(f'[tasks.plain_task]\nscript = "tests/scripts/plain_task.py"\nat = "{at}"\n'
                    '[tasks.never]\nscript = "cron/never.py"\nevery_minutes = 15\n',
                    encoding="utf-8")
    return path


def test_status_marks_failed_and_overdue_tasks_and_exits_1(cioc_env, tmp_path):
    run_command([sys.executable, SCRIPTS / "plain_task.py", "--fail"], cioc_env)
    path = write_schedule(tmp_path, "00:00")
    result = run_command([sys.executable, "-m", "cioctasks", "status", "--json",
                          "--schedule", path], cioc_env)
    assert result.returncode == 1
    assert_no_traceback(result)
    rows = {r["task"]: r for r in json.loads(result.stdout)}
    assert rows["plain_task"]["failed"] and rows["plain_task"]["status"] == "failed"
    assert rows["never"]["status"] == "never run" and not rows["never"]["overdue"]
    page = tmp_path / "status.html"
    html = run_command([sys.executable, "-m", "cioctasks", "status", "--html", page,
                        "--schedule", path], cioc_env)
    assert html.returncode == 1
    text = page.read_text(encoding="utf-8")
    assert '<tr class="failed">' in text and "plain_task" in text


def test_a_task_that_has_not_run_since_it_was_due_is_overdue(cioc_env, tmp_path):
    from cioctasks import state, status

    history = state.State(tmp_path / "state")
    run_id = history.start_run("plain_task")
    history.finish_run(run_id, "ok", 0, "fine")
    runs = history.last_runs()
    for run in runs:
        run["started"] = run["ended"] = "2026-11-20 00:10:00"
    entries = [schedule.Entry("plain_task", "x/plain_task.py", at=datetime.time(0, 0))]
    (row,) = status.rows(runs, entries, MONDAY)
    assert row["overdue"] and not row["failed"]
    fresh = [dict(r, started="2026-11-23 00:00:30", ended="2026-11-23 00:01:00") for r in runs]
    (row,) = status.rows(fresh, entries, MONDAY)
    assert not row["overdue"]
