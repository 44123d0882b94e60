"""Mail a digest of the errors new in each site's Python error logs since the last run.

Reads <CIOC_LOG_ROOT>/<site>/python/error.log and its midnight rotations
(error.log.YYYY-MM-DD). An entry is a line starting with its time ("2026-11-22
14:03:11,123 <request URL>") and the traceback lines under it. Entries are grouped by
signature (exception type, message with numbers, quoted values and GUIDs blurred,
innermost frame) with count, first and last time, a sample URL and a sample traceback;
one digest per site goes to CIOC_ERROR_EMAIL_<SITE> (comma list) or else
CIOC_TASK_NOTIFY_EMAIL. No new errors, no mail.

Each file's read position (by file identity, so a rotated file is followed under its new
name) moves when the digest is stored in the outbox's journal, before the server gets it;
a run killed after that sends the stored digest again as it was (same Message-ID) and does
not build another one from the same errors: every error is reported once. A
truncated or replaced file is read from its start; a last line without its newline waits
for the next run. The first run on a site reads only today's and yesterday's files.
--since / --days / --hours / --minutes rescan a window without moving any position.
"""

import datetime
import mmap
import os
import re
import sys
import time
from pathlib import Path

import cioctasks

HEAD = 256
MAX_SIGNATURES = 500
MAX_SAMPLE_LINES = 60
TAIL_LINES = 20
EDGE = 4096  # bytes decoded at each end of an entry
ENTRY = re.compile(rb"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ?([^\r\n]*)")
ROTATED = re.compile(r"^error\.log(?:\.(\d{4}-\d\d-\d\d))?$")
BLURS = [
    (re.compile(r"\{?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\}?"), "<guid>"),
    (re.compile(r"'[^']*'|\"[^\"]*\""), "<value>"),
    (re.compile(r"0x[0-9a-fA-F]+"), "<hex>"),
    (re.compile(r"\d+"), "<n>"),
]
FOLDERS = re.compile(r"[\\/]")  # a frame's file name may be a Windows or a POSIX path
FRAME = re.compile(r'^\s*File "([^"]+)", line \d+, in (\S+)')


def blur(message):
    for pattern, replacement in BLURS:
        message = pattern.sub(replacement, message)
    return message[:300]


def signature_of(url, tail):
    """(exception type, blurred message, innermost frame) of an entry from its last lines,
    and whether the URL stood in for a missing traceback."""
    exception = next((l for l in reversed(tail) if l and not l[:1].isspace() and l.strip()
                      and not l.startswith(("Traceback", "During handling", "The above"))), "")
    kind, _, message = exception.partition(":")
    by_url = not exception or " " in kind.strip()
    if by_url:
        kind, message = "(no traceback)", url
    frame = next((f for f in map(FRAME.match, (l for l in reversed(tail) if 'File "' in l))
                  if f), None)
    where = f"{FOLDERS.split(frame.group(1))[-1]}:{frame.group(2)}" if frame else ""
    return (kind.strip(), blur(message.strip()), where), by_url


class Digest:
    """Errors grouped by signature, with bounded samples."""

    def __init__(self):
        self.groups = {}
        self.entries = 0
        self._known = {}  # the raw end of an entry -> its signature: a flood decodes once

    def add(self, when, url, lines, tail=None):
        """Count one entry; ``lines`` are its first lines (or the raw bytes of its start,
        decoded only when the entry starts a new kind), ``tail`` its last lines (or the
        raw bytes of its end; default: the same as ``lines``)."""
        tail = lines if tail is None else tail
        raw = tail if isinstance(tail, bytes) else None
        signature = None
        if raw is not None:
            signature = self._known.get(raw) or self._known.get((raw, url))
        if signature is None:
            if raw is not None:
                tail = _last_lines(raw)
            signature, by_url = signature_of(url, tail)
            if raw is not None and len(self._known) < MAX_SIGNATURES:
                self._known[(raw, url) if by_url else raw] = signature
        group = self.groups.get(signature)
        if group is None:
            if len(self.groups) >= MAX_SIGNATURES:
                signature = ("(other errors)", "", "")
                group = self.groups.get(signature)
            if group is None:
                if isinstance(lines, bytes):
                    lines = _lines(lines)
                group = self.groups[signature] = {
                    "count": 0, "first": when, "last": when, "url": url,
                    "sample": lines[:MAX_SAMPLE_LINES]}
        group["count"] += 1
        group["first"] = min(group["first"], when)
        group["last"] = max(group["last"], when)
        self.entries += 1

    def text(self, site):
        lines = [f"{self.entries} new errors in {len(self.groups)} kinds on {site}.", ""]
        ordered = sorted(self.groups.items(), key=lambda item: -item[1]["count"])
        for number, ((kind, message, where), group) in enumerate(ordered, 1):
            lines += [
                f"{number}. {kind}: {message}",
                f"   {group['count']} times, first {group['first']}, last {group['last']}",
                f"   at {where or '(no frame)'}; for example {group['url']}", "",
                *("      " + line for line in group["sample"]), "",
            ]
        return "\n".join(lines) + "\n"


