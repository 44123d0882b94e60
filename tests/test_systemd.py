"""The schedule as systemd timers: the units written (checked by systemd-analyze where it is
installed), and their installation through systemctl (a fake one first on PATH that keeps
which timers are enabled, as systemd would)."""

import datetime
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from cioctasks import schedule, systemd
from conftest import ROOT, assert_no_traceback, run_command

TOML = ROOT / "config" / "schedule.toml"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")

SMALL = """
[tasks.nightly]
script = "cron/nightly_db_maintenance.py"
at = "01:00"
time_limit_minutes = 180

[tasks.errors]
script = "cron/process_logged_errors.py"
every_minutes = 15
time_limit_minutes = 10
"""


def units_of(folder):
    return {path.name: path.read_text(encoding="utf-8") for path in sorted(folder.iterdir())}


def setting(text, key):
    """The values of ``key=`` in a unit's text."""
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(f"{key}=")]


def verify(folder, user=False, tmp_path=None):
    """Run systemd-analyze verify on every unit in ``folder``; return (exit code, the lines
    it printed about our units). Without systemd as PID 1 it needs no manager, but it does
    check that ExecStart='s program exists; --user needs an XDG_RUNTIME_DIR."""
    environ = dict(os.environ, SYSTEMD_LOG_LEVEL="info", SYSTEMD_LOG_COLOR="0")
    if user:
        runtime = tmp_path / "runtime"
        runtime.mkdir(mode=0o700, exist_ok=True)
        environ["XDG_RUNTIME_DIR"] = str(runtime)
    units = [str(path) for path in sorted(folder.iterdir())]
    result = subprocess.run(
        [ANALYZE, "verify", "--man=no", "--generators=no", *(["--user"] if user else []),
         *units], capture_output=True, text=True, env=environ, cwd=folder, timeout=60)
    said = [line for line in (result.stdout + result.stderr).splitlines()
            if systemd.PREFIX in line]
    return result.returncode, said


@pytest.fixture
def env_file(tmp_path, cioc_env):
    path = tmp_path / "site.env"
    path.write_text("CIOC_TASK_NOTIFY_EMAIL=tasks@example.org\n", encoding="utf-8")
    cioc_env["CIOC_ENV_FILE"] = str(path)
    return path


def write_units(cioc_env, folder, *options):
    result = run_command([sys.executable, "-m", "cioctasks", "schedule", "--systemd", folder,
                          *options], cioc_env)
    assert_no_traceback(result)
    return result


def test_a_service_and_a_timer_per_entry_run_the_task_as_cron_would(cioc_env, env_file,
                                                                    tmp_path):
    folder = tmp_path / "units"
    result = write_units(cioc_env, folder)
    assert result.returncode == 0, result.stderr
    entries = schedule.load(TOML)
    units = units_of(folder)
    assert len(units) == 2 * len(entries)
    for entry in entries:
        service = units[f"cioctasks-{entry.name}.service"]
        timer = units[f"cioctasks-{entry.name}.timer"]
        for text in (service, timer):
            assert text.startswith(systemd.MARK)
            assert "--systemd DIR" in text.splitlines()[0]
        command = " ".join([sys.executable, entry.script, *entry.args, "--notify-errors"])
        assert setting(service, "ExecStart") == [command]
        assert setting(service, "WorkingDirectory") == [str(ROOT)]
        assert f'"CIOC_ENV_FILE={env_file}"' in setting(service, "Environment")
        assert setting(service, "TimeoutStartSec") == [f"{entry.time_limit_minutes}min"]
        assert setting(service, "User") == [systemd.current_user()]
        assert setting(service, "SuccessExitStatus") == ["75"]
        assert setting(timer, "OnCalendar") == [systemd.on_calendar(entry)]
        assert setting(timer, "Persistent") == ["true"]
        assert setting(timer, "WantedBy") == ["timers.target"]
    assert "24 unit files written" in result.stdout


