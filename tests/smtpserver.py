"""A real SMTP server for tests: aiosmtpd on 127.0.0.1, on a free port, with TLS and AUTH
when asked, collecting every message it accepts.

    with SMTPServer() as server:                                   # plain SMTP
        env = dict(base_env, **server.environ())                   # CIOC_MAIL_* for it
        ...
        server.wait_for(1)                                         # -> server.messages
    with SMTPServer(tls="ssl" | "starttls", auth=("user", "pw")) as server:
        monkeypatch.setenv("SSL_CERT_FILE", server.ca_file)        # trust its test CA

What it holds: ``port``, ``ca_file`` (PEM of the trustme CA that signed its certificate,
for ``SSL_CERT_FILE``), ``messages`` (email.message.EmailMessage, in arrival order),
``raw`` (the bytes of each, as received), ``envelopes`` ([(mail_from, [rcpt_to, ...])]
alongside), ``logins`` (user names that logged in) and ``connections`` (SMTP connections
opened to it).

How it misbehaves, for tests of failures: ``refuse`` and ``defer`` are sets of recipients
answered 550 or 451 at RCPT; ``data_replies`` maps a recipient to the reply the end of DATA
gets for a message to it (``"554 5.6.0 refused"``); ``delay`` makes each DATA take that
many seconds; ``idle_timeout`` closes a connection idle for that many seconds. With
``auth`` a message from a client that did not log in is refused (530). ``down_after``: once
that many messages arrived, every DATA is answered 421 (the server is going down).
``on_message(message)`` is called once a message is accepted and before the client gets
the 250: a test kills the client there, between acceptance and its record.
"""

import asyncio
import email
import email.policy
import socket
import ssl
import tempfile
import threading
import time
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

HOST = "127.0.0.1"


def free_port():
    """Return a TCP port on 127.0.0.1 that nothing listens on (for a server that is down)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


class _Handler:
    def __init__(self, server):
        self.server = server

    async def handle_MAIL(self, smtp, session, envelope, address, options):
        if self.server.auth and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, smtp, session, envelope, address, options):
        if address in self.server.refuse:
            return "550 5.1.1 no such mailbox"
        if address in self.server.defer:
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, smtp, session, envelope):
        server = self.server
        if server.delay:
            await asyncio.sleep(server.delay)
        for recipient in envelope.rcpt_tos:
            if recipient in server.data_replies:
                return server.data_replies[recipient]
        if server.down_after is not None and len(server.messages) >= server.down_after:
            return "421 4.3.2 shutting down"
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with server.lock:
            server.messages.append(message)
            server.raw.append(bytes(envelope.content))
            server.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        if server.on_message is not None:
            server.on_message(message)
        return "250 Message accepted"


class SMTPServer:
    """A running aiosmtpd server; see the module docstring. Use it as a context manager."""

    def __init__(self, tls=None, auth=None, port=None, delay=0.0, idle_timeout=None):
        if tls not in (None, "ssl", "starttls"):
            raise ValueError(f"tls must be None, 'ssl' or 'starttls', not {tls!r}")
        self.host = HOST
        self.tls = tls
        self.auth = tuple(auth) if auth else None
        self.port = port or free_port()
        self.delay = delay
        self.idle_timeout = idle_timeout
        self.messages = []
        self.raw = []
        self.envelopes = []
        self.down_after = None
        self.on_message = None
        self.logins = []
        self.connections = 0
        self.refuse = set()
        self.defer = set()
        self.data_replies = {}
        self.lock = threading.Lock()
        self.ca_file = None
        self._folder = None
        self._controller = None

    def _server_context(self):
        import trustme

        ca = trustme.CA()
        certificate = ca.issue_cert(HOST, "localhost")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        certificate.configure_cert(context)
        self._folder = tempfile.TemporaryDirectory(prefix="smtpserver-")
        self.ca_file = str(Path(self._folder.name) / "ca.pem")
        ca.cert_pem.write_to_path(self.ca_file)
        return context

    def _authenticate(self, smtp, session, envelope, mechanism, auth_data):
        def text(value):
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else value

        login = text(auth_data.login)
        if (login, text(auth_data.password)) == self.auth:
            with self.lock:
                self.logins.append(login)
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)  # aiosmtpd answers 535

    def start(self):
        controller_options, smtp_options = {}, {}
        if self.tls == "ssl":
            controller_options["ssl_context"] = self._server_context()
        elif self.tls == "starttls":
            smtp_options["tls_context"] = self._server_context()
            smtp_options["require_starttls"] = True
        if self.auth:
            smtp_options["authenticator"] = self._authenticate
        # aiosmtpd counts only STARTTLS as encryption; an implicit-SSL socket already is.
        smtp_options["auth_require_tls"] = self.tls == "starttls"
        if self.idle_timeout:
            smtp_options["timeout"] = self.idle_timeout
        outer = self

        class CountingController(Controller):
            def factory(self):
                with outer.lock:
                    outer.connections += 1
                return super().factory()

        self._controller = CountingController(
            _Handler(self), hostname=HOST, port=self.port, **controller_options, **smtp_options
        )
        self._controller.start()
        with self.lock:
            self.connections = 0  # the controller's own readiness probe does not count
        return self

    def stop(self):
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    def wait_for(self, count, timeout=10):
        """Wait until ``count`` messages arrived; return ``messages``. AssertionError after
        ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} messages, got {len(self.messages)}")
            time.sleep(0.02)
        return self.messages

    def environ(self, username=None, password=None):
        """Return the ``CIOC_MAIL_*`` variables (and ``SSL_CERT_FILE``) that point the
        toolkit at this server, logging in with ``auth`` unless told otherwise."""
        values = {"CIOC_MAIL_BACKEND": "smtp", "CIOC_MAIL_HOST": HOST,
                  "CIOC_MAIL_PORT": str(self.port)}
        if self.tls == "ssl":
            values["CIOC_MAIL_USE_SSL"] = "1"
        elif self.tls == "starttls":
            values["CIOC_MAIL_STARTTLS"] = "1"
        if self.ca_file:
            values["SSL_CERT_FILE"] = self.ca_file
        if self.auth or username:
            values["CIOC_MAIL_USERNAME"] = username or self.auth[0]
            values["CIOC_MAIL_PASSWORD"] = password or self.auth[1]
        return values
