"""Settings: every ``CIOC_*`` variable, its default per platform, and the error for a bad one.

Values come from the environment, then from one ``.env`` file (``CIOC_ENV_FILE`` if set,
else ``./.env``, else ``<CIOC_TOOLS_PATH>/.env``); a variable already set in the
environment always wins over the file. A bad value is a ``ConfigError`` naming the
variable, never a traceback; so is a ``.env`` line that cannot be read (it names the file
and the line), which python-dotenv would drop with only a warning. An on/off variable
takes 1/true/yes/on (y, t) or 0/false/no/off (n, f, empty), in any case, and nothing else.
"""

import os
import sys
import types
from pathlib import Path

from cioctasks.errors import ConfigError

WINDOWS = sys.platform.startswith("win")

#: (Windows default, default elsewhere) for the location variables.
PLATFORM_DEFAULTS = {
    "CIOC_TOOLS_PATH": (r"d:\tools", "/opt/cioc/tools"),
    "CIOC_VIRTUALSERVERS_BASE": (r"d:\VirtualServers", "/srv/cioc/VirtualServers"),
    "CIOC_LOG_ROOT": (r"d:\logs", "/var/log/cioc"),
    "CIOC_UDL_BASE": (r"d:\UDLs", "/etc/cioc/UDLs"),
}

MAIL_BACKENDS = ("smtp", "file", "memory")
DEFAULT_ODBC_DRIVER = "ODBC Driver 18 for SQL Server"
DEFAULT_MAXMIND_URL = "https://download.maxmind.com/geoip/databases"

#: Names that hold secrets: their values are masked wherever they could be printed.
SECRET_VARIABLES = ("CIOC_MAIL_PASSWORD", "CIOC_MAil_PASSWORD", "CIOC_MAXMIND_LICENSE_KEY")


class Settings:
    """The settings of a run, read once (``load``) and never changed: every field is a
    keyword argument. A plain class, not a dataclass: ``dataclasses`` imports ``inspect``,
    a third of the start-up of a task with nothing to do."""

    FIELDS = (
        "tools_path", "virtualservers_base", "log_root", "udl_base", "state_dir",
        "task_notify_email", "mail_backend", "mail_host", "mail_port", "mail_username",
        "mail_password", "mail_use_ssl", "mail_starttls", "mail_timeout",
        "report_repeat_hours", "mail_dir", "mail_outbox", "odbc_driver", "ping_url",
        "geoip_dir", "maxmind_account_id", "maxmind_license_key", "maxmind_url",
        "offline_tools_secure_domain", "env_file",
        # Every variable as read (environment over .env), for task-specific settings: read
        # them with ``setting_text``/``setting_email`` so a bad one is a ConfigError too.
        "values",
    )
    #: Left out of ``repr``: secrets, and every variable as read.
    HIDDEN = ("mail_password", "maxmind_license_key", "values")
    __slots__ = FIELDS

    def __init__(self, **fields):
        fields.setdefault("values", types.MappingProxyType({}))
        missing = [name for name in self.FIELDS if name not in fields]
        unknown = [name for name in fields if name not in self.FIELDS]
        if missing or unknown:
            raise TypeError(f"Settings: missing {missing}, unknown {unknown}")
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise AttributeError(f"Settings are read-only: {name}")

    def __eq__(self, other):
        return type(other) is Settings and all(
            getattr(self, name) == getattr(other, name) for name in self.FIELDS)

    __hash__ = None

    def __repr__(self):
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.FIELDS
                          if name not in self.HIDDEN)
        return f"Settings({shown})"

    def replace(self, **changes):
        """A copy with ``changes`` (for tests and the commands that adjust one setting)."""
        return Settings(**{**{name: getattr(self, name) for name in self.FIELDS}, **changes})

    def secrets(self):
        """Return the secret values set, for masking."""
        return [s for s in (self.mail_password, self.maxmind_license_key) if s]