def test_a_service_run_as_systemd_runs_it_reads_the_env_file_and_mails_its_failure(
        cioc_env, tmp_path):
    """What systemd does with a service: its folder, only its Environment= and the journal's
    socket for output, which is a console to the runner: --notify-errors mails the failure
    (CIOC_UDL_BASE, read from the .env through CIOC_ENV_FILE, does not exist)."""
    import shlex
    import socket

    env = tmp_path / "site.env"
    env.write_text("".join(f"{key}={value}\n" for key, value in cioc_env.items()
                           if key.startswith("CIOC_")), encoding="utf-8")
    cioc_env["CIOC_ENV_FILE"] = str(env)
    folder = tmp_path / "units"
    write_units(cioc_env, folder)
    service = units_of(folder)["cioctasks-nightly_db_maintenance.service"]
    environ = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
    for line in setting(service, "Environment"):
        environ.update(word.split("=", 1) for word in shlex.split(line))
    journal, ours = socket.socketpair()
    with journal, ours:
        result = subprocess.run(shlex.split(setting(service, "ExecStart")[0]), env=environ,
                                cwd=setting(service, "WorkingDirectory")[0], stdout=ours,
                                stderr=ours, timeout=120)
        ours.close()
        said = journal.makefile(encoding="utf-8").read()
    assert result.returncode == 2
    assert said.strip() == (f"nightly_db_maintenance: CIOC_UDL_BASE: {tmp_path / 'UDLs'} is "
                            "not a folder (it holds <Database>/cron_job_runner.udl)")
    mailed = list((tmp_path / "mail").glob("*.eml"))
    assert len(mailed) == 1 and "CIOC_UDL_BASE" in mailed[0].read_text(encoding="utf-8")


@needs_analyze
def test_systemd_analyze_verify_finds_nothing_to_say_about_the_units(cioc_env, env_file,
                                                                      tmp_path):
    folder = tmp_path / "units"
    write_units(cioc_env, folder)
    assert verify(folder) == (0, [])


@needs_analyze
def test_verify_does_catch_a_broken_unit(cioc_env, env_file, tmp_path):
    """The check above means something: a mistyped key, a program that is not there and a
    calendar that cannot be are each reported."""
    folder = tmp_path / "units"
    write_units(cioc_env, folder)
    service = folder / "cioctasks-volnotify.service"
    text = service.read_text(encoding="utf-8")
    service.write_text(text.replace("Type=oneshot", "Typ=oneshot"), encoding="utf-8")
    assert any("Unknown key" in line for line in verify(folder)[1])
    service.write_text(text.replace(sys.executable, "/nonexistent/python"), encoding="utf-8")
    assert verify(folder)[0] != 0
    service.write_text(text, encoding="utf-8")
    timer = folder / "cioctasks-volnotify.timer"
    timer.write_text(timer.read_text(encoding="utf-8").replace("06:00:00", "25:00:00"),
                     encoding="utf-8")
    code, said = verify(folder)
    assert code != 0 and any("calendar" in line for line in said)


def elapses(expression, base, count):
    """The next ``count`` elapses of an OnCalendar= expression after ``base`` (UTC)."""
    result = subprocess.run(
        [ANALYZE, "calendar", f"--iterations={count}",
         f"--base-time={base:%Y-%m-%d %H:%M:%S} UTC", expression],
        capture_output=True, text=True, env=dict(os.environ, TZ="UTC"), timeout=60)
    if "--base-time" in result.stderr:
        pytest.skip("this systemd-analyze has no --base-time")
    assert result.returncode == 0, result.stderr
    found = re.findall(r"(?:Next elapse|Iter\. #\d+): \w+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)",
                       result.stdout)
    return [datetime.datetime.fromisoformat(moment) for moment in found]


@needs_analyze
@pytest.mark.parametrize("base", [datetime.datetime(2026, 11, 23, 7, 0),    # a Monday
                                  datetime.datetime(2026, 12, 31, 23, 59),  # year's end
                                  datetime.datetime(2027, 2, 3, 5, 15)])    # on a due time
def test_each_timer_elapses_when_the_schedule_says(base):
    entries = schedule.load(TOML) + [
        schedule.Entry("hourly", "x.py", every_minutes=60),
        schedule.Entry("each", "x.py", every_minutes=1),
        schedule.Entry("weekend", "x.py", at=datetime.time(23, 45), days=("Sat", "Sun"))]
    for entry in entries:
        expected, moment = [], base
        for _ in range(3):
            moment = entry.next_due(moment)
            expected.append(moment)
        assert elapses(systemd.on_calendar(entry), base, 3) == expected, entry.name


