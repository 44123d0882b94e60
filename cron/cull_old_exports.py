"""Delete old export files from each site's download folder.

In <CIOC_VIRTUALSERVERS_BASE>/<site>/download/, files the web app's export writes
(<Login>_<YYMMDDhhmmss> followed by mrv2.xml, sh.xml, exc.htm or exc.csv, or their .zip)
that are older than --days are deleted. Member downloads (<DB>CIC<MemberID>.zip,
<DB>VOL<MemberID>.zip, <DB>Stats<YYYY>...) and anything else are never touched, nor
anything outside the folder or reached through a symlink.
"""

import re
import sys
import time
from pathlib import Path

import cioctasks
from cioctasks import files

EXPORT = re.compile(
    r"^[^\\/]+_\d{12}(?:mrv2\.xml|sh\.xml|exc\.htm|exc\.csv)(?:\.zip)?$"
    r"|^[^\\/]+_\d{12}(?:mrv2|sh|exc)\.zip$"
)


def is_export(name):
    """True for a file name the web app's export writes."""
    return bool(EXPORT.match(name))


def cull(folder, older_than_days, dry_run, log, now=None):
    """Delete old export files in ``folder``; return (files, bytes, problems)."""
    folder = Path(folder)
    if folder.is_symlink():
        return 0, 0, [f"{folder} is a symlink: refused"]
    if not folder.is_dir():
        log.info("no download folder %s: nothing to do", folder)
        return 0, 0, []
    limit = (now or time.time()) - older_than_days * 86400
    count = size = 0
    problems = []
    for path in sorted(folder.iterdir()):
        if not is_export(path.name):
            continue
        try:
            info = path.lstat()
        except OSError:
            continue  # gone meanwhile
        if info.st_mtime >= limit:
            continue
        if dry_run:
            log.info("(dry run) would delete %s", path.name)
        else:
            try:
                files.safe_delete(path, folder)
            except (ValueError, OSError) as error:
                problems.append(f"{path.name}: {error}")
                continue
            log.info("deleted %s", path.name)
        count += 1
        size += info.st_size
    return count, size, problems


def task(context, site):
    folder = Path(context.settings.virtualservers_base) / site / "download"
    count, size, problems = cull(folder, context.args.days, context.dry_run, context.log)
    for problem in problems:
        context.problem(problem)
    verb = "would free" if context.dry_run else "freed"
    return f"{count} export files, {verb} {size:,} bytes"


def add_arguments(parser):
    parser.add_argument("--days", type=cioctasks.number(0, 3650), default=7,
                        help="delete exports older than this many days (default 7)")


if __name__ == "__main__":
    sys.exit(cioctasks.run(task, add_arguments, per_database=True))