class EnvFileError(ConfigError):
    """A line of the ``.env`` file that cannot be read; ``path`` and ``line`` say where.
    ``read_env_file(path, strict=False)`` reads the rest of the file, as for its report."""

    def __init__(self, message, path, line):
        super().__init__(message)
        self.path = path
        self.line = line


def find_env_file(environ, cwd=None):
    """Given the environment, return the ``.env`` file to read, or None.

    Raise ConfigError when ``CIOC_ENV_FILE`` names a file that does not exist.
    """
    named = environ.get("CIOC_ENV_FILE")
    if named:
        path = Path(named)
        if not path.is_file():
            raise ConfigError(f"CIOC_ENV_FILE: no such file {named}")
        return path
    local = (cwd or Path.cwd()) / ".env"
    if local.is_file():
        return local
    tools = Path(environ.get("CIOC_TOOLS_PATH") or _platform_default("CIOC_TOOLS_PATH"))
    candidate = tools / ".env"
    try:
        return candidate if candidate.is_file() else None
    except OSError:
        return None


def read_env_file(path: Path, strict: bool = True) -> dict:
    """Return the values of a ``.env`` file, without touching os.environ.

    python-dotenv drops a line it cannot parse with only a warning, and with an unclosed
    quote the lines after it too. So raise ConfigError naming the file and the line (never
    its value) of each line that cannot be parsed, and of a ``CIOC_*`` name without ``=``.
    With ``strict`` False, leave those lines out and read the rest, for the report of that
    very error. Values are expanded (``${NAME}``) as ``dotenv_values`` does, from the
    bindings python-dotenv's parser already gave, so that the file is parsed once.
    """
    from dotenv.variables import parse_variables

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read {path}: {error.__class__.__name__}") from None
    bindings, bad = _without_unreadable_lines(text)
    if bad and strict:
        (line, why), others = bad[0], [str(line) for line, _ in bad[1:4]]
        also = (f" (also line{'s' if len(bad) > 2 else ''} {', '.join(others)}"
                f"{', ...' if len(bad) > 4 else ''})") if others else ""
        raise EnvFileError(f"{path}, line {line}: {why}{also}", path, line)
    values = {}
    for binding in bindings:
        if binding.key is None:
            continue
        if binding.value is None:
            values[binding.key] = None
            continue
        known = {**os.environ, **values}  # as dotenv_values: the file's own names win
        values[binding.key] = "".join(atom.resolve(known)
                                      for atom in parse_variables(binding.value))
    return {key: value for key, value in values.items() if value is not None}


def _without_unreadable_lines(text):
    """Return (the bindings of the text with each line that cannot be read blanked,
    [(line number, why)]); blanked one at a time, so that an unclosed quote costs its own
    line only."""
    import io

    from dotenv.parser import parse_stream

    lines = text.splitlines(keepends=True)
    bad = []
    for _ in range(len(lines) + 1):  # each turn but the last blanks a line that is not blank
        bindings = list(parse_stream(io.StringIO(text)))
        unreadable = next((b for b in bindings if _unreadable(b)), None)
        if unreadable is None:
            return bindings, bad
        # A statement starts with the blank lines before it: skip them.
        statement = unreadable.original.string
        blank = statement[:len(statement) - len(statement.lstrip())]
        number = unreadable.original.line + blank.count("\n")
        if not 0 < number <= len(lines) or not lines[number - 1].strip():
            break  # cannot happen; never loop on it
        bad.append((number, _why_unreadable(lines[number - 1])))
        lines[number - 1] = "\n"
        text = "".join(lines)
    return [b for b in parse_stream(io.StringIO(text)) if not _unreadable(b)], bad


def _unreadable(binding):
    return binding.error or (binding.value is None and binding.key is not None
                             and binding.key.upper().startswith("CIOC_"))


