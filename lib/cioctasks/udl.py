"""Microsoft Data Link (UDL) files: read, parse, turn into an ODBC connection string, mask.

A UDL file is UTF-16 LE with a BOM (UTF-8 is accepted too): an ``[oledb]`` header, ``;``
comment lines and one OLE DB init string of ``key=value`` pairs. Values may be quoted with
``"`` or ``'`` (a doubled quote inside stands for one) and may then hold ``;`` and ``=``.
Keys are case-insensitive. Every failure is a ``UdlError`` whose text never holds a password.
"""

import re
from pathlib import Path

from cioctasks.errors import ConfigError

#: OLE DB providers for SQL Server, turned into the SQL Server ODBC driver.
SQL_SERVER_PROVIDERS = ("sqloledb", "msoledbsql", "sqlncli")
ODBC_PROVIDER = "msdasql"
MAX_UDL_BYTES = 64 * 1024

_SECRET_KEYS = r"(?:password|pwd|licen[cs]e_?key|token)"
_SECRET_PATTERNS = [
    # key=value in connection / init strings: braced, quoted or bare values.
    re.compile(r"(?i)(\b" + _SECRET_KEYS + r"\s*=\s*)(\{(?:[^}]|\}\})*\}|\"(?:[^\"]|\"\")*\"|'(?:[^']|'')*'|[^;\"'\s]*)"),
    # URLs with credentials.
    re.compile(r"(?i)(://[^/:@\s]+:)([^@/\s]+)(?=@)"),
]


class UdlError(ConfigError):
    """A UDL file that cannot be used; the message is ``bad UDL <path>: <reason>``."""

    def __init__(self, path, reason):
        super().__init__(f"bad UDL {path}: {mask(reason)}")
        self.path = path
        self.reason = reason


def mask(text, secrets=()):
    """Given any text that may hold a password, return it with every password replaced by ***.

    Masks ``Password=``/``PWD=`` values in init and connection strings, credentials in URLs,
    and each literal value in ``secrets``.
    """
    if not isinstance(text, str):
        text = str(text)
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + "***", text)
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, "***")
    return text


def parse_init_string(text):
    """Given an OLE DB init string, return its properties as a dict with lowercased keys.

    Raise ValueError with a reason (never a value) if the string is malformed.
    """
    properties = {}
    i, n = 0, len(text)
    while i < n:
        while i < n and (text[i].isspace() or text[i] == ";"):
            i += 1
        if i >= n:
            break
        equals = text.find("=", i)
        semicolon = text.find(";", i)
        if equals < 0 or (0 <= semicolon < equals):
            raise ValueError(f"property without '=' at character {i + 1}")
        key = text[i:equals].strip().lower()
        if not key:
            raise ValueError(f"empty property name at character {i + 1}")
        i = equals + 1
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] in "\"'":
            quote = text[i]
            i += 1
            chars = []
            while True:
                if i >= n:
                    raise ValueError(f"unterminated quoted value for {key!r}")
                if text[i] == quote:
                    if i + 1 < n and text[i + 1] == quote:
                        chars.append(quote)
                        i += 2
                        continue
                    i += 1
                    break
                chars.append(text[i])
                i += 1
            value = "".join(chars)
            while i < n and text[i] in " \t":
                i += 1
            if i < n and text[i] != ";":
                raise ValueError(f"text after the quoted value of {key!r}")
        else:
            end = text.find(";", i)
            end = n if end < 0 else end
            value = text[i:end].strip()
            i = end
        properties[key] = value
    return properties


def decode(data):
    """Given the bytes of a UDL file, return its text. Raise ValueError if it is not text."""
    if data.startswith(b"\xff\xfe") or data.startswith(b"\xfe\xff"):
        text = data.decode("utf-16")
    elif data.startswith(b"\xef\xbb\xbf"):
        text = data[3:].decode("utf-8")
    elif len(data) >= 2 and data[1:2] == b"\0" and data[0:1] != b"\0":
        text = data.decode("utf-16-le")  # UTF-16 without its BOM
    else:
        text = data.decode("utf-8")
    if "\0" in text:
        raise ValueError("holds NUL characters")
    return text


