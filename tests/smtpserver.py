"""A real SMTP server for tests (aiosmtpd on 127.0.0.1), with TLS and AUTH when asked.

    with SMTPServer(tls="starttls", auth=("user", "pw")) as server:
        ... server.port, server.ca_file, server.messages, server.wait_for(1)
"""

import email
import email.policy
import socket
import ssl
import threading
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Handler:
    def __init__(self, server):
        self.server = server

    async def handle_RCPT(self, smtp_server, session, envelope, address, options):
        if address in self.server.refuse:
            return "550 5.1.1 no such mailbox"
        if address in self.server.defer:
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, smtp_server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.server.lock:
            self.server.messages.append(message)
            self.server.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 Message accepted"


class SMTPServer:
    def __init__(self, tls=None, auth=None, port=None, tmp_path=None):
        self.tls = tls
        self.auth = auth
        self.port = port or free_port()
        self.messages = []
        self.envelopes = []
        self.connections = 0
        self.refuse = set()
        self.defer = set()
        self.lock = threading.Lock()
        self.ca_file = None
        self._tmp = tmp_path
        self.controller = None

    def _contexts(self):
        import tempfile

        import trustme

        ca = trustme.CA()
        certificate = ca.issue_cert("127.0.0.1", "localhost")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        certificate.configure_cert(context)
        folder = self._tmp or tempfile.mkdtemp(prefix="smtp-ca-")
        self.ca_file = f"{folder}/ca.pem"
        ca.cert_pem.write_to_path(self.ca_file)
        return context

    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        login = auth_data.login.decode() if isinstance(auth_data.login, bytes) else auth_data.login
        password = (auth_data.password.decode() if isinstance(auth_data.password, bytes)
                    else auth_data.password)
        # handled=False: aiosmtpd itself answers 535 to a wrong password.
        return AuthResult(success=(login, password) == self.auth, handled=False)

    def start(self):
        kwargs = {}
        server_kwargs = {}
        if self.tls:
            context = self._contexts()
            if self.tls == "ssl":
                kwargs["ssl_context"] = context
            else:
                server_kwargs["tls_context"] = context
                server_kwargs["require_starttls"] = True
        if self.auth:
            server_kwargs["authenticator"] = self._authenticate
            # aiosmtpd counts only STARTTLS as TLS; an implicit-SSL socket is TLS already.
            server_kwargs["auth_require_tls"] = self.tls == "starttls"
        else:
            server_kwargs["auth_require_tls"] = False
        outer = self

        class CountingController(Controller):
            def factory(self):
                with outer.lock:
                    outer.connections += 1
                return super().factory()

        self.controller = CountingController(
            Handler(self), hostname="127.0.0.1", port=self.port, **server_kwargs, **kwargs,
        )
        self.controller.start()
        with self.lock:
            self.connections = 0  # the controller's own readiness probe does not count
        return self

    def stop(self):
        if self.controller:
            self.controller.stop()
            self.controller = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def wait_for(self, count, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.messages) >= count:
                return self.messages
            time.sleep(0.05)
        raise AssertionError(f"expected {count} messages, got {len(self.messages)}")
