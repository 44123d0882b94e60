"""Put log files last modified more than --days ago into a zip archive per folder and month.

Under CIOC_LOG_ROOT (or --root), each old file that is not already an archive goes into
logs-YYYY-MM.zip in its own folder (the month of the file's date), under its own name. A
night's files are added to a copy of the archive written beside it, read back and checked
against the files' CRC and size, and only then does the copy replace the archive and the
files get deleted: a crash leaves the old archive and the files as they were, and the
copy, .logs-YYYY-MM.zip.<pid>.tmp, is removed by the next run once its process is gone.
A file already archived with the same content is just deleted; another file of the same
name is stored beside it as name~2, never over it. A file that cannot be read or deleted
(held open by the web server) is reported and the rest go on. The toolkit's own logs
(<CIOC_LOG_ROOT>/cioctasks) are left alone.
"""

import collections
import contextlib
import datetime
import os
import re
import sys
import time
from pathlib import Path

import cioctasks

ARCHIVE_SUFFIXES = (".zip", ".gz", ".tgz", ".7z", ".bz2", ".xz", ".tmp")
CHUNK = 1 << 20
Result = collections.namedtuple("Result", "files before after problems")
#: The archives this script writes: their temporary files are the only ones it removes.
LEFTOVER_TARGETS = re.compile(r"logs-[0-9]{4}-[0-9]{2}\.zip")


def find_old_files(root, older_than_days, now=None):
    """Return {(folder, "YYYY-MM"): [paths]} of the files to archive, skipping archives,
    symlinks and <root>/cioctasks."""
    limit = (now or time.time()) - older_than_days * 86400
    groups = {}
    own_logs = Path(root) / "cioctasks"
    for folder, subfolders, names in os.walk(root):
        folder = Path(folder)
        if folder == own_logs:
            subfolders[:] = []
            continue
        for name in sorted(names):
            path = folder / name
            if name.lower().endswith(ARCHIVE_SUFFIXES) or name.startswith(".") or path.is_symlink():
                continue
            try:
                modified = path.stat().st_mtime
            except OSError:
                continue
            if modified < limit:
                month = datetime.datetime.fromtimestamp(modified).strftime("%Y-%m")
                groups.setdefault((folder, month), []).append(path)
    return groups


def free_name(name, taken):
    if name not in taken:
        return name
    number = 2
    while f"{name}~{number}" in taken:
        number += 1
    return f"{name}~{number}"


def archive_group(archive, paths, level):
    """Add ``paths`` to ``archive`` safely; return (archived paths, bytes in, problems).

    The files are not deleted here.
    """
    import shutil
    import zipfile

    from cioctasks import files
    from cioctasks.archive import abandon_zip

    problems, plan = [], []
    existing = {}
    if archive.exists():
        with zipfile.ZipFile(archive) as current:
            existing = {info.filename: (info.CRC, info.file_size) for info in current.infolist()}
    taken = set(existing)
    already = []
    for path in paths:
        try:
            signature = files.crc_and_size(path)
        except OSError as error:
            problems.append(f"{path}: cannot read it: {error.strerror}")
            continue
        if existing.get(path.name) == signature:
            already.append((path, signature[1]))  # archived by a run that stopped before deleting
            continue
        name = free_name(path.name, taken)
        taken.add(name)
        plan.append((path, name, signature))
    if not plan:
        return [p for p, _ in already], sum(size for _, size in already), problems
    # Named for this process, so that the next run removes it if this one is killed.
    fd, temporary = files.create_temporary(archive, private=True)
    try:
        with files.synced(os.fdopen(fd, "w+b")) as handle:
            if archive.exists():
                with open(archive, "rb") as current:
                    shutil.copyfileobj(current, handle, CHUNK)
            target = zipfile.ZipFile(handle, "a" if archive.exists() else "w",
                                     compression=zipfile.ZIP_DEFLATED, compresslevel=level)
            try:
                for path, name, _ in plan:
                    target.write(path, arcname=name)
            except BaseException:
                abandon_zip(target)  # a full disk: write no central directory to it
                raise
            target.close()
        verified = verify(temporary, plan)
        os.chmod(temporary, files.plain_mode(archive))
        os.replace(temporary, archive)
    finally:
        with contextlib.suppress(OSError):  # else the next run removes it
            temporary.unlink()
    done = [p for p, _ in already] + [path for path, name, _ in plan if name in verified]
    for path, name, _ in plan:
        if name not in verified:
            problems.append(f"{path}: changed while it was archived; kept")
    written = sum(size for _, size in already) + sum(s[1] for _, n, s in plan if n in verified)
    return done, written, problems


