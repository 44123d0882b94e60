"""The schedule installed on cron and Task Scheduler, and status against it."""

import argparse
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
        assert f"; cd {ROOT} 2>>" in command
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


# Unattended: nothing hangs, no failure vanishes, nothing of the operator's is touched.

def cron_commands(block):
    """The commands of a crontab block, without their five time fields."""
    return [line.split(None, 5)[5] for line in block.splitlines()
            if line and not line.startswith("#")]


def run_as_cron(command, tmp_path):
    """Run a crontab command as cron does: /bin/sh -c, a bare environment, stdout and
    stderr kept to see what would have been left to cron."""
    environ = {"HOME": str(tmp_path), "LOGNAME": "cron", "SHELL": "/bin/sh",
               "PATH": "/usr/bin:/bin"}
    return run_command(["/bin/sh", "-c", command.replace("\\%", "%")], environ, cwd="/")


def test_a_task_cron_cannot_start_leaves_its_error_and_exit_status_in_the_named_log(
        cioc_env, tmp_path):
    gone = tmp_path / "moved" / ".venv" / "bin" / "python"
    result = run_command([sys.executable, "-m", "cioctasks", "schedule", "--crontab",
                          "--python", gone], cioc_env)
    assert result.returncode == 0, result.stderr
    assert f"--python {gone}: no such file" in result.stderr
    log = tmp_path / "logs" / "cioctasks" / "cron-stderr.log"
    first = cron_commands(result.stdout)[0]
    ran = run_as_cron(first, tmp_path)
    assert ran.stdout == ran.stderr == ""  # nothing was left for cron to throw away
    text = log.read_text(encoding="utf-8")
    assert f"{gone}: not found" in text
    assert "nightly_db_maintenance: exit status 127" in text.splitlines()[-1]


def test_a_failing_task_under_cron_leaves_its_one_line_error_in_the_log(cioc_env, tmp_path):
    env_file = tmp_path / "cioc.env"
    env_file.write_text("".join(f"{key}={value}\n" for key, value in cioc_env.items()
                                if key.startswith("CIOC_")), encoding="utf-8")
    table = tmp_path / "schedule.toml"
    table.write_text('[tasks.plain_task]\nscript = "tests/scripts/plain_task.py"\n'
                     'args = ["--fail"]\nat = "01:00"\n', encoding="utf-8")
    result = run_command([sys.executable, "-m", "cioctasks", "schedule", "--crontab",
                          "--schedule", table], dict(cioc_env, CIOC_ENV_FILE=str(env_file)))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # an env file, a Python that is there: nothing to warn about
    (command,) = cron_commands(result.stdout)
    assert f"CIOC_ENV_FILE={env_file}" in command
    ran = run_as_cron(command, tmp_path)
    assert ran.stdout == ran.stderr == ""
    lines = (tmp_path / "logs" / "cioctasks" / "cron-stderr.log").read_text(
        encoding="utf-8").splitlines()
    assert "the work failed" in lines[0] and "hunter2secret" not in lines[0]
    assert lines[-1].endswith("plain_task: exit status 1")


def test_crontab_lines_generated_without_an_env_file_are_warned_about(cioc_env):
    result = run_command([sys.executable, "-m", "cioctasks", "schedule", "--crontab"], cioc_env)
    assert result.returncode == 0, result.stderr
    assert "no .env file" in result.stderr and "CIOC_ENV_FILE" in result.stderr
    assert "CIOC_ENV_FILE" not in result.stdout
    assert result.stdout.startswith(schedule.BEGIN)  # the block alone, still pipeable


USER_LINES = "MAILTO=ops@example.org\n15 * * * * /usr/local/bin/backup\n"


@pytest.mark.parametrize("table, where", [
    (f"{USER_LINES}{schedule.BEGIN}\n0 2 * * * /usr/local/bin/mine\n",
     "'# BEGIN cioctasks' on line 3"),
    (f"{USER_LINES}0 2 * * * /usr/local/bin/mine\n{schedule.END}\n",
     "'# END cioctasks' on line 4"),
    (f"{schedule.END}\n{USER_LINES}{schedule.BEGIN}\n", "'# END cioctasks' on line 1"),
    (f"{schedule.BEGIN}\n{schedule.END}\n{USER_LINES}{schedule.BEGIN}\n{schedule.END}\n",
     "'# BEGIN cioctasks' on line 5"),
])
def test_install_crontab_refuses_a_damaged_block_and_changes_nothing(cioc_env, tmp_path,
                                                                      table, where):
    command, path = fake_crontab(tmp_path)
    path.write_text(table, encoding="utf-8")
    args = [sys.executable, "-m", "cioctasks", "schedule", "--install-crontab",
            "--crontab-command", command]
    for _ in range(2):  # the second run is where a user line used to go
        result = run_command(args, cioc_env)
        assert result.returncode == 2
        assert_no_traceback(result)
        assert "block of the crontab is damaged" in result.stderr and where in result.stderr
        assert "nothing was changed" in result.stderr
        assert path.read_text(encoding="utf-8") == table


