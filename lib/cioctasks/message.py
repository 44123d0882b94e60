"""Mail messages with safe headers: ``Message`` and ``address`` (``mail`` sends them).

``Message`` builds a text mail (with an optional HTML alternative) whose headers are
Unicode-safe; a CR, LF or NUL in any header value, name or address is refused with
``HeaderError``, so no data from a database can inject a header. ``Message.as_bytes``
gives the bytes the ``email`` package gives (``as_email``, policy SMTP), built faster:
what many messages share is folded once (see ``_header_line``).
"""

import email.headerregistry
import email.message
import email.policy
import email.quoprimime
import email.utils
import functools
import hashlib
import re

from cioctasks import addresses
from cioctasks.addresses import HeaderError, clean as _clean

_HEADER_NAME = re.compile(r"[!-9;-~]+\Z")  # printable ASCII without ':' (RFC 5322 ftext)
_MESSAGE_ID = re.compile(r"<[^<>\s@]+@[^<>\s@]+>\Z")

#: Headers that Message writes itself: passing them in ``headers`` is an error.
_OWN_HEADERS = frozenset(
    ("from", "to", "cc", "bcc", "subject", "reply-to", "sender", "mime-version",
     "content-type", "content-transfer-encoding")
)


def address(text, what="address", name=None):
    """Given an address (and an optional display name), return an email Address.

    A non-ASCII domain is written in its IDNA (``xn--``) form; a non-ASCII or quoted local
    part is not supported. Raise HeaderError for anything that is not one plain address.
    """
    local, ascii_domain = addresses.split(text, what)
    display_name = _clean(name, f"{what} name").strip() if name else ""
    return email.headerregistry.Address(display_name=display_name, username=local,
                                        domain=ascii_domain)


def _message_id(value):
    value = _clean(value, "Message-ID").strip()
    if not value.startswith("<"):
        value = f"<{value}>"
    if not _MESSAGE_ID.match(value):
        raise HeaderError(f"Message-ID is not of the form <id@domain>: {value[:80]!r}")
    return value


class Message:
    """One mail message: plain text, and an HTML alternative when ``html`` is given.

    ``to`` is one address or a list of them. ``headers`` adds headers such as
    ``List-Unsubscribe``; a ``Message-ID`` or ``Date`` given there is kept, otherwise both
    are set once here, so the message keeps its identity when it is spooled and resent.
    ``identity`` (a tuple of what names the work: task, database, key, ...) makes the
    Message-ID a hash of it, so a message built again for the same work has the same one.
    Raise HeaderError for a line break or NUL in any header, or for a bad address.
    """

    def __init__(self, to, subject, text, sender, sender_name=None, html=None, headers=None,
                 reply_to=None, identity=None):
        listed = [to] if isinstance(to, str) else list(to or ())
        if not listed:
            raise HeaderError("a message needs at least one recipient")
        self.to = [address(item, "recipient") for item in listed]
        self.sender = address(sender, "sender", sender_name)
        self.reply_to = address(reply_to, "Reply-To") if reply_to else None
        self.subject = _clean(subject, "subject")
        self.text = "" if text is None else str(text)
        self.html = None if html is None else str(html)
        self.headers = {}
        message_id = date = None
        for key, value in (headers or {}).items():
            key = _clean(key, "header name").strip()
            if not _HEADER_NAME.match(key):
                raise HeaderError(f"not a header name: {key[:80]!r}")
            value = _clean(value, f"header {key}")
            if key.lower() == "message-id":
                message_id = _message_id(value)
            elif key.lower() == "date":
                date = value
            elif key.lower() in _OWN_HEADERS:
                raise HeaderError(f"header {key} is set from the Message arguments")
            elif key.lower() in _URL_HEADERS and (len(key) + 2 + len(value) > 998
                                                  or not value.isascii()):
                raise HeaderError(f"header {key} is not one line of ASCII: {value[:80]!r}")
            else:
                self.headers[key] = value
        if message_id is None and identity is not None:
            digest = hashlib.sha256(repr(tuple(identity)).encode("utf-8")).hexdigest()[:32]
            message_id = f"<{digest}.cioctasks@{self.sender.domain}>"
        self.message_id = message_id or email.utils.make_msgid(domain=self.sender.domain)
        self.date = date or email.utils.formatdate(localtime=True)
        self._bytes = None

    def __repr__(self):
        return f"<Message {self.subject[:40]!r} to {', '.join(self.recipients)}>"

    @property
    def recipients(self):
        """The envelope recipients: every ``to`` address, each once."""
        return list(dict.fromkeys(item.addr_spec for item in self.to))

    def as_email(self):
        """Return the message as an email.message.EmailMessage (SMTP policy, CRLF), built
        header by header by the email package: the reference ``as_bytes`` is checked
        against (tests), and what it gives back byte for byte."""
        message = email.message.EmailMessage(policy=email.policy.SMTP)
        for name, value in self._header_values():
            message[name] = value
        message.set_content(self.text, cte="quoted-printable")
        if self.html is not None:
            message.add_alternative(self.html, subtype="html", cte="quoted-printable")
            for part in message.get_payload():  # the message's, not the parts'
                del part["MIME-Version"]
            message.set_boundary(self.boundary)
        return message

    def _header_values(self):
        """The headers in order, as (name, value) for the email package."""
        yield "From", self.sender
        yield "To", self.to
        if self.reply_to:
            yield "Reply-To", self.reply_to
        yield "Subject", self.subject
        yield "Date", self.date
        yield "Message-ID", self.message_id
        for name, value in self.headers.items():
            yield name, _OneLine(name, value) if name.lower() in _URL_HEADERS else value

    @property
    def boundary(self):
        """The MIME boundary: from the Message-ID, so the bytes are the same every time, and
        with ``=_``, which quoted-printable parts can never hold."""
        digest = hashlib.sha256(self.message_id.encode("utf-8")).hexdigest()[:24]
        return f"=_{digest}"

    def as_bytes(self):
        """Return the RFC 5322 bytes; the same bytes every time (the MIME boundary too).

        The same bytes as ``as_email().as_bytes()``, built faster: headers shared by many
        messages (From, Subject) are folded by the email package once, plain short ASCII
        values are written as the email package would write them, anything else is folded
        by it; the bodies are encoded by its quoted-printable encoder."""
        if self._bytes is None:
            lines = [_folded("From", (self.sender.display_name, self.sender.username,
                                      self.sender.domain)),
                     _to_line(self.to)]
            if self.reply_to:
                lines.append(_folded("Reply-To", (self.reply_to.display_name,
                                                  self.reply_to.username, self.reply_to.domain)))
            lines.append(_folded("Subject", self.subject))
            lines.append(_header_line("Date", self.date))
            lines.append(_header_line("Message-ID", self.message_id))
            for name, value in self.headers.items():
                lines.append(_header_line(name, value, name.lower() in _URL_HEADERS))
            if self.html is None:  # the email package's order of these three headers
                head, body = _text_part(self.text, "plain", split=True)
                lines += [head, b"MIME-Version: 1.0\r\n\r\n", body]
            else:
                boundary = self.boundary.encode("ascii")
                lines += [b"MIME-Version: 1.0\r\n",
                          b'Content-Type: multipart/alternative; boundary="', boundary,
                          b'"\r\n\r\n--', boundary, b"\r\n", _text_part(self.text, "plain"),
                          b"\r\n--", boundary, b"\r\n", _text_part(self.html, "html"),
                          b"\r\n--", boundary, b"--\r\n"]
            self._bytes = b"".join(lines)
        return self._bytes


