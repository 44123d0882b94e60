"""Files that are never seen half-written, and deletes that never leave their root.

``atomic_write`` and ``publish`` write to a temporary file in the target folder, fsync it and
``os.replace`` it over the target, so a reader sees the old file or the new one, never a
part. ``safe_delete`` refuses any path outside the given root, including through symlinks.

A temporary file is named for its target and the process writing it,
``.<target name>.<pid>.tmp``, so that when a run is killed (a time limit, a reboot) the next
one can tell its leftovers from the files of a run still going: ``remove_leftovers``
deletes only such files whose process is gone from this host.
"""

import contextlib
import os
import re
import sys
import time
from pathlib import Path


def _fsync_folder(folder):
    if os.name == "nt":
        return  # folders cannot be opened for fsync on Windows; NTFS journals the rename
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _process_umask():
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


#: Read once, at import (before any thread starts): os.umask can only be read by setting it.
UMASK = _process_umask()


def plain_mode(target, default=0o666):
    """The permission bits a file written over ``target`` should get: the replaced file's,
    else what ``open`` (or ``mkdir``, with ``default=0o777``) would give a new one. The
    temporary files and folders of tempfile are private (0600/0700), which would hide a
    published file from the web server."""
    try:
        return os.stat(target).st_mode & 0o7777
    except OSError:
        return default & ~UMASK


#: ``.<target name>.<pid>.tmp``, or ``.<target name>.<pid>-<n>.tmp`` when that name is taken.
TEMPORARY = re.compile(r"^\.(?P<target>.+)\.(?P<pid>[0-9]+)(?:-[0-9]+)?\.tmp$")


def create_temporary(target, private=False):
    """Given a target path, create a new empty temporary file beside it named for it and
    this process (see TEMPORARY); return (an open file descriptor, its path).

    The file gets the mode ``target`` will have (``plain_mode``), or 0600 when ``private``:
    for a file a web server must not serve until it is whole; give it its mode before
    publishing it. Raise OSError if it cannot be created.
    """
    target = Path(target)
    flags = (os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
             | getattr(os, "O_NOINHERIT", 0))
    mode = 0o600 if private else plain_mode(target)
    for number in range(1, 1000):
        # Taken: a thread of this process writes the same target, or a killed run with
        # this pid left it.
        suffix = "" if number == 1 else f"-{number}"
        path = target.with_name(f".{target.name}.{os.getpid()}{suffix}.tmp")
        try:
            fd = os.open(path, flags, mode)
        except FileExistsError:
            continue
        if not private:
            try:
                os.chmod(path, mode)  # os.open's mode went through the umask
            except OSError:
                os.close(fd)
                os.unlink(path)
                raise
        return fd, path
    raise FileExistsError(f"no free temporary name for {target}")


@contextlib.contextmanager
def synced(handle):
    """Write through ``handle`` in the block; on leaving it, flush, fsync and close it. If
    the block or the sync fails (a full disk), close it without a second error on top."""
    try:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(OSError, ValueError):  # the disk may still be full
            handle.close()
        raise
    handle.close()