def test_install_crontab_says_what_it_changed(cioc_env, tmp_path):
    command, path = fake_crontab(tmp_path)
    path.write_text(USER_LINES, encoding="utf-8")
    args = [sys.executable, "-m", "cioctasks", "schedule", "--install-crontab",
            "--crontab-command", command]
    tasks = len(schedule.load(TOML))
    first = run_command(args, cioc_env)
    assert first.returncode == 0, first.stderr
    assert (f"crontab: added the cioctasks block ({tasks} tasks) after your 2 other lines, "
            "unchanged; task errors go to ") in first.stdout
    assert "cron-stderr.log" in first.stdout
    again = run_command(args, cioc_env)
    assert "nothing to change" in again.stdout
    one_task = tmp_path / "schedule.toml"
    one_task.write_text('[tasks.volnotify]\nscript = "volnotify/volnotify.py"\nat = "07:00"\n',
                        encoding="utf-8")
    changed = run_command([*args, "--schedule", one_task], cioc_env)
    assert changed.returncode == 0, changed.stderr
    assert ("updated the cioctasks block (1 task): 2 lines added, "
            f"{2 * tasks} removed; your 2 other lines unchanged") in changed.stdout
    assert path.read_text(encoding="utf-8").startswith(USER_LINES)


def test_install_crontab_leaves_a_crontab_it_cannot_read_alone(cioc_env, tmp_path):
    table = tmp_path / "crontab.txt"
    table.write_text(USER_LINES, encoding="utf-8")
    command = tmp_path / "crontab"
    command.write_text(f"""#!/bin/sh
if [ "$1" = "-l" ]; then echo "crontab: cannot open your crontab: Permission denied" >&2; exit 1
else cat > {table}; fi
""", encoding="utf-8")
    command.chmod(0o755)
    result = run_command([sys.executable, "-m", "cioctasks", "schedule", "--install-crontab",
                          "--crontab-command", command], cioc_env)
    assert result.returncode == 1
    assert "the crontab is left alone" in result.stderr and "Permission denied" in result.stderr
    assert table.read_text(encoding="utf-8") == USER_LINES


@pytest.mark.parametrize("before, after", [
    ("", ""),
    (USER_LINES, ""),
    (USER_LINES, "# mine\n30 4 * * * /usr/local/bin/other  \n\n"),
    ("", "0 3 * * * /usr/local/bin/after\n"),
])
def test_merging_keeps_every_line_outside_the_block(before, after):
    old = schedule.crontab_block([schedule.Entry("a", "a.py", at=datetime.time(1, 0))],
                                 "/opt/cioc", "/usr/bin/python3")
    new = schedule.crontab_block([schedule.Entry("b", "b.py", every_minutes=5)],
                                 "/opt/cioc", "/usr/bin/python3")
    merged = schedule.merge_crontab(before + old + after, new)
    assert merged == before + new + after
    assert schedule.merge_crontab(merged, new) == merged


def test_windows_task_files_run_the_python_given(cioc_env, tmp_path):
    out = tmp_path / "tasks"
    result = run_command([sys.executable, "-m", "cioctasks", "schedule", "--windows", out,
                          "--root", r"D:\tools\cioc", "--python", r"C:\Python311\pythonw.exe"],
                         cioc_env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    for path in out.glob("*.xml"):
        task = ElementTree.fromstring(path.read_bytes().decode("utf-16").split("?>", 1)[1])
        assert task.find("t:Actions/t:Exec/t:Command", NS).text == r"C:\Python311\pythonw.exe"


@pytest.mark.parametrize("flags, warning", [
    ([], f"--root: {ROOT} is not a Windows path"),
    (["--root", "D:toolscioc"], "--root: D:toolscioc has no backslash after D:"),
    (["--root", r"D:\tools\cioc", "--python", "/usr/bin/python3"],
     "--python: /usr/bin/python3 is not a Windows path"),
])
def test_windows_task_files_with_paths_windows_cannot_use_are_warned_about(cioc_env, tmp_path,
                                                                          flags, warning):
    result = run_command([sys.executable, "-m", "cioctasks", "schedule", "--windows",
                          tmp_path / "tasks", *flags], cioc_env)
    assert result.returncode == 0, result.stderr
    assert warning in result.stderr and "will not run on Windows" in result.stderr


def test_register_cmd_says_and_sets_the_account_the_tasks_run_as(cioc_env, tmp_path):
    out = tmp_path / "tasks"
    result = run_command([sys.executable, "-m", "cioctasks", "schedule", "--windows", out,
                          "--root", r"D:\tools\cioc"], cioc_env)
    assert result.returncode == 0, result.stderr
    register = (out / "register.cmd").read_bytes().decode("utf-8")
    assert "\r\n" in register and "\n" not in register.replace("\r\n", "")
    assert "register.cmd [ACCOUNT]" in register
    assert 'set "ACCOUNT=%~1"' in register and 'set RUNAS=/RU "%ACCOUNT%" /RP *' in register
    creates = [line for line in register.splitlines() if line.startswith("schtasks /Create")]
    assert len(creates) == len(schedule.load(TOML))
    assert all(line.endswith("%RUNAS% || exit /b 1") for line in creates)


def test_every_flag_of_the_schedule_command_has_a_whole_help(cioc_env):
    from cioctasks import runner

    parser = runner.build_parser("schedule", schedule.COMMAND_DESCRIPTION, False,
                                 schedule.add_arguments)
    for action in parser._actions:
        if action.help != argparse.SUPPRESS:
            assert action.help and not action.help.endswith((",", ";", ":")), action.dest
    result = run_command([sys.executable, "-m", "cioctasks", "schedule", "--help"], cioc_env)
    assert result.returncode == 0
    assert "--schedule FILE    the schedule to read" in result.stdout
    listing = run_command([sys.executable, "-m", "cioctasks", "--help"], cioc_env).stdout
    commands = [line for line in listing.splitlines() if line.startswith("  ")
                and not line.startswith("    ")]
    assert [line.split()[0] for line in commands] == ["check", "status", "schedule"]
    assert all(line.endswith(".") for line in commands), commands
