"""This machine's name, for run history, locks and reports.

``socket.gethostname()`` is what the name is, but importing ``socket`` costs about 2 ms of
a task's start-up; where ``os.uname`` exists (every POSIX system) its node name is the same
value, read by the same system call.
"""

import os


def name():
    """Return the host name, as ``socket.gethostname()`` gives it."""
    if hasattr(os, "uname"):
        return os.uname().nodename
    import socket  # Windows

    return socket.gethostname()
