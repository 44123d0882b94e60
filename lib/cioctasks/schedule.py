"""The schedule (config/schedule.toml): read it, install it into cron, Task Scheduler or
systemd timers (the ``schedule`` command: ``add_arguments`` and ``run_command``; the units
are written by ``cioctasks.systemd``), and tell when each task was last due and is next due.

An entry runs daily (``at``), weekly (``at`` with ``days``), monthly (``at`` with
``day_of_month``) or every N minutes (``every_minutes``).
"""

import collections
import dataclasses
import datetime
import re
import shlex
import sys
import tomllib
from pathlib import Path, PureWindowsPath
from typing import Optional, Tuple

from cioctasks.errors import ConfigError, TaskError

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SCHEDULE = ROOT / "config" / "schedule.toml"

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
CRON_DAYS = {"Sun": 0, "Mon": 1, "Tue": 2, "Wed": 3, "Thu": 4, "Fri": 5, "Sat": 6}
WINDOWS_DAYS = {"Mon": "Monday", "Tue": "Tuesday", "Wed": "Wednesday", "Thu": "Thursday",
                "Fri": "Friday", "Sat": "Saturday", "Sun": "Sunday"}
BEGIN_MARK = "# BEGIN cioctasks"
BEGIN = f"{BEGIN_MARK} (python -m cioctasks schedule --install-crontab)"
END = "# END cioctasks"
TASK_NAMESPACE = "http://schemas.microsoft.com/windows/2004/02/mit/task"


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    script: str
    args: Tuple[str, ...] = ()
    at: Optional[datetime.time] = None
    days: Tuple[str, ...] = ()
    day_of_month: Optional[int] = None
    every_minutes: Optional[int] = None
    time_limit_minutes: int = 60
    records_as: Optional[str] = None

    @property
    def task(self):
        """The name the runner records the task under: ``records_as``, else its script's."""
        return self.records_as or Path(self.script).stem

    def describe(self):
        if self.every_minutes:
            return f"every {self.every_minutes} minutes"
        when = f"{self.at:%H:%M}"
        if self.days:
            return f"{'/'.join(self.days)} at {when}"
        if self.day_of_month:
            return f"monthly on day {self.day_of_month} at {when}"
        return f"daily at {when}"

    def previous_due(self, now):
        """The last time at or before ``now`` the task was due."""
        if self.every_minutes:
            midnight = datetime.datetime.combine(now.date(), datetime.time())
            minutes = (now - midnight).seconds // 60
            return midnight + datetime.timedelta(minutes=minutes - minutes % self.every_minutes)
        moment = datetime.datetime.combine(now.date(), self.at)
        for _ in range(400):
            if moment <= now and self._runs_on(moment.date()):
                return moment
            moment -= datetime.timedelta(days=1)
        raise ConfigError(f"{self.name}: never due")

    def next_due(self, now):
        """The first time after ``now`` the task is due."""
        if self.every_minutes:
            return self.previous_due(now) + datetime.timedelta(minutes=self.every_minutes)
        moment = datetime.datetime.combine(now.date(), self.at)
        for _ in range(400):
            if moment > now and self._runs_on(moment.date()):
                return moment
            moment += datetime.timedelta(days=1)
        raise ConfigError(f"{self.name}: never due")

    def _runs_on(self, day):
        if self.days:
            return DAYS[day.weekday()] in self.days
        if self.day_of_month:
            return day.day == self.day_of_month
        return True


