"""SMTP: one connection (SSL or STARTTLS, then AUTH) and one transaction at a time.

``connect`` opens what the settings ask for; ``transfer`` runs MAIL, RCPT and DATA for one
message and says, recipient by recipient, what the server did with it, without raising
for the server's answers; ``probe`` asks whether an address would be taken, sending
nothing; ``describe`` turns a failure into one line. ``mail`` and
``outbox`` decide what to do with the answers (send, spool, fail).

TLS verifies the server's certificate against the system's trusted CAs, through
``ssl.create_default_context``; a private CA is trusted by pointing the standard
``SSL_CERT_FILE`` variable at its PEM file.
"""

import collections
import contextlib
import smtplib
import socket
import ssl


def connect(settings):
    """Given the Settings, open, secure and log in to the SMTP server; return the client.

    Raise OSError (smtplib's exceptions are OSErrors) if any step fails.
    """
    context = ssl.create_default_context()  # honours SSL_CERT_FILE for a private CA
    if settings.mail_use_ssl:
        client = smtplib.SMTP_SSL(settings.mail_host, settings.mail_port,
                                  timeout=settings.mail_timeout, context=context)
    else:
        client = smtplib.SMTP(settings.mail_host, settings.mail_port,
                              timeout=settings.mail_timeout)
    try:
        client.ehlo_or_helo_if_needed()
        if settings.mail_starttls:
            client.starttls(context=context)
            client.ehlo()
        if settings.mail_username:
            client.login(settings.mail_username, settings.mail_password or "")
    except BaseException:
        close(client)
        raise
    return client


#: The result of one SMTP transaction. ``outcome``: ``sent`` (accepted for at least one
#: recipient), ``later`` (a temporary refusal: try again), ``refused`` (for good) or
#: ``lost`` (the connection failed; ``started`` is False when it failed on the first
#: command, so nothing of the message reached the server). ``deferred`` and ``refused``
#: map recipients to the server's reply; ``reply`` says why a whole message did not go;
#: ``attention`` marks a failure a person must fix (the server wants a login).
Delivery = collections.namedtuple(
    "Delivery", "outcome accepted deferred refused reply started attention",
    defaults=("", True, False))


def _reply_line(code, reply):
    if isinstance(reply, bytes):
        reply = reply.decode("utf-8", "replace")
    return " ".join(f"{code} {reply}".split())


def _reset(client):
    with contextlib.suppress(OSError):
        client.rset()


def close(client):
    """Close a client's socket without QUIT, whatever state it is in."""
    with contextlib.suppress(OSError):
        client.close()


def transfer(client, sender, recipients, data):
    """Given a connected smtplib client, run one transaction; return a Delivery.

    After a refusal the client is reset (RSET) and can take the next message.
    """
    try:
        code, reply = client.mail(sender)
    except OSError as error:
        return Delivery("lost", [], {}, {}, describe(error), started=False)
    if code == 421:
        close(client)
        return Delivery("lost", [], {}, {}, _reply_line(code, reply), started=False)
    if code == 530:  # about the connection, not this message: every message would get it
        _reset(client)
        return Delivery("lost", [], {}, {}, f"requires a login: {_reply_line(code, reply)}",
                        started=False, attention=True)
    if not 200 <= code < 300:
        _reset(client)
        outcome = "refused" if code >= 500 else "later"
        return Delivery(outcome, [], {}, {}, f"sender {sender}: {_reply_line(code, reply)}")
    accepted, deferred, refused = [], {}, {}
    for recipient in recipients:
        try:
            code, reply = client.rcpt(recipient)
        except OSError as error:
            return Delivery("lost", accepted, deferred, refused, describe(error))
        if code == 421:
            close(client)
            return Delivery("lost", accepted, deferred, refused, _reply_line(code, reply))
        if 200 <= code < 300:
            accepted.append(recipient)
        elif code >= 500:
            refused[recipient] = _reply_line(code, reply)
        else:
            deferred[recipient] = _reply_line(code, reply)
    if not accepted:
        _reset(client)
        outcome = "later" if deferred else "refused"
        replies = {**deferred, **refused}
        if len(replies) == 1:
            why = next(iter(replies.values()))
        else:
            why = "; ".join(f"{a}: {r}" for a, r in replies.items()) or "no recipients"
        return Delivery(outcome, [], deferred, refused, why)
    try:
        code, reply = client.data(data)
    except smtplib.SMTPDataError as error:  # the DATA command itself was not answered 354
        code, reply = error.smtp_code, error.smtp_error
    except OSError as error:
        return Delivery("lost", accepted, deferred, refused, describe(error))
    if 200 <= code < 300:
        return Delivery("sent", accepted, deferred, refused)
    if code == 421:
        close(client)
        return Delivery("lost", accepted, deferred, refused, _reply_line(code, reply))
    _reset(client)
    outcome = "refused" if code >= 500 else "later"
    return Delivery(outcome, accepted, deferred, refused, _reply_line(code, reply))


TIMED_OUT = "no answer within CIOC_MAIL_TIMEOUT (timed out)"


def probe(client, address):
    """Given a connected client, ask whether the server takes a message from and to
    ``address`` (MAIL FROM, RCPT TO, then RSET: nothing is sent). Return None if it does,
    else its answer in one line. Raise OSError if the connection fails."""
    for step in (client.mail, client.rcpt):
        code, reply = step(address)
        if not 200 <= code < 300:
            _reset(client)
            return _reply_line(code, reply)
    _reset(client)
    return None


def describe(error):
    """Given a network, TLS or SMTP error, return one line (the caller adds which server)."""
    if isinstance(error, smtplib.SMTPResponseException):
        return _reply_line(error.smtp_code, error.smtp_error)
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS failed: certificate verify failed: {error.verify_message}"
    if isinstance(error, ssl.SSLError):
        return f"TLS failed: {error.reason or error}"
    if isinstance(error, (socket.timeout, TimeoutError)):
        return TIMED_OUT
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, socket.gaierror):
        return f"cannot find the host: {error.strerror or error}"
    if isinstance(error, smtplib.SMTPServerDisconnected):
        # smtplib turns any failure to read a reply into "Connection unexpectedly closed:
        # <reason>", the reason being the error it met, kept as the context.
        cause = error.__cause__ or error.__context__
        if isinstance(cause, (socket.timeout, TimeoutError)):
            return TIMED_OUT
        if isinstance(cause, ConnectionResetError):
            return "reset the connection"
        said = str(error)
        if not said or said.startswith("Connection unexpectedly closed"):
            return "closed the connection"
        return f"closed the connection ({said})"
    return getattr(error, "strerror", None) or str(error) or error.__class__.__name__


def needs_attention(error):
    """True for failures a person must fix (login, TLS, a missing extension), as opposed
    to a server that is down for now."""
    return isinstance(error, (smtplib.SMTPAuthenticationError, smtplib.SMTPNotSupportedError,
                              ssl.SSLError))