@contextlib.contextmanager
def atomic_writer(target, mode="wb", encoding=None, newline=None):
    """Yield a file open on a temporary file beside ``target``; on success it replaces
    ``target`` atomically, on error it is removed and ``target`` is untouched."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = create_temporary(target)
    except OSError as error:  # named for the target, not for the temporary file
        raise OSError(error.errno, error.strerror or str(error), str(target)) from None
    try:
        with os.fdopen(fd, mode, encoding=encoding, newline=newline) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.replace(temporary, target)
        except OSError as error:  # a folder in the way: name it, not the temporary file
            raise OSError(error.errno, error.strerror or str(error), str(target)) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _fsync_folder(target.parent)


def atomic_write(target, data, encoding="utf-8"):
    """Write ``data`` (bytes or str) to ``target`` atomically."""
    if isinstance(data, str):
        data = data.encode(encoding)
    with atomic_writer(target) as handle:
        handle.write(data)


def publish(source, target):
    """Move a finished file over ``target`` atomically, copying first when the two are on
    different file systems (the copy lands beside the target, then is renamed)."""
    source, target = Path(source), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(source, target)
    except OSError:
        with source.open("rb") as reader, atomic_writer(target) as writer:
            while True:
                chunk = reader.read(1 << 20)
                if not chunk:
                    break
                writer.write(chunk)
        source.unlink()
        return
    _fsync_folder(target.parent)


def crc_and_size(path, chunk=1 << 20):
    """(CRC-32, size) of a file read in chunks: what a zip member of it must match."""
    import zlib

    crc, size = 0, 0
    with open(path, "rb") as handle:
        while True:
            data = handle.read(chunk)
            if not data:
                return crc, size
            crc = zlib.crc32(data, crc)
            size += len(data)


def is_inside(path, root):
    """True if ``path``, with every symlink resolved, lies inside ``root`` (also resolved)."""
    try:
        resolved = Path(path).resolve(strict=False)
        base = Path(root).resolve(strict=True)
    except (OSError, RuntimeError):
        return False
    return resolved == base or base in resolved.parents


def safe_delete(path, root):
    """Delete a regular file that lies inside ``root``; refuse symlinks and anything outside.

    Raise ValueError for a path we refuse; OSError if the delete itself fails.
    """
    path = Path(path)
    if path.is_symlink():
        raise ValueError(f"refusing to delete a symlink: {path}")
    if not is_inside(path, root):
        raise ValueError(f"refusing to delete outside {root}: {path}")
    if not path.is_file():
        raise ValueError(f"not a regular file: {path}")
    path.unlink()


# -- leftovers of killed runs ----------------------------------------------------------------

#: A temporary file whose process still runs is left alone unless it has not changed for
#: this long (no task runs for a day; a process that does is hung, or not the writer).
LEFTOVER_AGE = 24 * 3600
#: How far a process's start may lie after its file's last change and still be its writer:
#: the start time is known to about a second.
START_SLACK = 5


def process_start(pid):
    """Given a process id, return None if no process of that id runs on this host, else
    its start time (seconds since the epoch), or 0.0 when it runs but the start is not
    known (another user's process on Windows, a system without /proc)."""
    if not 0 < pid < 2**31:
        return None
    if sys.platform.startswith("win"):
        return _windows_process_start(pid)
    if os.path.isdir("/proc/self"):
        return _proc_process_start(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except OSError:  # PermissionError: another user's process
        pass
    return 0.0


def _proc_process_start(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except FileNotFoundError:
        return None
    except OSError:
        return 0.0
    # The command name, in parentheses, may hold spaces and parentheses: count from the last.
    fields = stat[stat.rindex(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):  # a zombie writes nothing: it is gone
        return None
    try:
        with open("/proc/stat", "rb") as handle:
            boot = next(int(line.split()[1]) for line in handle if line.startswith(b"btime "))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, StopIteration, ValueError, IndexError):
        return 0.0


def _windows_process_start(pid):
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    kernel32.OpenProcess.argtypes = (wintypes.DWORD, wintypes.BOOL, wintypes.DWORD)
    kernel32.OpenProcess.restype = wintypes.HANDLE
    kernel32.GetExitCodeProcess.argtypes = (wintypes.HANDLE, ctypes.POINTER(wintypes.DWORD))
    kernel32.GetProcessTimes.argtypes = (wintypes.HANDLE,) + (
        ctypes.POINTER(wintypes.FILETIME),) * 4
    kernel32.CloseHandle.argtypes = (wintypes.HANDLE,)
    # os.kill(pid, 0) would end the process on Windows: ask for its exit code instead.
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return 0.0 if ctypes.get_last_error() == 5 else None  # 5: access denied, it runs
    try:
        code = wintypes.DWORD()
        if kernel32.GetExitCodeProcess(handle, ctypes.byref(code)) and code.value != 259:
            return None  # it has ended (259 is STILL_ACTIVE)
        times = [wintypes.FILETIME() for _ in range(4)]
        if not kernel32.GetProcessTimes(handle, *(ctypes.byref(t) for t in times)):
            return 0.0
        created = (times[0].dwHighDateTime << 32) | times[0].dwLowDateTime
        return created / 10_000_000 - 11_644_473_600  # 100 ns ticks since 1601
    finally:
        kernel32.CloseHandle(handle)


def _writer_gone(pid, modified, now):
    """Why the temporary file of process ``pid``, last changed at ``modified``, is a
    leftover, or None if its writer may still run."""
    started = process_start(pid)
    if started is None:
        return f"process {pid} is gone"
    if started > modified + START_SLACK:
        return f"process {pid} is another process, started after the file's last change"
    if now - modified > LEFTOVER_AGE:
        return f"unchanged for {(now - modified) / 3600:.0f} hours"
    return None


def leftovers(folder, targets, now=None):
    """Given a folder and a regular expression for the names of the files we publish
    there, return [(path, reason)] for the temporary files of those names (TEMPORARY)
    left there by a process that is gone. Files of this process, files of a process that
    still runs, and anything else are not listed; a missing folder has none."""
    now = time.time() if now is None else now
    targets = re.compile(targets) if isinstance(targets, str) else targets
    found = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return found
    for entry in entries:
        match = TEMPORARY.match(entry.name)
        if not match or not targets.fullmatch(match["target"]):
            continue
        pid = int(match["pid"])
        if not 0 < pid < 2**31 or pid == os.getpid():
            continue  # not a process id: not a file of ours; or this process's own
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            modified = entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue  # gone meanwhile
        reason = _writer_gone(pid, modified, now)
        if reason:
            found.append((Path(entry.path), reason))
    return sorted(found)


def remove_leftovers(folder, targets, log, dry_run=False, now=None):
    """Delete the ``leftovers(folder, targets)``, logging each; return the paths removed
    (with ``dry_run``, that would be). One that cannot be deleted (held open on Windows)
    is logged as a warning and left for the next run."""
    removed = []
    for path, reason in leftovers(folder, targets, now):
        if dry_run:
            log.info("(dry run) would remove %s, left by a killed run (%s)", path, reason)
        else:
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as error:
                log.warning("cannot remove %s, left by a killed run: %s", path,
                            error.strerror or error)
                continue
            log.info("removed %s, left by a killed run (%s)", path, reason)
        removed.append(path)
    return removed