def _entry(name, values, path):
    def fail(reason):
        raise ConfigError(f"{path}: [tasks.{name}]: {reason}")

    if not re.fullmatch(r"[\w.-]+", name):
        fail("a task name is letters, digits, '_', '.' and '-'")
    if not isinstance(values, dict) or not isinstance(values.get("script"), str):
        fail("needs a script")
    args = values.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        fail("args must be a list of strings")
    at = None
    if "at" in values:
        try:
            at = datetime.time.fromisoformat(values["at"])
        except (TypeError, ValueError):
            fail(f"at must be HH:MM, not {values['at']!r}")
    every = values.get("every_minutes")
    if (at is None) == (every is None):
        fail("needs either at or every_minutes")
    if every is not None and not (isinstance(every, int) and 0 < every <= 60 and 60 % every == 0):
        fail("every_minutes must divide an hour (1-60)")
    days = tuple(values.get("days", ()))
    if any(day not in DAYS for day in days):
        fail(f"days must be among {', '.join(DAYS)}")
    day_of_month = values.get("day_of_month")
    if day_of_month is not None and not (isinstance(day_of_month, int) and 1 <= day_of_month <= 28):
        fail("day_of_month must be 1-28 (every month has it)")
    if days and day_of_month:
        fail("days and day_of_month cannot both be set")
    limit = values.get("time_limit_minutes", 60)
    if not isinstance(limit, int) or limit <= 0:
        fail("time_limit_minutes must be a positive whole number")
    records_as = values.get("records_as")
    if records_as is not None and not (isinstance(records_as, str)
                                       and re.fullmatch(r"[\w.-]+", records_as)):
        fail("records_as must be a task name")
    return Entry(name, values["script"], tuple(args), at, days, day_of_month, every, limit,
                 records_as)


