"""Password archives: ``.zip`` with AES-256 (pyzipper, WinZip AE-2) and ``.7z`` with AES-256
and encrypted names (py7zr).

``pack`` writes the archive to a temporary file beside the target, reads every member back
with the password and checks it, and only then replaces the target atomically: a download
that fails at any step leaves the previous one in place. The temporary file is private
(0600) until it is published, so that a web server never serves half an archive, and named
for this process (``files.TEMPORARY``) so that a later run removes it if this one is
killed. Passwords never reach a command line, a log line or an exception message.
"""

import contextlib
import os
import zlib
from pathlib import Path

from cioctasks import files
from cioctasks.errors import TaskError

FORMATS = ("zip", "7z")
CHUNK = 1 << 20


class ArchiveError(TaskError):
    """An archive that could not be written or did not read back as written."""


def format_of(path):
    """Return ``zip`` or ``7z`` from the archive's file name; raise ArchiveError otherwise."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise ArchiveError(f"{Path(path).name}: archives must end in .zip or .7z")
    return suffix


def _check_password(password):
    if not isinstance(password, str) or not password:
        raise ArchiveError("an archive password is required")
    if any(c in password for c in "\r\n\0"):
        raise ArchiveError("the archive password holds a line break or NUL")


def abandon_zip(archive):
    """Forget a zip archive (zipfile's or pyzipper's) whose writing failed, writing nothing
    more: its file is being removed. pyzipper leaves a member's writer open when a write
    fails, and then its close(), and __del__ at garbage collection, raise ValueError ("an
    open writing handle") over the real error; zipfile's close() would write the central
    directory to the full disk again."""
    archive._writing = False
    archive.fp = None


def _write_zip(handle, members, password, level):
    import pyzipper

    archive = pyzipper.AESZipFile(handle, "w", compression=pyzipper.ZIP_DEFLATED,
                                  compresslevel=level, encryption=pyzipper.WZ_AES)
    try:
        archive.setpassword(password.encode("utf-8"))
        archive.setencryption(pyzipper.WZ_AES, nbits=256)
        for name, source in members:
            archive.write(source, arcname=name)
    except BaseException:
        abandon_zip(archive)
        raise
    archive.close()


def _verify_zip(path, expected, password):
    import pyzipper

    with pyzipper.AESZipFile(path) as archive:
        archive.setpassword(password.encode("utf-8"))
        names = archive.namelist()
        if sorted(names) != sorted(expected):
            raise ArchiveError(f"{path.name}: holds {len(names)} members, expected {len(expected)}")
        for name in names:
            crc, size = 0, 0
            with archive.open(name) as member:
                while True:
                    chunk = member.read(CHUNK)
                    if not chunk:
                        break
                    crc = zlib.crc32(chunk, crc)
                    size += len(chunk)
            if (crc, size) != expected[name]:
                raise ArchiveError(f"{path.name}: {name} does not read back as written")


def _write_7z(handle, members, password, level):
    import py7zr

    filters = [{"id": py7zr.FILTER_LZMA2, "preset": min(level, 9)},
               {"id": py7zr.FILTER_CRYPTO_AES256_SHA256}]
    with py7zr.SevenZipFile(handle, "w", password=password, header_encryption=True,
                            filters=filters) as archive:
        for name, source in members:
            archive.write(source, arcname=name)


def _verify_7z(path, expected, password):
    import py7zr

    with py7zr.SevenZipFile(path, "r", password=password) as archive:
        listed = {info.filename: (info.crc32, info.uncompressed) for info in archive.list()}
        if listed != expected:
            raise ArchiveError(f"{path.name}: members do not match what was written")
        # test() decrypts every member and checks it against its stored CRC.
        if archive.test() is False:
            raise ArchiveError(f"{path.name}: a member fails its CRC check")


def pack(target, sources, password, level=6, archive_format=None):
    """Write ``sources`` (paths; stored under their file names) into a password archive at
    ``target``, verify it with the password, then replace ``target`` atomically.

    Return the size of the archive. Raise ArchiveError if writing or verifying fails; the
    previous ``target`` is then untouched and no temporary file is left.
    """
    _check_password(password)
    target = Path(target)
    archive_format = archive_format or format_of(target)
    sources = [Path(s) for s in sources]
    members = [(s.name, s) for s in sources]
    if len({name for name, _ in members}) != len(members):
        raise ArchiveError(f"{target.name}: two sources share a file name")
    try:
        expected = {name: files.crc_and_size(source) for name, source in members}
    except OSError as error:
        raise ArchiveError(f"cannot read {error.filename}: {error.strerror}") from None
    write, verify = (_write_zip, _verify_zip) if archive_format == "zip" else (_write_7z, _verify_7z)
    temporary = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = _open_temporary(target)
        with files.synced(handle):
            write(handle, members, password, level)
        verify(temporary, expected, password)
        size = temporary.stat().st_size
        os.chmod(temporary, files.plain_mode(target))
        files.publish(temporary, target)
        return size
    except ArchiveError:
        raise
    except OSError as error:
        if not error.strerror:
            raise _failure(target, error, password) from None
        # A full disk, a folder we may not write: the one line names the place.
        where = error.filename or target.parent
        raise ArchiveError(f"{target.name}: cannot write the archive: {where}: "
                           f"{error.strerror}") from None
    except Exception as error:
        raise _failure(target, error, password) from None
    finally:
        if temporary is not None:
            with contextlib.suppress(OSError):  # else the next run removes it
                temporary.unlink()


def _open_temporary(target):
    """The file the archive is written to: beside ``target``, private until published,
    named for this process. Return (binary file open for writing and reading, path)."""
    fd, path = files.create_temporary(target, private=True)
    return os.fdopen(fd, "w+b"), path


def _failure(target, error, password):
    return ArchiveError(f"{target.name}: cannot write the archive: "
                        f"{error.__class__.__name__}: {str(error).replace(password, '***')}")


def extract(archive_path, password, destination):
    """Extract a password archive into ``destination`` (for tests and for hosts that need to
    look inside a download); refuse member names that would leave it."""
    archive_path, destination = Path(archive_path), Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    if format_of(archive_path) == "zip":
        import pyzipper

        with pyzipper.AESZipFile(archive_path) as archive:
            archive.setpassword(password.encode("utf-8"))
            for name in archive.namelist():
                if not files.is_inside(destination / name, destination):
                    raise ArchiveError(f"{archive_path.name}: member {name!r} leaves the folder")
            archive.extractall(destination)
    else:
        import py7zr

        with py7zr.SevenZipFile(archive_path, "r", password=password) as archive:
            for name in archive.getnames():
                if not files.is_inside(destination / name, destination):
                    raise ArchiveError(f"{archive_path.name}: member {name!r} leaves the folder")
            archive.extractall(destination)
    return destination
