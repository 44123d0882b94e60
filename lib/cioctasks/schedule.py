"""The schedule (config/schedule.toml): read it, install it into cron or Task Scheduler,
and tell when each task was last due and is next due.

An entry runs daily (``at``), weekly (``at`` with ``days``), monthly (``at`` with
``day_of_month``) or every N minutes (``every_minutes``).
"""

import dataclasses
import datetime
import re
import shlex
import tomllib
from pathlib import Path
from typing import Optional, Tuple
from xml.sax.saxutils import escape

from cioctasks.errors import ConfigError

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
CRON_DAYS = {"Sun": 0, "Mon": 1, "Tue": 2, "Wed": 3, "Thu": 4, "Fri": 5, "Sat": 6}
WINDOWS_DAYS = {"Mon": "Monday", "Tue": "Tuesday", "Wed": "Wednesday", "Thu": "Thursday",
                "Fri": "Friday", "Sat": "Saturday", "Sun": "Sunday"}
BEGIN = "# BEGIN cioctasks (python -m cioctasks schedule --install-crontab)"
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


def crontab_block(entries, root, python, env_file=None):
    """The crontab lines for every entry, between the BEGIN and END markers.

    Each command sets its own PATH and PYTHONUTF8 (not crontab-wide variables, which would
    change the user's other lines) and runs from the toolkit's folder.
    """
    path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    prefix = f"cd {_cron_quote(root)} && PATH={path} PYTHONUTF8=1"
    if env_file:
        prefix += f" CIOC_ENV_FILE={_cron_quote(env_file)}"
    lines = [BEGIN]
    for entry in entries:
        # cron throws the output away, so failures must go by mail.
        parts = (python, entry.script, *entry.args, "--notify-errors")
        command = " ".join(_cron_quote(part) for part in parts)
        lines.append(f"# {entry.name}: {entry.describe()}")
        lines.append(f"{cron_time(entry)} {prefix} {command} >/dev/null 2>&1")
    lines.append(END)
    return "\n".join(lines) + "\n"


def merge_crontab(existing, block):
    """Put ``block`` in place of the managed block of ``existing`` (or at its end), keeping
    every other line."""
    lines = existing.splitlines()
    if BEGIN in lines and END in lines[lines.index(BEGIN):]:
        start = lines.index(BEGIN)
        end = lines.index(END, start)
        kept = lines[:start] + block.rstrip("\n").split("\n") + lines[end + 1:]
    else:
        kept = list(lines) + ([""] if lines and lines[-1].strip() else [])
        kept += block.rstrip("\n").split("\n")
    return "\n".join(kept) + "\n"


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
    lines = ["@echo off",
             "rem Register the cioctasks tasks; schtasks asks for the password of the account",
             "rem that runs them (add /RU DOMAIN\\user to choose it).",
             "setlocal"]
    for entry in entries:
        lines.append(f'schtasks /Create /F /TN "cioctasks\\{entry.name}" '
                     f'/XML "%~dp0{entry.name}.xml" || exit /b 1')
    register = folder / "register.cmd"
    files.atomic_write(register, "\r\n".join(lines) + "\r\n")
    return written + [register]
