"""Files that are never seen half-written, and deletes that never leave their root.

``atomic_write`` and ``publish`` write to a temporary file in the target folder, fsync it and
``os.replace`` it over the target, so a reader sees the old file or the new one, never a
part. ``safe_delete`` refuses any path outside the given root, including through symlinks.
"""

import contextlib
import os
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


@contextlib.contextmanager
def atomic_writer(target, mode="wb", encoding=None, newline=None):
    """Yield a file open on a temporary file beside ``target``; on success it replaces
    ``target`` atomically, on error it is removed and ``target`` is untouched."""
    import tempfile

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.chmod(temporary, plain_mode(target))
        with os.fdopen(fd, mode, encoding=encoding, newline=newline) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
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