@needs_analyze
def test_user_units_run_as_their_manager_and_verify_in_user_mode(cioc_env, env_file,
                                                                   tmp_path):
    folder = tmp_path / "units"
    result = write_units(cioc_env, folder, "--user-units")
    assert result.returncode == 0, result.stderr
    services = [text for name, text in units_of(folder).items() if name.endswith(".service")]
    assert services and all(not setting(text, "User") for text in services)
    assert all("network-online" not in text for text in services)
    assert verify(folder, user=True, tmp_path=tmp_path) == (0, [])
    refused = write_units(cioc_env, folder, "--user-units", "--run-as", "cioc")
    assert refused.returncode == 2 and "--run-as is for system units" in refused.stderr


@needs_analyze
def test_odd_names_paths_and_arguments_are_escaped_as_systemd_reads_them(cioc_env,
                                                                         tmp_path):
    odd = tmp_path / "odd.toml"
    odd.write_text('[tasks."café-1"]\nscript = "cron/x y.py"\n'
                   'args = ["50%", "$HOME", "a\\"b", "c\\\\d", ";", "it\'s"]\nat = "01:00"\n',
                   encoding="utf-8")
    env = tmp_path / "my %s $env.env"
    env.write_text("", encoding="utf-8")
    cioc_env["CIOC_ENV_FILE"] = str(env)
    python = tmp_path / "venv 100%" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.symlink_to(sys.executable)
    folder = tmp_path / "units"
    result = write_units(cioc_env, folder, "--schedule", odd, "--python", python,
                         "--root", tmp_path / "tools 50%")
    assert result.returncode == 0, result.stderr
    assert sorted(units_of(folder)) == ["cioctasks-caf\\xc3\\xa9-1.service",
                                        "cioctasks-caf\\xc3\\xa9-1.timer"]
    service = units_of(folder)["cioctasks-caf\\xc3\\xa9-1.service"]
    assert setting(service, "ExecStart") == [
        f'"{tmp_path}/venv 100%%/bin/python" "cron/x y.py" "50%%" "$$HOME" "a\\"b" "c\\\\d" '
        "\\; \"it's\" --notify-errors"]
    # verify finds the program only if the quoted, %-doubled path reads back as it is.
    assert verify(folder) == (0, [])
    quoted = write_units(cioc_env, folder, "--schedule", odd, "--python", '/opt/a"b/python')
    assert quoted.returncode == 2
    assert quoted.stderr.strip().splitlines()[-1].endswith(
        "systemd cannot run a program whose path holds a quote or a backslash")


FAKE_SYSTEMCTL = """#!{python}
import json, os, sys
from pathlib import Path
calls, state = Path(os.environ["FAKE_CALLS"]), Path(os.environ["FAKE_STATE"])
units = Path(os.environ["FAKE_UNIT_DIR"])
args = [a for a in sys.argv[1:] if a != "--user"]
with calls.open("a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
enabled = set(json.loads(state.read_text())) if state.exists() else set()
if args[0] == os.environ.get("FAKE_FAIL"):
    sys.exit("Failed to " + args[0] + ": Access denied")
if args[0] == "show" and args[1] == "--property=Version":
    print("Version=252")
elif args[0] == "show":
    for unit in args[2:]:
        on = "enabled" if unit in enabled else "disabled"
        print(f"Id={{unit}}\\nActiveState={{'active' if on == 'enabled' else 'inactive'}}"
              f"\\nUnitFileState={{on}}\\n")
elif args[0] == "enable":
    for unit in args[2:]:
        if not (units / unit).is_file():
            sys.exit(f"Failed to enable unit: Unit file {{unit}} does not exist.")
    state.write_text(json.dumps(sorted(enabled | set(args[2:]))))
elif args[0] == "disable":
    state.write_text(json.dumps(sorted(enabled - set(args[2:]))))
"""


class Systemctl:
    """A fake systemctl first on PATH: its calls, and the timers it holds enabled."""

    def __init__(self, tmp_path, environ, unit_dir):
        folder = tmp_path / "fakebin"
        folder.mkdir()
        script = folder / "systemctl"
        script.write_text(FAKE_SYSTEMCTL.format(python=sys.executable), encoding="utf-8")
        script.chmod(0o755)
        self.calls_file, self.state = tmp_path / "calls.jsonl", tmp_path / "enabled.json"
        environ.update(PATH=f"{folder}{os.pathsep}{environ['PATH']}",
                       FAKE_CALLS=str(self.calls_file), FAKE_STATE=str(self.state),
                       FAKE_UNIT_DIR=str(unit_dir))

    def calls(self):
        if not self.calls_file.exists():
            return []
        lines = self.calls_file.read_text(encoding="utf-8").splitlines()
        self.calls_file.unlink()
        return [json.loads(line) for line in lines]

    def enabled(self):
        return json.loads(self.state.read_text()) if self.state.exists() else []


