"""What counts as one plain mail address, without loading the mail machinery: the settings
check their addresses with the same rules the messages are built with."""

import re

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL_PART = re.compile(rf"{_ATOM}(?:\.{_ATOM})*\Z")
_DOMAIN_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")


class HeaderError(ValueError):
    """A header value, name or address that would break the message or inject a header."""


def clean(value, what):
    """Return ``value`` as text; raise HeaderError if it holds CR, LF or NUL."""
    value = "" if value is None else str(value)
    if any(c in value for c in "\r\n\0"):
        raise HeaderError(f"{what} holds a line break or NUL: {value[:80]!r}")
    return value


def split(text, what="address"):
    """Return (local part, ASCII domain) of one plain address; a non-ASCII domain comes back
    in its IDNA (``xn--``) form. Raise HeaderError for anything else (a non-ASCII or quoted
    local part is not supported)."""
    text = clean(text, what).strip()
    local, at, domain = text.rpartition("@")
    try:
        ascii_domain = domain.encode("idna").decode("ascii") if domain else ""
    except UnicodeError:
        ascii_domain = ""
    labels = ascii_domain.split(".")
    if (not at or not _LOCAL_PART.match(local) or len(local) > 64 or len(ascii_domain) > 253
            or not all(_DOMAIN_LABEL.match(label) for label in labels)):
        raise HeaderError(f"{what} is not an address: {text[:80]!r}")
    return local, ascii_domain