def scan(path, start, digest, since=None):
    """Add the complete entries of ``path`` from byte ``start`` to ``digest``; return the
    offset the next run starts from: after the last complete line, or, when the file ends
    in the middle of a line, at the start of the entry still being written.

    The file is memory-mapped and searched in place (Searcher), so a multi-gigabyte log
    costs no more memory than a small one and is never copied; of each entry only its two
    ends are read, and an entry whose end was seen before is not decoded again.
    """
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size <= start:
            return start
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if hasattr(data, "madvise"):  # read ahead: the file is read once, front to back
                data.madvise(mmap.MADV_SEQUENTIAL)
            last_newline = data.rfind(b"\n", start, size)
            if last_newline < 0:
                return start
            limit = last_newline + 1
            last_year = datetime.datetime.fromtimestamp(os.fstat(handle.fileno()).st_mtime).year
            searcher = Searcher(data)
            try:
                current = _entries(data, searcher, start, limit, digest, since, last_year)
            finally:
                searcher.close()
    if current is None:
        return limit
    if limit < size:
        return current[4]  # its last line is not written yet: read it whole next time
    _finish(digest, current, since)
    return limit


def _markers(data, start, limit, last_year):
    """The byte strings that begin every entry line of this part of the file: a newline
    and the year, for each year from the first entry's to the file's last change. A longer
    marker is found faster; a file spanning more than a few years falls back to "\\n20"."""
    first = ENTRY.match(data, start)
    if first is None:
        position = data.find(b"\n20", start, limit)
        while position >= 0 and not ENTRY.match(data, position + 1):
            position = data.find(b"\n20", position + 1, limit)
        first = ENTRY.match(data, position + 1) if position >= 0 else None
    if first is None:
        return []
    first_year = int(first.group(1)[:4])
    if not 0 <= last_year - first_year <= 3:
        return [b"\n20"]
    return [b"\n%d-" % year for year in range(first_year, last_year + 1)]


def _ctypes_parts():
    """(memmem, Py_buffer type) where the C library has memmem and Python is CPython, else
    None. Looked up once, when the first large log is searched (ctypes is not needed for
    --help)."""
    try:
        import ctypes

        memmem = ctypes.CDLL(None).memmem
        ctypes.pythonapi.PyObject_GetBuffer, ctypes.pythonapi.PyBuffer_Release
    except (ImportError, OSError, AttributeError, TypeError):  # Windows, not CPython
        return None
    memmem.restype = ctypes.c_void_p
    memmem.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t)

    class PyBuffer(ctypes.Structure):
        """CPython's Py_buffer (stable ABI): how a read-only mapping's address is borrowed."""

        _fields_ = [("buf", ctypes.c_void_p), ("obj", ctypes.py_object),
                    ("len", ctypes.c_ssize_t), ("itemsize", ctypes.c_ssize_t),
                    ("readonly", ctypes.c_int), ("ndim", ctypes.c_int),
                    ("format", ctypes.c_char_p), ("shape", ctypes.c_void_p),
                    ("strides", ctypes.c_void_p), ("suboffsets", ctypes.c_void_p),
                    ("internal", ctypes.c_void_p)]

    return memmem, PyBuffer