@pytest.fixture
def installing(tmp_path, cioc_env, env_file):
    """(install(schedule text, *options) -> CompletedProcess, the fake systemctl, the
    unit folder)."""
    unit_dir = tmp_path / "etc-systemd-system"
    fake = Systemctl(tmp_path, cioc_env, unit_dir)
    table = tmp_path / "schedule.toml"

    def install(text, *options):
        table.write_text(text, encoding="utf-8")
        result = run_command([sys.executable, "-m", "cioctasks", "schedule",
                              "--install-systemd", "--schedule", table, "--unit-dir", unit_dir,
                              *options], cioc_env)
        assert_no_traceback(result)
        return result

    return install, fake, unit_dir


def test_install_writes_enables_and_a_second_run_changes_nothing(installing):
    install, fake, unit_dir = installing
    first = install(SMALL)
    assert first.returncode == 0, first.stderr
    timers = ["cioctasks-nightly.timer", "cioctasks-errors.timer"]
    assert fake.enabled() == sorted(timers)
    calls = fake.calls()
    assert ["daemon-reload"] in calls and ["enable", "--now", *timers] in calls
    assert sorted(units_of(unit_dir)) == sorted(
        timers + ["cioctasks-nightly.service", "cioctasks-errors.service"])
    assert "--install-systemd" in units_of(unit_dir)["cioctasks-nightly.timer"]
    stamps = {path.name: path.stat().st_mtime_ns for path in unit_dir.iterdir()}

    again = install(SMALL)
    assert again.returncode == 0, again.stderr
    assert "nothing to change: 2 timers up to date and enabled" in again.stdout
    assert not [call for call in fake.calls() if call[0] not in ("show",)]
    assert {path.name: path.stat().st_mtime_ns for path in unit_dir.iterdir()} == stamps


def test_install_removes_the_units_of_dropped_tasks_and_only_those(installing):
    install, fake, unit_dir = installing
    install(SMALL)
    fake.calls()
    mine = unit_dir / "cioctasks-backup.service"
    mine.write_text("[Service]\nExecStart=/usr/local/bin/backup\n", encoding="utf-8")
    result = install(SMALL.split("[tasks.errors]")[0])
    assert result.returncode == 0, result.stderr
    assert sorted(units_of(unit_dir)) == ["cioctasks-backup.service",
                                          "cioctasks-nightly.service",
                                          "cioctasks-nightly.timer"]
    calls = fake.calls()
    # Disabled while its file is still there, then systemd reloaded.
    assert calls.index(["disable", "--now", "cioctasks-errors.timer"]) < calls.index(
        ["daemon-reload"])
    assert fake.enabled() == ["cioctasks-nightly.timer"]
    assert "2 removed (cioctasks-errors.service, cioctasks-errors.timer)" in result.stdout


def test_a_changed_task_rewrites_its_units_and_a_disabled_timer_is_enabled_again(installing):
    install, fake, unit_dir = installing
    install(SMALL)
    fake.state.write_text(json.dumps(["cioctasks-errors.timer"]))  # someone disabled one
    fake.calls()
    result = install(SMALL.replace('at = "01:00"', 'at = "02:30"'))
    assert result.returncode == 0, result.stderr
    # The timer and the service (whose description says when) changed; the others did not.
    assert "2 unit files written, 2 unchanged; daemon reloaded; 1 timer enabled" in result.stdout
    assert "OnCalendar=*-*-* 02:30:00" in units_of(unit_dir)["cioctasks-nightly.timer"]
    assert ["enable", "--now", "cioctasks-nightly.timer"] in fake.calls()