def load(path):
    """Read the schedule file; return its entries. Raise ConfigError naming what is wrong."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"no schedule file {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not a TOML file: {error}"[:300]) from None
    except OSError as error:
        raise ConfigError(f"cannot read the schedule {path}: {error.strerror}") from None
    tasks = data.get("tasks")
    if not isinstance(tasks, dict) or not tasks:
        raise ConfigError(f"{path}: no [tasks.NAME] tables")
    return [_entry(name, values, path) for name, values in tasks.items()]


# crontab

#: Where the crontab lines append what a task writes on stderr (with the shell's own errors:
#: a missing venv, a folder that moved), under <CIOC_LOG_ROOT>/cioctasks/.
CRON_LOG = "cron-stderr.log"
#: Cron reads at most 999 characters of a command and drops the rest without a word.
CRON_MAX_COMMAND = 999


def _cron_quote(text):
    """Quote for the shell, and escape % (cron turns a bare % into a newline)."""
    return shlex.quote(str(text)).replace("%", "\\%")


def cron_time(entry):
    if entry.every_minutes:
        return f"*/{entry.every_minutes} * * * *"
    minute, hour = entry.at.minute, entry.at.hour
    if entry.days:
        return f"{minute} {hour} * * {','.join(str(CRON_DAYS[d]) for d in entry.days)}"
    if entry.day_of_month:
        return f"{minute} {hour} {entry.day_of_month} * *"
    return f"{minute} {hour} * * *"


def crontab_block(entries, root, python, env_file=None, error_log=None):
    """The crontab lines for every entry, between the BEGIN and END markers.

    Each command sets its own PATH and PYTHONUTF8 (not crontab-wide variables, which would
    change the user's other lines) and runs from the toolkit's folder. Standard output is
    dropped (the task log has it); standard error, with the shell's own errors, is appended
    to ``error_log`` followed by a dated line naming the task and its exit status when it
    is not 0; without ``error_log`` it is left to cron, which mails it (MAILTO). Raise
    ConfigError when a line is longer than cron reads.
    """
    path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    environment = f"PATH={path} PYTHONUTF8=1"
    if env_file:
        environment += f" CIOC_ENV_FILE={_cron_quote(env_file)}"
    lines = [BEGIN]
    for entry in entries:
        # Failures also go by mail: nobody reads a log that nothing points to.
        parts = (python, entry.script, *entry.args, "--notify-errors")
        command = f"{environment} {' '.join(_cron_quote(part) for part in parts)}"
        if error_log:
            command = (f'log={_cron_quote(error_log)}; cd {_cron_quote(root)} 2>>"$log" && '
                       f'{command} >/dev/null 2>>"$log" || '
                       f'{{ rc=$?; echo "$(date): {entry.name}: exit status $rc" >>"$log"; }}')
        else:
            command = f"cd {_cron_quote(root)} && {command} >/dev/null"
        if len(command) > CRON_MAX_COMMAND:
            raise ConfigError(f"the crontab line of {entry.name} is {len(command)} characters, "
                              f"more than cron reads ({CRON_MAX_COMMAND}): use shorter paths")
        lines.append(f"# {entry.name}: {entry.describe()}")
        lines.append(f"{cron_time(entry)} {command}")
    lines.append(END)
    return "\n".join(lines) + "\n"


def _block_span(lines):
    """Given the lines of a crontab, return (start, end) of its cioctasks block, or None
    when it has none. Raise ConfigError, naming the lines, when the markers are damaged:
    a marker without its pair, markers out of order or twice."""
    begins = [n for n, line in enumerate(lines) if line.strip().startswith(BEGIN_MARK)]
    ends = [n for n, line in enumerate(lines) if line.strip().startswith(END)]
    if not begins and not ends:
        return None
    if len(begins) == 1 and len(ends) == 1 and begins[0] < ends[0]:
        return begins[0], ends[0]
    found = ", ".join([f"{BEGIN_MARK!r} on line {n + 1}" for n in begins]
                      + [f"{END!r} on line {n + 1}" for n in ends])
    raise ConfigError(
        f"the cioctasks block of the crontab is damaged ({found}); nothing was changed. "
        f"With crontab -e, leave one {BEGIN_MARK!r} line followed by one {END!r} line "
        "(or delete both and the lines between), then run this again")


def merge_crontab(existing, block):
    """Put ``block`` in place of the cioctasks block of ``existing`` (or at its end) and
    return the new crontab. Every line outside the block is kept as it is; a damaged block
    is a ConfigError and nothing is merged."""
    lines = existing.splitlines()
    span = _block_span(lines)
    new = block.rstrip("\n").split("\n")
    if span:
        kept = lines[:span[0]] + new + lines[span[1] + 1:]
    else:
        kept = list(lines) + ([""] if lines and lines[-1].strip() else []) + new
    return "\n".join(kept) + "\n"


def _count(number, thing):
    return f"{number} {thing}" if number == 1 else f"{number} {thing}s"


def crontab_change(existing, block):
    """One sentence saying what ``merge_crontab(existing, block)`` changes."""
    lines = existing.splitlines()
    span = _block_span(lines)
    new = block.rstrip("\n").split("\n")
    tasks = _count(sum(1 for line in new if line and not line.startswith("#")), "task")
    if span is None:
        others = sum(1 for line in lines if line.strip())
        where = (f"after your {_count(others, 'other line')}, unchanged" if others
                 else "to an empty crontab")
        return f"added the cioctasks block ({tasks}) {where}"
    old = lines[span[0]:span[1] + 1]
    if old == new:
        return f"nothing to change: the cioctasks block ({tasks}) is up to date"
    added = sum((collections.Counter(new) - collections.Counter(old)).values())
    removed = sum((collections.Counter(old) - collections.Counter(new)).values())
    others = sum(1 for line in lines[:span[0]] + lines[span[1] + 1:] if line.strip())
    kept = f"; your {_count(others, 'other line')} unchanged" if others else ""
    return (f"updated the cioctasks block ({tasks}): {_count(added, 'line')} added, "
            f"{removed} removed{kept}")


# Windows Task Scheduler

def _trigger(entry, start_date):
    start = f"{start_date:%Y-%m-%d}T{(entry.at or datetime.time()):%H:%M:%S}"
    if entry.every_minutes:
        return (f"<CalendarTrigger><Repetition><Interval>PT{entry.every_minutes}M</Interval>"
                f"<Duration>P1D</Duration><StopAtDurationEnd>false</StopAtDurationEnd>"
                f"</Repetition><StartBoundary>{start}</StartBoundary><Enabled>true</Enabled>"
                f"<ScheduleByDay><DaysInterval>1</DaysInterval></ScheduleByDay></CalendarTrigger>")
    if entry.days:
        days = "".join(f"<{WINDOWS_DAYS[d]} />" for d in entry.days)
        schedule = (f"<ScheduleByWeek><DaysOfWeek>{days}</DaysOfWeek>"
                    f"<WeeksInterval>1</WeeksInterval></ScheduleByWeek>")
    elif entry.day_of_month:
        months = "".join(f"<{m} />" for m in ("January", "February", "March", "April", "May",
                                              "June", "July", "August", "September", "October",
                                              "November", "December"))
        schedule = (f"<ScheduleByMonth><DaysOfMonth><Day>{entry.day_of_month}</Day>"
                    f"</DaysOfMonth><Months>{months}</Months></ScheduleByMonth>")
    else:
        schedule = "<ScheduleByDay><DaysInterval>1</DaysInterval></ScheduleByDay>"
    return (f"<CalendarTrigger><StartBoundary>{start}</StartBoundary><Enabled>true</Enabled>"
            f"{schedule}</CalendarTrigger>")


def task_xml(entry, root, pythonw, start_date):
    """The Task Scheduler XML of one entry."""
    from xml.sax.saxutils import escape  # here: status reads the schedule on every run

    arguments = " ".join(f'"{part}"' if " " in part else part
                         for part in (entry.script.replace("/", "\\"), *entry.args))
    return f"""<?xml version="1.0" encoding="UTF-16"?>
<Task version="1.2" xmlns="{TASK_NAMESPACE}">
  <RegistrationInfo>
    <Description>{escape(f"cioctasks {entry.name}: {entry.describe()}")}</Description>
  </RegistrationInfo>
  <Triggers>
    {_trigger(entry, start_date)}
  </Triggers>
  <Principals>
    <Principal id="Author">
      <LogonType>Password</LogonType>
      <RunLevel>LeastPrivilege</RunLevel>
    </Principal>
  </Principals>
  <Settings>
    <MultipleInstancesPolicy>IgnoreNew</MultipleInstancesPolicy>
    <DisallowStartIfOnBatteries>false</DisallowStartIfOnBatteries>
    <StopIfGoingOnBatteries>false</StopIfGoingOnBatteries>
    <StartWhenAvailable>true</StartWhenAvailable>
    <ExecutionTimeLimit>PT{entry.time_limit_minutes}M</ExecutionTimeLimit>
    <Enabled>true</Enabled>
  </Settings>
  <Actions Context="Author">
    <Exec>
      <Command>{escape(str(pythonw))}</Command>
      <Arguments>{escape(arguments)}</Arguments>
      <WorkingDirectory>{escape(str(root))}</WorkingDirectory>
    </Exec>
  </Actions>
</Task>
"""


def write_windows(entries, folder, root, pythonw, start_date):
    """Write one XML per entry and a register.cmd into ``folder``; return the paths."""
    from cioctasks import files

    folder = Path(folder)
    written = []
    for entry in entries:
        path = folder / f"{entry.name}.xml"
        files.atomic_write(path, task_xml(entry, root, pythonw, start_date), encoding="utf-16")
        written.append(path)
    lines = REGISTER_HEAD.strip("\n").split("\n")
    lines.append(f"echo Registering {len(entries)} tasks to run as %ACCOUNT%.")
    for entry in entries:
        lines.append(f'schtasks /Create /F /TN "cioctasks\\{entry.name}" '
                     f'/XML "%~dp0{entry.name}.xml" %RUNAS% || exit /b 1')
    lines.append(f"echo Registered {len(entries)} tasks in Task Scheduler's folder \\cioctasks.")
    register = folder / "register.cmd"
    files.atomic_write(register, "\r\n".join(lines) + "\r\n")
    return written + [register]


REGISTER_HEAD = r"""
@echo off
rem Register the cioctasks tasks with Task Scheduler, in its folder \cioctasks. Run it from
rem an elevated Command Prompt:
rem
rem     register.cmd [ACCOUNT]
rem
rem ACCOUNT is the Windows account the tasks run as, DOMAIN\user or .\user for a local one
rem (default: the account running this script). The tasks run whether or not anyone is
rem logged on, so schtasks asks for the account's password (/RP *), once per task; to type
rem it once, run "set /p CIOC_TASK_PASSWORD=" first (it shows as you type) and it is
rem passed as /RP. The account must read the toolkit's folder and the UDL files, and write
rem CIOC_LOG_ROOT, CIOC_STATE_DIR and the sites' folders under CIOC_VIRTUALSERVERS_BASE.
setlocal
set "ACCOUNT=%~1"
if "%ACCOUNT%"=="" set "ACCOUNT=%USERDOMAIN%\%USERNAME%"
set RUNAS=/RU "%ACCOUNT%" /RP *
if defined CIOC_TASK_PASSWORD set RUNAS=/RU "%ACCOUNT%" /RP "%CIOC_TASK_PASSWORD%"
"""


def windows_path_problem(text):
    """Given a path for the Windows machine, return why it cannot be one (a POSIX path, a
    drive without its backslashes, as an unquoted ``D:\\tools`` in bash gives), or None."""
    path = PureWindowsPath(text)
    if path.drive and path.root:
        return None
    if path.drive and len(path.drive) == 2:
        return (f"{text} has no backslash after {path.drive} (the shell removed them? "
                f"quote the path: '{path.drive}\\tools\\cioc')")
    return (f"{text} is not a Windows path (give the path on the Windows machine, e.g. "
            "'D:\\tools\\cioc')")


# The ``schedule`` command (python -m cioctasks schedule)

COMMAND_DESCRIPTION = """\
Print the schedule (config/schedule.toml) as a crontab block, install that block in this
user's crontab, write Task Scheduler XML files and a register.cmd, or write or install
systemd timers.

Each crontab line runs its task from the toolkit's folder with the venv's Python and
--notify-errors; its standard error, and the shell's own errors (a missing venv: exit
127), go to <CIOC_LOG_ROOT>/cioctasks/cron-stderr.log, followed by a dated line naming the
task and its exit status whenever it is not 0. The lines name the .env file in use
(CIOC_ENV_FILE), since cron passes none of your variables; without one you are warned.
--install-crontab replaces only the lines between '# BEGIN cioctasks' and '# END
cioctasks', says what it changed, and refuses a crontab whose markers are damaged.

