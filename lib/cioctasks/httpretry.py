"""HTTP sessions that retry the way the --timeout/--retries/--backoff flags say.

The retrying is urllib3's (``urllib3.util.Retry`` mounted through a ``requests`` adapter):
connection errors, timeouts and the statuses in RETRIED are retried, a ``Retry-After``
header is obeyed, and every retry is logged as a warning. Any other status (a 401, for
one) comes back at once. Once the retries are spent, the last reply is returned (see
``attempts``) or the error is raised (see ``cause``).

Imported only where a request is to be made: requests is slow to import.
"""

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import (
    ConnectTimeoutError,
    InvalidHeader,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)
from urllib3.util.retry import Retry

RETRIED = (429, 500, 502, 503, 504)
# A scheduled run does not wait hours because one server asks it to.
RETRY_AFTER_MAX = 600


class LoggedRetry(Retry):
    """Retry whose first delay is ``backoff_factor`` (doubled each time after), which logs
    each retry to ``log`` as a warning, and which ignores a Retry-After it cannot read."""

    log = None

    def new(self, **params):
        retry = super().new(**params)
        retry.log = self.log
        return retry

    def get_backoff_time(self):
        # urllib3 sleeps 0 before the first retry, then factor * 2**(n-1); the --backoff
        # flag is the first delay, doubled each time.
        errors = 0
        for entry in reversed(self.history):
            if entry.redirect_location is not None:
                break
            errors += 1
        if errors == 0:
            return 0.0
        return min(self.backoff_max, self.backoff_factor * 2 ** (errors - 1))

    def get_retry_after(self, response):
        try:
            return super().get_retry_after(response)
        except InvalidHeader:
            return None  # fall back on our backoff

    def increment(self, method=None, url=None, response=None, error=None, _pool=None,
                  _stacktrace=None):
        new = super().increment(method, url, response, error, _pool, _stacktrace)
        if self.log is not None:
            after = response is not None and self.respect_retry_after_header and \
                new.get_retry_after(response)
            delay = after or new.get_backoff_time()
            path = (url or "").split("?", 1)[0]  # no query string: it might hold a secret
            self.log.warning("%s %s: %s; retrying in %g s (attempt %d of %d)", method, path,
                             _problem(response, error), delay, len(new.history) + 1,
                             len(new.history) + 1 + (new.total or 0))
        return new


def _problem(response, error):
    """The reason for a retry, in a word or two."""
    if error is None:
        return f"HTTP {response.status}" if response is not None else "no reply"
    for kind, name in ((ReadTimeoutError, "ReadTimeout"), (NewConnectionError, "ConnectionError"),
                       (ConnectTimeoutError, "ConnectTimeout"), (ProtocolError, "ConnectionError")):
        if isinstance(error, kind):
            return name
    return error.__class__.__name__


def session(retries, backoff, methods, log):
    """Given --retries (extra attempts), --backoff (the first retry's delay in seconds,
    doubled each time), the HTTP methods that may be sent again and a logger, return a
    ``requests.Session`` that retries them (see the module docstring)."""
    retry = LoggedRetry(
        total=retries, connect=retries, read=retries, status=retries,
        backoff_factor=backoff, backoff_max=float("inf"),  # the flag's doubling, uncapped
        status_forcelist=RETRIED, allowed_methods=frozenset(methods),
        respect_retry_after_header=True, retry_after_max=RETRY_AFTER_MAX,
        raise_on_status=False,  # the last reply comes back: the caller names its status
        raise_on_redirect=False)
    retry.log = log
    http = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    http.mount("https://", adapter)
    http.mount("http://", adapter)
    return http


def attempts(response):
    """Given a reply from a ``session``, return how many requests it took."""
    retries = getattr(response.raw, "retries", None)
    return len(retries.history) + 1 if retries is not None else 1


def cause(error, timeout):
    """Given the requests exception that ended a ``session`` request and the timeout, say
    in a few words what went wrong (no URL: it is not needed and may carry a secret)."""
    reason = error.args[0] if error.args else None
    reason = getattr(reason, "reason", reason)  # urllib3's MaxRetryError holds the last error
    if isinstance(error, requests.ReadTimeout) or isinstance(reason, ReadTimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(error, requests.exceptions.SSLError):
        return "TLS error"
    if isinstance(reason, NewConnectionError):
        return "could not connect"
    if isinstance(error, requests.ConnectTimeout) or isinstance(reason, ConnectTimeoutError):
        return f"no connection within {timeout:g} s"
    if isinstance(reason, ProtocolError):
        return "the connection broke"
    if isinstance(error, requests.ConnectionError):
        return "could not connect"
    return error.__class__.__name__
