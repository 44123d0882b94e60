"""Reading the new part of a Python error log into a digest, fast (process_logged_errors).

An entry is a line starting with its time ("2026-11-22 14:03:11,123 <request URL>") and the
traceback lines under it. ``scan`` maps only the new bytes of a log, finds the entry
headers with the regular expression engine, and counts entries per signature (exception
type, message with numbers, quoted values and GUIDs blurred, innermost frame) in a
``Digest``: count, first and last time, a sample URL and a sample traceback.
"""

import collections
import datetime
import itertools
import mmap
import operator
import os
import re

try:  # CPython's built-in SHA-256: hashlib would load OpenSSL, 3 ms of a 70 ms idle run
    from _sha2 import sha256  # Python 3.12 and later
except ImportError:
    try:
        from _sha256 import sha256
    except ImportError:
        from hashlib import sha256

HEAD = 256
MAX_SIGNATURES = 500
MAX_SAMPLE_LINES = 60
TAIL_LINES = 20
EDGE = 4096  # bytes decoded at each end of an entry
KEY = 512  # bytes at the end of an entry that are looked up (Tally)
MAX_KEYS = 100_000
STEP = 32 << 20  # bytes searched at a time: what Tally holds is bounded by this
SPLIT = 16 << 20  # more new bytes than this are read by two processes, where fork exists
#: An entry's first line: its time, then the request URL.
_AFTER_YEAR = rb"-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ?([^\r\n]*)"
ENTRY = re.compile(rb"(20\d\d" + _AFTER_YEAR)
HEADER = re.compile(b"\n" + ENTRY.pattern)  # "\n20" first: the engine searches that in C
DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
DIGITS_TO_ZERO_TEXT = str.maketrans("123456789", "000000000")
_HEADERS = {}
_TIME = operator.itemgetter(1)  # of a header match: its time, as bytes
_BEGIN = operator.methodcaller("start", 1)  # of a header match: where its entry begins
EXACT = "exact"  # Tally: the signature of entries with this key is read from their bytes
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
        self._by_key = {}  # an entry's last KEY bytes, digits made 0 -> signature (Tally)
        self._special = {}  # such keys whose signature needs more than the key
        self._urls = {}  # a URL, digits made 0 -> blurred

    def signature(self, url, raw):
        """The signature of an entry whose end is the bytes ``raw``, and whether it is by
        URL; an end seen before is not decoded again."""
        signature = self._known.get(raw) or self._known.get((raw, url))
        if signature is not None:
            return signature, False
        signature, by_url = signature_of(url, _last_lines(raw))
        if len(self._known) < MAX_SIGNATURES:
            self._known[(raw, url) if by_url else raw] = signature
        return signature, by_url

    def blurred(self, url):
        """blur(url), once per URL shape: blurring does not depend on which digits."""
        shape = url.translate(DIGITS_TO_ZERO_TEXT)
        value = self._urls.get(shape)
        if value is None:
            value = blur(url)
            if len(self._urls) < MAX_KEYS:
                self._urls[shape] = value
        return value

    def add(self, when, url, lines, tail=None):
        """Count one entry from its lines: ``lines`` its first ones (the sample), ``tail``
        its last ones (default: the same)."""
        signature, _ = signature_of(url, lines if tail is None else tail)
        self._count(signature, 1, when, when, url, lambda: lines)

    def add_counted(self, signatures, found, ends, data):
        """Count entries whose signatures are known, many at once: ``found`` are their
        header matches in ``data`` and ``ends`` where they end, in the file's order."""
        numbers = collections.Counter(signatures)
        first = dict(zip(reversed(signatures), range(len(signatures) - 1, -1, -1)))
        times = list(map(_TIME, found))
        if times == sorted(times):  # as a log is written: the first and last are the ends
            last = dict(zip(signatures, range(len(signatures))))
            span = {signature: (times[first[signature]], times[last[signature]])
                    for signature in numbers}
        else:  # threads wrote out of order: look at every time
            span = {}
            for signature, moment in zip(signatures, times):
                earliest, latest = span.get(signature, (moment, moment))
                span[signature] = (min(earliest, moment), max(latest, moment))
        for signature, number in numbers.items():
            head = found[first[signature]]
            body, end = head.end(), ends[first[signature]]
            earliest, latest = span[signature]
            self._count(signature, number, earliest.decode(), latest.decode(),
                        head.group(2).decode("utf-8", "replace").strip(),
                        lambda: _lines(data[body:min(end, body + EDGE)]))

    def merge(self, groups):
        """Add the ``groups`` of another digest, of a later part of the log."""
        for signature, group in groups.items():
            self._count(signature, group["count"], group["first"], group["last"],
                        group["url"], lambda: group["sample"])

    def _count(self, signature, number, first, last, url, sample):
        group = self.groups.get(signature)
        if group is None:
            if len(self.groups) >= MAX_SIGNATURES:
                signature = ("(other errors)", "", "")
                group = self.groups.get(signature)
            if group is None:
                group = self.groups[signature] = {
                    "count": 0, "first": first, "last": last, "url": url,
                    "sample": sample()[:MAX_SAMPLE_LINES]}
        group["count"] += number
        group["first"] = min(group["first"], first)
        group["last"] = max(group["last"], last)
        self.entries += number

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

    Only the new part of the file is memory-mapped, and it is searched in place, in steps
    of STEP bytes (Tally), so a multi-gigabyte log costs no more memory than a small one.
    """
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size <= start:
            return start
        base = start - start % mmap.ALLOCATIONGRANULARITY  # where a mapping may begin
        with mmap.mmap(handle.fileno(), size - base, access=mmap.ACCESS_READ,
                       offset=base) as data:
            if hasattr(data, "madvise"):  # read ahead: the file is read once, front to back
                data.madvise(mmap.MADV_SEQUENTIAL)
            limit = data.rfind(b"\n", start - base) + 1
            if not limit:
                return start
            last_year = datetime.datetime.fromtimestamp(os.fstat(handle.fileno()).st_mtime).year
            tally = Tally(digest, data, since and since.encode(), last_year)
            last = _read_in_two(tally, start - base, limit)
            if last is not None and limit < len(data):
                return base + last.start(1)  # its last line is not written yet: next time
            tally.finish(last, limit)
    return base + limit


def _read_in_two(tally, start, limit):
    """``tally.read(start, limit)``, the first half in a child process where the system
    forks and has a second core: the regular expression search holds the interpreter's
    lock, so threads would take turns. The child sends its digest back through a pipe;
    the parent merges it before its own half, in the order of the file. A child that
    fails leaves its half to the parent, so the result never depends on the fork."""
    middle = None
    if limit - start > SPLIT and hasattr(os, "fork") and (os.cpu_count() or 1) > 1:
        found = HEADER.search(tally.data, start + (limit - start) // 2, limit)
        middle = found and found.start(1)
    if not middle:
        return tally.read(start, limit)
    import pickle
    import warnings

    reader, writer = os.pipe()
    try:
        with warnings.catch_warnings():  # Python 3.12 warns of fork with threads (the time
            warnings.simplefilter("ignore", DeprecationWarning)  # limit's): the child reads
            pid = os.fork()
    except OSError:  # no memory or process left for a child: one process reads it all
        os.close(reader)
        os.close(writer)
        return tally.read(start, limit)
    if pid == 0:
        status = 1
        try:
            os.close(reader)
            first = tally.twin(Digest())
            first.finish(first.read(start, middle), middle)
            with os.fdopen(writer, "wb") as pipe:
                pickle.dump(first.digest.groups, pipe, pickle.HIGHEST_PROTOCOL)
            status = 0
        finally:
            os._exit(status)
    os.close(writer)
    pipe = os.fdopen(reader, "rb")
    try:
        second = tally.twin(Digest())
        last = second.read(middle, limit)
        sent = pipe.read()
    finally:
        pipe.close()  # a child still writing then stops (broken pipe): nothing waits
        _, status = os.waitpid(pid, 0)
    if status == 0 and sent:
        tally.digest.merge(pickle.loads(sent))
    else:
        tally.finish(tally.read(start, middle), middle)
    tally.digest.merge(second.digest.groups)
    return last


class Tally:
    """Counts the entries of one mapped log into a Digest, many at a time.

    Entry starts are found by the regular expression engine, whose search for the literal
    start of a header ("\\n2026-", see _headers) runs in C and beats a loop of finds. An
    entry's signature depends on its last lines only, so each entry is looked up by its
    last KEY bytes with every digit made 0: a flood of one error, or of one error with
    different numbers, is one dictionary hit per entry, and the entries of a step are
    counted per signature at once. A key whose signature it cannot fix (no frame and
    exception line inside it, or a digit in the exception type or frame name) sends its
    entries to the exact path, which reads the last EDGE bytes as before.
    """

    def __init__(self, digest, data, since, last_year):
        self.digest, self.data, self.since, self.last_year = digest, data, since, last_year
        self.known, self.special = digest._by_key, digest._special

    def twin(self, digest):
        """A Tally of the same mapping into another digest."""
        return Tally(digest, self.data, self.since, self.last_year)

    def read(self, start, limit):
        """Count the entries that begin between ``start`` and ``limit`` (line starts),
        except the last, which is returned (its end is not known); lines before the first
        entry belong to one already reported."""
        data = self.data
        last = ENTRY.match(data, start)
        first = last or HEADER.search(data, start, limit)
        if first is None:
            return None
        patterns = _headers(int(first.group(1)[:4]), self.last_year)
        position = start
        while position < limit:
            stop = limit
            if limit - position > STEP:
                stop = data.find(b"\n", position + STEP, limit)
                stop = limit if stop < 0 else stop
            found = list(patterns[0].finditer(data, position, stop))
            if len(patterns) > 1:
                found = sorted(found + [m for pattern in patterns[1:]
                                        for m in pattern.finditer(data, position, stop)],
                               key=lambda match: match.start())
            if last is not None:
                found.insert(0, last)
            if found:
                last = found.pop()
                self.count(found, list(map(_BEGIN, found[1:])) + [last.start(1)])
            position = stop
            if hasattr(data, "madvise") and position > EDGE:
                # Pages searched are let go (they stay in the page cache; what is looked at
                # again is mapped again): the process stays small however much is new.
                done = position - EDGE
                data.madvise(mmap.MADV_DONTNEED, 0, done - done % mmap.PAGESIZE)
        return last

    def finish(self, last, end):
        """Count the entry ``last`` that ``read`` left open, now known to end at ``end``."""
        if last is not None:
            self.count([last], [end])

    def count(self, found, ends):
        """Add the entries ``found`` (header matches) ending at ``ends``."""
        if not found:
            return
        if self.since is not None:
            kept = [i for i, m in enumerate(found) if m.group(1) >= self.since]
            found, ends = [found[i] for i in kept], [ends[i] for i in kept]
        data, known = self.data, self.known
        bodies = list(map(re.Match.end, found))
        # The same as [data[max(body, end - KEY):end].translate(...) for ...], but every
        # step of it a loop in C.
        keys = list(map(bytes.translate, map(data.__getitem__, map(
            slice, map(max, bodies, map(operator.sub, ends, itertools.repeat(KEY))), ends)),
            itertools.repeat(DIGITS_TO_ZERO)))
        signatures = list(map(known.get, keys))
        if None in signatures:
            for key in set(keys).difference(known, self.special):
                value = _signature_of_key(key)
                store = known if value.__class__ is tuple else self.special
                if len(store) < MAX_KEYS:
                    store[key] = value
            signatures = list(map(known.get, keys))
        if None in signatures:  # entries whose signature needs more than the key
            for index in [i for i, signature in enumerate(signatures) if signature is None]:
                signatures[index] = self._resolve(keys[index], found[index],
                                                  bodies[index], ends[index])
        self.digest.add_counted(signatures, found, ends, data)

    def _resolve(self, key, match, body, end):
        value = self.special.get(key) or _signature_of_key(key)
        if value.__class__ is tuple:  # past MAX_KEYS
            return value
        url = match.group(2).decode("utf-8", "replace").strip()
        if value is EXACT:
            signature, _ = self.digest.signature(url, self.data[max(body, end - EDGE):end])
            return signature
        return ("(no traceback)", self.digest.blurred(url), value.where)


class ByURL:
    """Tally: entries whose signature is their URL and this frame."""

    __slots__ = ("where",)

    def __init__(self, where):
        self.where = where


def _headers(first_year, last_year):
    """The expressions that find entry headers, one per year from the first entry's to the
    file's last change: a longer literal start ("\\n2026-") is found faster. A file
    spanning more than a few years gets the one for any year."""
    if not 0 <= last_year - first_year <= 3:
        return [HEADER]
    return [_HEADERS.get(year) or _HEADERS.setdefault(year, re.compile(
        b"\n(%d" % year + _AFTER_YEAR)) for year in range(first_year, last_year + 1)]


def _signature_of_key(key):
    """The signature every entry ending in ``key`` (digits made 0) has, or ByURL when it
    also depends on the entry's URL, or EXACT when the key does not decide it."""
    lines = [line for line in key.decode("utf-8", "replace").splitlines()[1:] if line.strip()]
    lines = lines[-TAIL_LINES:]
    frame_found = any(FRAME.match(line) for line in lines if 'File "' in line)
    exception = any(line[:1].strip() and not line.startswith(("Traceback", "During handling",
                                                               "The above")) for line in lines)
    if not (frame_found and exception):
        return EXACT
    (kind, message, where), by_url = signature_of("", lines)
    if "0" in where or (not by_url and "0" in kind):
        return EXACT  # a digit in a name: the key made it 0, the exact path keeps it
    return ByURL(where) if by_url else (kind, message, where)


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


def identity(path):
    """Return (device:inode, size) of a file."""
    info = path.stat()
    return f"{info.st_dev}:{info.st_ino}", info.st_size


def head_hash(path, length):
    """A hash of a file's first ``length`` bytes (SHA-256, as stored by every version): the
    same file, not one reusing its inode."""
    with open(path, "rb") as handle:
        return sha256(handle.read(length)).hexdigest()[:16]