systemd: a cioctasks-<task>.service and .timer per task (OnCalendar=, Persistent=true,
TimeoutStartSec= the task's time_limit_minutes, the same Python, folder, CIOC_ENV_FILE and
--notify-errors as cron; output to the journal). --install-systemd writes them into
/etc/systemd/system (with --user-units: ~/.config/systemd/user), only those that changed,
removes the ones it wrote for tasks no longer scheduled, reloads systemd and enables the
timers; run again with nothing changed, it changes nothing.
"""


def add_arguments(parser):
    """The ``schedule`` command's flags."""
    import argparse

    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--crontab", action="store_true",
                      help="print the crontab block, to read or to paste with crontab -e")
    what.add_argument("--install-crontab", action="store_true",
                      help="put the block into this user's crontab in place of the one "
                           "installed before, keeping every other line; with -n, print the "
                           "new crontab and change nothing")
    what.add_argument("--windows", type=Path, metavar="DIR",
                      help="write one Task Scheduler XML file per task, and register.cmd to "
                           "register them all, into DIR")
    what.add_argument("--systemd", type=Path, metavar="DIR",
                      help="write a systemd .service and .timer per task into DIR")
    what.add_argument("--install-systemd", action="store_true",
                      help="install the systemd units (root: /etc/systemd/system), remove "
                           "those of tasks no longer scheduled, enable the timers; with -n, "
                           "say what would change and change nothing")
    parser.add_argument("--user-units", action="store_true",
                        help="with --systemd/--install-systemd: units of your own user "
                             "(systemctl --user, ~/.config/systemd/user), not system units")
    parser.add_argument("--run-as", metavar="NAME",
                        help="the account system units run as (User=; default: the one "
                             "running this command)")
    parser.add_argument("--unit-dir", type=Path, metavar="DIR",
                        help="install the units into DIR instead of /etc/systemd/system or "
                             "~/.config/systemd/user (a folder systemd reads; or for tests)")
    parser.add_argument("--schedule", type=Path, default=DEFAULT_SCHEDULE, metavar="FILE",
                        help="the schedule to read (default: config/schedule.toml)")
    parser.add_argument("--root", help="the toolkit's folder on the machine that runs the tasks "
                                       "(default: this one); with --windows, a Windows path, "
                                       "quoted in a POSIX shell: --root 'D:\\tools\\cioc'")
    parser.add_argument("--python", help="the Python the tasks run with (default: the one "
                                         "running this command; with --windows, "
                                         "ROOT\\.venv\\Scripts\\pythonw.exe)")
    parser.add_argument("--crontab-command", default="crontab", help=argparse.SUPPRESS)