# -- building the bytes fast, the email package's way -------------------------------------

#: Headers whose value is ``<URL>``: written on one line (up to 998 characters), as RFC 2369
#: shows them; folded by the SMTP policy a long URL becomes encoded words, which mail
#: programs do not decode in these headers, so the unsubscribe link would not work.
_URL_HEADERS = frozenset(("list-unsubscribe", "list-unsubscribe-post", "list-help",
                          "list-subscribe", "list-post", "list-owner", "list-archive"))
_ONE_LINE = email.policy.SMTP.clone(max_line_length=998)
#: A value the SMTP policy writes as it is when the line fits: printable ASCII words with
#: single spaces, and nothing the email package would read as an encoded word.
_PLAIN = re.compile(r"[!-~]+(?: [!-~]+)*\Z")


class _OneLine(str):
    """A header the email package writes with the one-line policy (see _URL_HEADERS)."""

    def __new__(cls, name, value):
        header = super().__new__(cls, value)
        header.name = name
        return header

    def fold(self, *, policy):
        return _ONE_LINE.fold(self.name, str(self))


def _fold(name, value, policy=email.policy.SMTP):
    name, header = policy.header_store_parse(name, value)
    return policy.fold_binary(name, header)


def _header_line(name, value, one_line=False):
    limit = 998 if one_line else 78
    if len(name) + 2 + len(value) <= limit and _PLAIN.match(value) and "=?" not in value:
        return f"{name}: {value}\r\n".encode("ascii")
    if one_line:  # ASCII of at most 998 characters: checked by Message
        return _fold(name, value, _ONE_LINE)
    return _fold(name, value)


@functools.lru_cache(maxsize=256)
def _folded(name, value):
    """A header shared by many messages, folded by the email package once. ``value``: the
    text, or an address as (display name, user name, domain)."""
    if isinstance(value, tuple):
        display_name, username, domain = value
        value = email.headerregistry.Address(display_name=display_name, username=username,
                                             domain=domain)
    return _fold(name, value)


def _to_line(recipients):
    text = ", ".join(item.addr_spec for item in recipients)
    if len(text) + 4 <= 78 and not any(item.display_name for item in recipients):
        return f"To: {text}\r\n".encode("ascii")  # checked plain addresses, as is
    return _fold("To", recipients)


_PART_HEAD = {subtype: (f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
                        "Content-Transfer-Encoding: quoted-printable\r\n").encode("ascii")
              for subtype in ("plain", "html")}


def _text_part(text, subtype, split=False):
    """A text part's headers and body in quoted-printable, as the email package's
    ``set_content(text, cte="quoted-printable")`` writes them (SMTP policy); with
    ``split``, (headers, body) without the blank line between them."""
    lines = text.encode("utf-8").splitlines()
    body = (b"\n".join(lines) + b"\n").decode("latin-1")
    encoded = email.quoprimime.body_encode(body, email.policy.SMTP.max_line_length)
    encoded = encoded.replace("\n", "\r\n").encode("ascii")
    if split:
        return _PART_HEAD[subtype], encoded
    return b"".join((_PART_HEAD[subtype], b"\r\n", encoded))