def test_install_refuses_to_replace_a_unit_it_did_not_write(installing):
    install, fake, unit_dir = installing
    unit_dir.mkdir()
    theirs = unit_dir / "cioctasks-nightly.timer"
    theirs.write_text("[Timer]\nOnCalendar=daily\n", encoding="utf-8")
    result = install(SMALL)
    assert result.returncode == 2
    assert result.stderr.strip().endswith(
        f"{theirs} was not written by cioctasks and is left alone; move it away to install "
        "the schedule's unit there")
    assert sorted(units_of(unit_dir)) == ["cioctasks-nightly.timer"] and not fake.calls()


def test_dry_run_says_what_would_change_and_changes_nothing(installing):
    install, fake, unit_dir = installing
    result = install(SMALL, "-n")
    assert result.returncode == 0, result.stderr
    assert f"would write {unit_dir / 'cioctasks-nightly.service'}" in result.stdout
    assert not unit_dir.exists() and not fake.calls()


@pytest.mark.parametrize("failing, code, said", [
    ("show", 2, "systemd does not answer, nothing was changed: systemctl show "
                "--property=Version failed (exit 1): Failed to show: Access denied"),
    ("enable", 1, "enable --now cioctasks-nightly.timer cioctasks-errors.timer failed "
                  "(exit 1): Failed to enable: Access denied"),
])
def test_a_failing_systemctl_is_one_line_and_its_exit_code(installing, cioc_env, failing,
                                                           code, said):
    install, fake, unit_dir = installing
    cioc_env["FAKE_FAIL"] = failing
    result = install(SMALL)
    assert result.returncode == code
    lines = result.stderr.strip().splitlines()
    assert lines[-1].endswith(said)
    assert all("will run as root" in line for line in lines[:-1])  # the only warning
    assert unit_dir.exists() == (failing == "enable")


def test_without_systemctl_the_error_says_so(installing, cioc_env):
    install, fake, unit_dir = installing
    cioc_env["PATH"] = str(unit_dir.parent / "nothing-here")
    result = install(SMALL)
    assert result.returncode == 2
    assert "cannot run systemctl: No such file or directory" in result.stderr
    assert not unit_dir.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write any folder")
def test_a_folder_that_cannot_be_written_is_one_line_with_the_way_out(installing):
    install, fake, unit_dir = installing
    unit_dir.mkdir()
    unit_dir.chmod(0o555)
    try:
        result = install(SMALL)
    finally:
        unit_dir.chmod(0o755)
    assert result.returncode == 2
    assert f"cannot write {unit_dir}: Permission denied (system units need root" in \
        result.stderr
    assert not fake.calls()


@pytest.mark.skipif(not shutil.which("systemctl") or os.path.isdir("/run/systemd/system"),
                    reason="needs systemctl on a host where systemd is not running")
def test_the_real_systemctl_without_systemd_running_changes_nothing(cioc_env, env_file,
                                                                    tmp_path):
    unit_dir = tmp_path / "units"
    result = run_command([sys.executable, "-m", "cioctasks", "schedule", "--install-systemd",
                          "--unit-dir", unit_dir], cioc_env)
    assert_no_traceback(result)
    assert result.returncode == 2
    assert "systemd does not answer, nothing was changed" in result.stderr
    assert not unit_dir.exists()


def test_a_private_env_file_the_account_cannot_read_is_warned_of(cioc_env, env_file,
                                                                 tmp_path):
    import pwd

    try:
        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no account named nobody")
    env_file.chmod(0o600)
    result = write_units(cioc_env, tmp_path / "units", "--run-as", "nobody")
    assert result.returncode == 0, result.stderr
    if os.stat(env_file).st_uid == pwd.getpwnam("nobody").pw_uid:
        pytest.skip("the test runs as nobody")
    assert (f"{env_file} (owner uid {os.getuid()}, gid {os.getgid()}, mode 600) cannot be "
            "read by nobody, whom the tasks run as: every task would fail") in result.stderr
    env_file.chmod(0o644)
    result = write_units(cioc_env, tmp_path / "units", "--run-as", "nobody")
    assert "cannot be read" not in result.stderr


def test_systemd_flags_without_systemd_are_a_usage_error(cioc_env):
    result = run_command([sys.executable, "-m", "cioctasks", "schedule", "--crontab",
                          "--run-as", "cioc", "--user-units"], cioc_env)
    assert result.returncode == 2 and not result.stdout
    assert result.stderr.strip() == (
        "schedule: --user-units, --run-as: only with --systemd or --install-systemd")