class Searcher:
    """``find(needle, start, end)`` over a read-only mapping of a log.

    On a large log it calls the C library's memmem, which measured about three times as
    fast as mmap.find for the entry markers (its search is vectorised; CPython's is not).
    The mapping's address is borrowed with PyObject_GetBuffer, which also keeps the
    mapping from being closed until ``close()``. Elsewhere (no memmem, as on Windows, or
    not CPython), and for small spans, it is mmap.find. Both give the same answers.
    """

    parts = None
    looked_up = False

    def __init__(self, data, minimum=1 << 20):
        self.data, self.minimum, self._view = data, minimum, None
        if len(data) < minimum:
            return
        if not Searcher.looked_up:
            Searcher.parts, Searcher.looked_up = _ctypes_parts(), True
        if Searcher.parts is None:
            return
        import ctypes

        self._memmem, buffer_type = Searcher.parts
        view = buffer_type()
        if ctypes.pythonapi.PyObject_GetBuffer(ctypes.py_object(data), ctypes.byref(view), 0):
            return
        self._view, self._base = view, view.buf

    def find(self, needle, start, end):
        end = min(end, len(self.data))
        if self._view is None or end - start < self.minimum:
            return self.data.find(needle, start, end)
        if start < 0 or end - start < len(needle):
            return -1
        found = self._memmem(self._base + start, end - start, needle, len(needle))
        return found - self._base if found else -1

    def close(self):
        """Give the borrowed buffer back: the mapping can be closed after this."""
        if self._view is not None:
            import ctypes

            ctypes.pythonapi.PyBuffer_Release(ctypes.byref(self._view))
            self._view = None


def _entries(data, searcher, start, limit, digest, since, last_year):
    """Count the entries between ``start`` and ``limit`` (both at line starts); return the
    last one, still open. Entry starts are found with find (fast) and checked with the
    regular expression; lines before the first entry belong to one already reported."""
    starts = [start] if ENTRY.match(data, start) else []
    for marker in _markers(data, start, limit, last_year):
        position = start
        while True:
            position = searcher.find(marker, position, limit)
            if position < 0:
                break
            position += 1
            if ENTRY.match(data, position):
                starts.append(position)
    starts.sort()
    current = None
    for index, begin in enumerate(starts):
        if current:
            _finish(digest, current, since)
        finish = starts[index + 1] if index + 1 < len(starts) else limit
        match = ENTRY.match(data, begin)
        header_end = data.find(b"\n", begin, finish)
        when = f"{match.group(1).decode()},{match.group(2).decode()}"
        url = match.group(3).decode("utf-8", "replace").strip()
        body = header_end + 1
        # Only the ends of an entry are kept, however long it is: the first bytes (the
        # sample) and the last ones (where the exception and the innermost frame are),
        # decoded only when needed.
        current = [when, url, data[body:min(finish, body + EDGE)],
                   data[max(body, finish - EDGE):finish], begin]
    return current


def _lines(data):
    text = data.decode("utf-8", "replace")
    return [line for line in text.splitlines() if line.strip()]


def _last_lines(data):
    """The last TAIL_LINES lines of ``data`` that are not blank, decoded: only the bytes
    after the last few newlines are decoded, unless too many of those lines are blank."""
    cut = TAIL_LINES + 5
    first, *rest = data.rsplit(b"\n", cut)
    lines = _lines(data[len(first) + 1:] if len(rest) == cut else data)
    if len(lines) < TAIL_LINES and len(rest) == cut:
        lines = _lines(data)
    return lines[-TAIL_LINES:]


def _finish(digest, entry, since):
    when, url, head, tail, _ = entry
    if since is None or when >= since:
        digest.add(when, url, head, tail)


def identity(path):
    """Return (device:inode, size) of a file."""
    info = path.stat()
    return f"{info.st_dev}:{info.st_ino}", info.st_size


def head_hash(path, length):
    """A hash of a file's first ``length`` bytes: the same file, not one reusing its inode."""
    import hashlib

    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read(length)).hexdigest()[:16]


def log_files(folder):
    """The site's error log files, oldest first ({date}: path, today's last)."""
    found = []
    for path in folder.glob("error.log*"):
        match = ROTATED.match(path.name)
        if match and path.is_file() and not path.is_symlink():
            found.append((match.group(1) or "9999-99-99", path))
    return [path for _, path in sorted(found)]