def _why_unreadable(first):
    """Say what is wrong with a ``.env`` line in words that never hold its value."""
    import re

    match = re.match(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*(=?)\s*(['\"]?)", first)
    if not match:
        return "not a NAME=value line"
    name, equals, quote = match.groups()
    if not equals:  # a name, then: only ours, as the word may be a piece of a wrapped secret
        known = name.upper().startswith("CIOC_") and "=" not in first
        return f"{name} has no '=' (NAME=value)" if known else "not a NAME=value line"
    if quote and quote not in first[match.end():]:
        return f"the quoted value of {name} is not closed"
    return f"the value of {name} cannot be parsed"


def load(environ=None, cwd=None):
    """Given an environment (default ``os.environ``), return the Settings.

    Raise ConfigError naming the variable when a value is bad.
    """
    environ = dict(os.environ if environ is None else environ)
    env_file = find_env_file(environ, cwd)
    merged = dict(read_env_file(env_file)) if env_file else {}
    merged.update({k: v for k, v in environ.items()})
    return from_mapping(merged, env_file)


def _platform_default(name):
    windows, other = PLATFORM_DEFAULTS[name]
    return windows if WINDOWS else other


def _text(values, name, default=None):
    value = values.get(name)
    if value is None or value.strip() == "":
        return default
    if any(ch in value for ch in "\r\n\0"):
        raise ConfigError(f"{name}: line breaks and NUL are not allowed")
    return value.strip()


def _path(values, name, default):
    return Path(_text(values, name) or default)


def _email(values, name):
    value = _text(values, name)
    if value is None:
        return None
    local, at, domain = value.rpartition("@")
    if not at or not local or "." not in domain or any(c.isspace() for c in value) or "," in value:
        raise ConfigError(f"{name}: not an email address: {value!r}")
    from cioctasks import addresses  # the rules mail is built with, so it can always be sent

    try:
        addresses.split(value, name)
    except addresses.HeaderError:
        raise ConfigError(f"{name}: not an email address mail can be sent to: {value!r}") from None
    return value


def _number(values, name, default, convert, low, high, what):
    """A number between ``low`` and ``high`` (inclusive), or ``default`` when unset."""
    value = _text(values, name)
    if value is None:
        return default
    try:
        number = convert(value)
    except ValueError:
        raise ConfigError(f"{name}: not a {what}: {value!r}") from None
    if not low <= number <= high:
        raise ConfigError(f"{name}: {what} out of range {low}-{high}: {value}")
    return number


def _port(values, name, default):
    return _number(values, name, default, int, 1, 65535, "port number")


def _seconds(values, name, default):
    return _number(values, name, default, float, 0.1, 3600, "number of seconds")


def _hours(values, name, default):
    return _number(values, name, default, float, 0, 720, "number of hours")


#: The words of an on/off variable, in any case; unset or empty is off.
ON_WORDS = ("1", "true", "yes", "on", "y", "t")
OFF_WORDS = ("0", "false", "no", "off", "n", "f", "")


def _switch(values, name):
    """An on/off variable: True or False; ConfigError for any other word."""
    value = (values.get(name) or "").strip()
    if value.lower() in ON_WORDS:
        return True
    if value.lower() in OFF_WORDS:
        return False
    raise ConfigError(f"{name}: not on or off: {value[:40]!r} "
                      "(on: 1, true, yes, on; off: 0, false, no, off or empty)")


def _url(values, name, default=None):
    value = _text(values, name, default)
    if value is not None and not value.lower().startswith(("http://", "https://")):
        raise ConfigError(f"{name}: not an http(s) URL: {value!r}")
    return value.rstrip("/") if value else value


def from_mapping(values, env_file=None):
    """Given every variable as a mapping, return the Settings; raise ConfigError if bad."""
    tools_path = _path(values, "CIOC_TOOLS_PATH", _platform_default("CIOC_TOOLS_PATH"))
    state_dir = _path(values, "CIOC_STATE_DIR", tools_path / "state")
    use_ssl = _switch(values, "CIOC_MAIL_USE_SSL")
    starttls = _switch(values, "CIOC_MAIL_STARTTLS")
    if use_ssl and starttls:
        raise ConfigError("CIOC_MAIL_STARTTLS: cannot be used with CIOC_MAIL_USE_SSL")
    backend = (_text(values, "CIOC_MAIL_BACKEND") or "smtp").lower()
    if backend not in MAIL_BACKENDS:
        raise ConfigError(
            f"CIOC_MAIL_BACKEND: {backend!r} is not one of {', '.join(MAIL_BACKENDS)}"
        )
    password = values.get("CIOC_MAIL_PASSWORD") or values.get("CIOC_MAil_PASSWORD") or None
    secure_domain = (_text(values, "CIOC_OFFLINE_TOOLS_SECURE_DOMAIN") or "cioc.ca").lower()
    return Settings(
        tools_path=tools_path,
        virtualservers_base=_path(
            values, "CIOC_VIRTUALSERVERS_BASE", _platform_default("CIOC_VIRTUALSERVERS_BASE")
        ),
        log_root=_path(values, "CIOC_LOG_ROOT", _platform_default("CIOC_LOG_ROOT")),
        udl_base=_path(values, "CIOC_UDL_BASE", _platform_default("CIOC_UDL_BASE")),
        state_dir=state_dir,
        task_notify_email=_email(values, "CIOC_TASK_NOTIFY_EMAIL"),
        mail_backend=backend,
        mail_host=_text(values, "CIOC_MAIL_HOST", "127.0.0.1"),
        mail_port=_port(values, "CIOC_MAIL_PORT", 465 if use_ssl else 25),
        mail_username=_text(values, "CIOC_MAIL_USERNAME"),
        mail_password=password,
        mail_use_ssl=use_ssl,
        mail_starttls=starttls,
        mail_timeout=_seconds(values, "CIOC_MAIL_TIMEOUT", 30.0),
        report_repeat_hours=_hours(values, "CIOC_REPORT_REPEAT_HOURS", 6.0),
        mail_dir=_path(values, "CIOC_MAIL_DIR", state_dir / "mail"),
        mail_outbox=_path(values, "CIOC_MAIL_OUTBOX", state_dir / "outbox"),
        odbc_driver=_text(values, "CIOC_ODBC_DRIVER", DEFAULT_ODBC_DRIVER),
        ping_url=_url(values, "CIOC_PING_URL"),
        geoip_dir=_path(values, "CIOC_GEOIP_DIR", tools_path / "geoip"),
        maxmind_account_id=_text(values, "CIOC_MAXMIND_ACCOUNT_ID"),
        maxmind_license_key=_text(values, "CIOC_MAXMIND_LICENSE_KEY"),
        maxmind_url=_url(values, "CIOC_MAXMIND_URL", DEFAULT_MAXMIND_URL),
        offline_tools_secure_domain=secure_domain,
        env_file=env_file,
        values=types.MappingProxyType(dict(values)),
    )


def setting_text(settings, name, default=None):
    """Return a task-specific variable (stripped), or ``default``; ConfigError if bad."""
    return _text(settings.values, name, default)


def setting_seconds(settings, name, default, low, high):
    """Return a task-specific number of seconds from ``low`` to ``high``, or ``default``;
    ConfigError naming the variable if bad."""
    return _number(settings.values, name, default, float, low, high, "number of seconds")


def setting_days(settings, name, default, low, high):
    """Return a task-specific whole number of days from ``low`` to ``high``, or
    ``default``; ConfigError naming the variable if bad."""
    return _number(settings.values, name, default, int, low, high, "whole number of days")


def setting_emails(settings, name):
    """Return a comma-separated list of addresses from a variable; ConfigError if bad."""
    text = _text(settings.values, name)
    addresses = []
    for part in (text or "").split(","):
        if part.strip():
            addresses.append(_email({name: part}, name))
    return addresses