def parse_bytes(data, path="<udl>"):
    """Given the bytes of a UDL file, return its properties (lowercased keys).

    Raise UdlError if the file is not a UDL or names no provider.
    """
    if len(data) > MAX_UDL_BYTES:
        raise UdlError(path, f"larger than {MAX_UDL_BYTES} bytes")
    try:
        text = decode(data)
    except (UnicodeDecodeError, ValueError) as error:
        raise UdlError(path, f"not a text file ({error.__class__.__name__})") from None
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith(";")]
    if lines and lines[0].lower() == "[oledb]":
        lines = lines[1:]
    if not lines:
        raise UdlError(path, "no OLE DB init string")
    if len(lines) > 1 or lines[0].startswith("["):
        raise UdlError(path, "not a UDL file (expected [oledb] and one init string)")
    try:
        properties = parse_init_string(lines[0])
    except ValueError as error:
        raise UdlError(path, str(error)) from None
    if not properties.get("provider"):
        raise UdlError(path, "no Provider")
    return properties


def read(path):
    """Given the path of a UDL file, return its properties. Raise UdlError if unusable."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_UDL_BYTES + 1)
    except OSError as error:
        raise UdlError(path, error.strerror or error.__class__.__name__) from None
    return parse_bytes(data, path)


def _odbc_value(value):
    """Quote a value for an ODBC connection string when it needs it."""
    if value == "" or any(c in value for c in ";{}=") or value != value.strip():
        return "{" + value.replace("}", "}}") + "}"
    return value


def provider_kind(properties):
    """Return ``sqlserver`` or ``odbc`` for a provider we support, else None."""
    # "SQLOLEDB.1", "SQLNCLI11.1", "MSOLEDBSQL19": the name without version numbers.
    provider = properties.get("provider", "").lower().split(".")[0].rstrip("0123456789")
    if provider in SQL_SERVER_PROVIDERS:
        return "sqlserver"
    if provider == ODBC_PROVIDER:
        return "odbc"
    return None


def to_odbc(properties, driver, path="<udl>"):
    """Given UDL properties and the SQL Server ODBC driver name, return an ODBC string.

    Raise UdlError for an unknown provider or missing server/database.
    """
    kind = provider_kind(properties)
    if kind == "odbc":
        extended = properties.get("extended properties", "").strip()
        if extended:
            return extended
        dsn = properties.get("data source", "").strip()
        if dsn:
            return f"DSN={_odbc_value(dsn)}"
        raise UdlError(path, "MSDASQL without Extended Properties or Data Source")
    if kind != "sqlserver":
        raise UdlError(path, f"unknown provider {properties.get('provider', '')[:40]!r}")
    server = properties.get("data source") or properties.get("server")
    database = properties.get("initial catalog") or properties.get("database")
    if not server:
        raise UdlError(path, "no Data Source (server)")
    if not database:
        raise UdlError(path, "no Initial Catalog (database)")
    parts = [
        f"Driver={{{driver}}}",
        f"Server={_odbc_value(server)}",
        f"Database={_odbc_value(database)}",
    ]
    security = properties.get("integrated security", "").lower()
    if security in ("sspi", "true", "yes"):
        parts.append("Trusted_Connection=yes")
    else:
        user = properties.get("user id") or properties.get("uid")
        if not user:
            raise UdlError(path, "no User ID and no Integrated Security=SSPI")
        parts.append(f"UID={_odbc_value(user)}")
        parts.append(f"PWD={_odbc_value(properties.get('password', ''))}")
    if "odbc driver 18" in driver.lower() and "use encryption for data" not in properties:
        # Driver 18 encrypts by default and rejects the self-signed certificates
        # of most on-premises servers; follow the UDL's setting instead.
        parts.append("TrustServerCertificate=yes")
    elif properties.get("use encryption for data", "").lower() in ("true", "yes"):
        parts.append("Encrypt=yes")
    return ";".join(parts)


def connection_string(path, driver):
    """Given a UDL path and the SQL Server ODBC driver name, return the ODBC string."""
    return to_odbc(read(path), driver, path)