def collect(folder, positions, first_run, since=None):
    """Read what is new; return (digest, new positions)."""
    digest = Digest()
    new_positions = {}
    yesterday = (datetime.date.today() - datetime.timedelta(days=1)).isoformat()
    for path in log_files(folder):
        try:
            key, size = identity(path)
            known = positions.get(key)
            same = bool(known) and known["offset"] <= size and \
                head_hash(path, known["head_length"]) == known["head"]
        except OSError:
            continue
        if since is not None:
            scan(path, 0, digest, since)
            continue
        if same:
            start = known["offset"]
        elif first_run and ROTATED.match(path.name).group(1) and \
                ROTATED.match(path.name).group(1) < yesterday:
            start = size  # history before the first run is not news
        else:
            start = 0  # a new file, or one truncated or replaced since the last run
        offset = scan(path, start, digest) if start < size else start
        length = min(HEAD, offset)
        new_positions[key] = {"name": path.name, "offset": offset, "head_length": length,
                              "head": head_hash(path, length)}
    return digest, new_positions


def task(context, site):
    from cioctasks import config, mail

    settings, args = context.settings, context.args
    folder = Path(settings.log_root) / site / "python"
    variable = "CIOC_ERROR_EMAIL_" + re.sub(r"\W", "_", site.upper())
    recipients = config.setting_emails(settings, variable) or (
        [settings.task_notify_email] if settings.task_notify_email else [])
    if not recipients:
        raise cioctasks.ConfigError(f"neither {variable} nor CIOC_TASK_NOTIFY_EMAIL is set")
    since = rescan_start(args)
    key = f"positions:{site}"
    stored = context.state.get(context.task, key)
    digest, positions = collect(folder, stored or {}, stored is None, since)

    def record():  # the positions move with the stored digest, before the server has it
        if since is None:
            context.state.set(context.task, key, positions)

    status = "no mail"
    if digest.entries:
        # A rescan is new work: its own Message-ID.
        identity = (context.task, site, stored, positions, since, since and time.time())
        message = mail.Message(
            to=recipients, sender=settings.task_notify_email or recipients[0],
            subject=f"[cioctasks] {site}: {digest.entries} errors in {len(digest.groups)} kinds",
            text=digest.text(site), identity=identity)
        with context.mailer.session() as session:
            status = session.send(message, record)
        context.log.info("digest of %d errors %s to %s", digest.entries, status,
                         ", ".join(recipients))
    elif not context.dry_run:
        record()
    for line in context.mailer.problems:  # a queued digest is not delivered
        context.problem(line)
    what = "rescanned" if since else "new"
    summary = f"{digest.entries} {what} errors in {len(digest.groups)} kinds"
    if status == "spooled":
        return summary  # the problem above says it is queued, and why
    verb = {"no mail": "no mail", "dry-run": "would mail"}.get(status, "mailed")
    return f"{summary}; {verb}"


def rescan_start(args):
    if args.since:
        return args.since.strftime("%Y-%m-%d %H:%M:%S,000")
    span = datetime.timedelta(days=args.days or 0, hours=args.hours or 0, minutes=args.minutes or 0)
    if not span:
        return None
    return (datetime.datetime.now() - span).strftime("%Y-%m-%d %H:%M:%S,000")


def add_arguments(parser):
    window = parser.add_argument_group("rescan a window (no read position moves)")
    window.add_argument("--since", type=datetime.datetime.fromisoformat,
                        metavar="'YYYY-MM-DD hh:mm:ss'", help="rescan the errors since this moment")
    window.add_argument("--days", type=cioctasks.number(0, 3650),
                        help="rescan the errors of the last N days")
    window.add_argument("--hours", type=cioctasks.number(0, 24 * 3650),
                        help="rescan the errors of the last N hours")
    window.add_argument("--minutes", type=cioctasks.number(0, 24 * 60 * 3650),
                        help="rescan the errors of the last N minutes")


if __name__ == "__main__":
    sys.exit(cioctasks.run(task, add_arguments, per_database=True))