def verify(archive, plan):
    """Read the planned members back; return the names whose CRC and size match the files."""
    import zipfile

    good = set()
    with zipfile.ZipFile(archive) as reader:
        for _, name, (crc, size) in plan:
            info = reader.getinfo(name)
            if (info.CRC, info.file_size) != (crc, size):
                continue
            with reader.open(info) as member:  # reading to the end checks the stored CRC
                while member.read(CHUNK):
                    pass
            good.add(name)
    return good


def remove_leftovers(root, dry_run, log, now=None):
    """Remove, in every folder under ``root``, the temporary archives
    (``.logs-YYYY-MM.zip.<pid>.tmp``) left by runs that were killed; return how many."""
    from cioctasks import files

    removed = 0
    own_logs = Path(root) / "cioctasks"
    for folder, subfolders, names in os.walk(root):
        if Path(folder) == own_logs:
            subfolders[:] = []
            continue
        if any(files.TEMPORARY.match(name) for name in names):
            removed += len(files.remove_leftovers(folder, LEFTOVER_TARGETS, log, dry_run, now))
    return removed


def compress(root, older_than_days, level, dry_run, log, now=None):
    """Archive old log files under ``root``; return a Result."""
    import zipfile

    remove_leftovers(root, dry_run, log, now)
    groups = find_old_files(root, older_than_days, now)
    count = before = after = 0
    problems = []
    for (folder, month), paths in sorted(groups.items()):
        archive = folder / f"logs-{month}.zip"
        if dry_run:
            for path in paths:
                log.info("(dry run) would archive %s into %s", path, archive.name)
            count += len(paths)
            before += sum(p.stat().st_size for p in paths)
            continue
        size_before = archive.stat().st_size if archive.exists() else 0
        try:
            done, written, trouble = archive_group(archive, paths, level)
        except (OSError, zipfile.BadZipFile) as error:
            problems.append(f"{archive}: {error}")
            continue
        problems += trouble
        for path in done:
            try:
                path.unlink()
            except OSError as error:
                problems.append(f"{path}: archived but cannot be deleted: {error.strerror}")
                continue
            count += 1
        before += written
        after += archive.stat().st_size - size_before
        log.info("%s: %d files", archive, len(done))
    return Result(count, before, after, problems)


def task(context):
    root = Path(context.args.root or context.settings.log_root)
    if not root.is_dir():
        raise cioctasks.ConfigError(f"no log folder {root}")
    result = compress(root, context.args.days, context.args.level, context.dry_run, context.log)
    for problem in result.problems:
        context.problem(problem)
    if context.dry_run:
        return f"would archive {result.files} files, {result.before:,} bytes"
    return f"{result.files} files archived, {result.before:,} bytes into {result.after:,}"


def add_arguments(parser):
    parser.add_argument("--root", help="the log folder (default CIOC_LOG_ROOT)")
    parser.add_argument("--days", type=cioctasks.number(0, 3650), default=6,
                        help="archive files last modified more than this many days ago (6)")
    parser.add_argument("--level", type=int, default=6, choices=range(1, 10), metavar="1-9",
                        help="deflate level (default 6)")


if __name__ == "__main__":
    sys.exit(cioctasks.run(task, add_arguments))