def run_command(context):
    """Run the ``schedule`` command for ``context.args``; return its one-line summary."""
    args = context.args
    systemd_flags = [flag for flag, given in (("--user-units", args.user_units),
                                              ("--run-as", args.run_as),
                                              ("--unit-dir", args.unit_dir)) if given]
    if systemd_flags and not (args.systemd or args.install_systemd):
        raise ConfigError(f"{', '.join(systemd_flags)}: only with --systemd or --install-systemd")
    if args.unit_dir and args.systemd:
        raise ConfigError("--unit-dir is for --install-systemd; --systemd DIR names its folder")
    entries = load(args.schedule)
    if args.windows:
        target = PureWindowsPath(args.root) if args.root else ROOT
        pythonw = (PureWindowsPath(args.python) if args.python
                   else target / ".venv" / "Scripts" / "pythonw.exe")
        checked = [("--root", args.root or str(ROOT))]
        checked += [("--python", args.python)] if args.python else []
        for flag, path in checked:
            problem = windows_path_problem(path)
            if problem:
                context.log.warning("%s: %s: the task files will not run on Windows", flag,
                                    problem)
        written = write_windows(entries, args.windows, target, pythonw, datetime.date.today())
        print(f"wrote {len(written) - 1} task files and {written[-1]}")
        return f"{len(entries)} tasks for Task Scheduler"
    root = Path(args.root or ROOT)
    python = Path(args.python or sys.executable)
    if not python.is_file():
        context.log.warning("--python %s: no such file here; every task would fail", python)
    settings = context.settings
    env_file = settings.env_file and Path(settings.env_file).resolve()
    scheduler = "systemd" if args.systemd or args.install_systemd else "cron"
    if not env_file:
        context.log.warning(
            "no .env file (CIOC_ENV_FILE, ./.env or <CIOC_TOOLS_PATH>/.env): %s passes none "
            "of your CIOC_* variables, so the tasks will read %s/.env if it exists, else run "
            "on the defaults; set CIOC_ENV_FILE and generate the %s again", scheduler, root,
            "units" if scheduler == "systemd" else "lines")
    if scheduler == "systemd":
        from cioctasks import systemd

        return systemd.run(context, entries, root, python, env_file)
    error_log = Path(settings.log_root).resolve() / "cioctasks" / CRON_LOG
    block = crontab_block(entries, root, python, env_file, error_log)
    if not args.install_crontab:
        print(block, end="")
        return f"{len(entries)} crontab lines"
    return _install_crontab(context, block, error_log)


def _install_crontab(context, block, error_log):
    import subprocess

    command = context.args.crontab_command
    try:
        listed = subprocess.run([command, "-l"], capture_output=True, text=True)
    except OSError as error:
        raise ConfigError(f"cannot run {command}: {error.strerror} (Debian: apt-get install "
                          "cron)") from None
    if listed.returncode != 0 and "no crontab for" not in listed.stderr:
        # Anything else (no permission, a crontab it cannot read): writing now would lose it.
        raise TaskError(f"{command} -l failed, so the crontab is left alone: "
                        f"{listed.stderr.strip()[:200]}")
    existing = listed.stdout if listed.returncode == 0 else ""
    merged = merge_crontab(existing, block)
    change = crontab_change(existing, block)
    if context.dry_run:
        print(merged, end="")
        print(f"crontab not changed (dry run); would have {change}", file=sys.stderr)
        return "crontab not changed (dry run)"
    if merged != existing:
        written = subprocess.run([command, "-"], input=merged, capture_output=True, text=True)
        if written.returncode != 0:
            raise TaskError(f"crontab refused the new table, nothing changed: "
                            f"{written.stderr.strip()[:200]}")
    print(f"crontab: {change}; task errors go to {error_log}")
    return f"crontab: {change}"
