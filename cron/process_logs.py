"""Run AWStats on each site's access logs and publish its static report pages (nightly).

For each site (database name): write the site's AWStats configuration from
config/awstats.conf.template when it is missing (or always with -c), feed AWStats every
access log in <CIOC_LOG_ROOT>/<site>/ that is new or has grown since the last run, oldest
first, then build the static report pages of each month whose data changed into a
temporary folder beside <CIOC_VIRTUALSERVERS_BASE>/<site>/stats and swap it in whole, with
an index.html listing the months.

AWStats remembers the last record it counted, so giving it a log again counts nothing twice;
a log that fails stops that site there (a later log would make its records look old), and
the next run starts again from it. Needs perl and AWStats (Debian: apt-get install awstats);
CIOC_PERL, CIOC_AWSTATS (awstats.pl) and CIOC_AWSTATS_TOOLS (the folder of
awstats_buildstaticpages.pl) say where they are.
"""

import collections
import contextlib
import os
import re
import sys
from pathlib import Path

import cioctasks

# Loaded once there is work (--help stays fast): cioctasks.config and .files, shutil,
# subprocess, tempfile, html.

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "config" / "awstats.conf.template"
INSTALL_HINT = ("install it (Debian/Ubuntu: sudo apt-get install awstats; Windows: Strawberry "
                "Perl and AWStats) or set CIOC_PERL, CIOC_AWSTATS and CIOC_AWSTATS_TOOLS")

#: Names that may reach AWStats: it opens a log with Perl's two-argument open, where a name
#: ending in "|" would run a command, and it builds its file names from the site name.
SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
#: awstats_buildstaticpages.pl runs awstats.pl through the shell with -configdir unquoted and
#: reads its own arguments split on "&": the folders it is given must be plain.
PLAIN_PATH = re.compile(r"^[A-Za-z0-9_./\\:+-]+$")
SHELL_SPECIAL = re.compile(r'["$`%&\x00-\x1f]')
ARCHIVE_SUFFIXES = (".zip", ".gz", ".bz2", ".xz", ".7z")
DATA_FILE = re.compile(r"^awstats(\d\d)(\d{4})\.(.+)\.txt$")
NEW_RECORDS = re.compile(r"Found (\d+) new qualified records")
STATS = "stats"

#: Where perl and AWStats are, the folders this task keeps, and the configuration template.
Tools = collections.namedtuple("Tools", "perl awstats buildstatic config_dir data_dir template")


def default_locations(tools_path):
    """(awstats.pl, tools folder) where AWStats installs by default on this platform."""
    if os.name == "nt":
        home = Path(tools_path) / "awstats"
        return home / "wwwroot" / "cgi-bin" / "awstats.pl", home / "tools"
    return Path("/usr/lib/cgi-bin/awstats.pl"), Path("/usr/share/awstats/tools")


def find_tools(settings, args):
    """Return the Tools of this run; ConfigError with the install hint when one is missing."""
    import shutil

    from cioctasks import config

    ConfigError = cioctasks.ConfigError
    awstats_default, tools_default = default_locations(settings.tools_path)
    perl = config.setting_text(settings, "CIOC_PERL") or shutil.which("perl")
    if not perl or not Path(perl).is_file():
        raise ConfigError(f"perl not found: {INSTALL_HINT}")
    awstats = Path(config.setting_text(settings, "CIOC_AWSTATS") or awstats_default)
    buildstatic = Path(config.setting_text(settings, "CIOC_AWSTATS_TOOLS") or tools_default
                       ) / "awstats_buildstaticpages.pl"
    for program in (awstats, buildstatic):
        if not program.is_file():
            raise ConfigError(f"AWStats not found ({program} is missing): {INSTALL_HINT}")
    try:
        template = Path(args.template).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read the AWStats template {args.template}: {error}") from None
    if "{data_dir}" not in template:
        raise ConfigError(f"the AWStats template {args.template} has no DirData=\"{{data_dir}}\"")
    state = Path(settings.state_dir) / "awstats"
    config_dir = Path(args.config_dir) if args.config_dir else state / "conf"
    data_dir = Path(args.data_dir) if args.data_dir else state / "data"
    for what, folder in (("configuration", config_dir), ("data", data_dir)):
        if not PLAIN_PATH.match(str(folder)):
            raise ConfigError(
                f"unusable AWStats {what} folder {str(folder)!r}: AWStats hands it to a shell, "
                "so only letters, digits and _ . / \\ : + - may be in it (see --config-dir, "
                "--data-dir)")
    for program in (awstats, buildstatic):
        if SHELL_SPECIAL.search(str(program)):
            raise ConfigError(f"unusable AWStats path {str(program)!r}: no \" $ ` % & or "
                              "control characters")
    return Tools(perl, awstats, buildstatic, config_dir, data_dir, template)


def prepare(context):
    return find_tools(context.settings, context.args)


def write_config(tools, site, force, dry_run, log):
    """Write awstats.<site>.conf from the template when missing (or ``force``); return its path."""
    from cioctasks import files

    path = tools.config_dir / f"awstats.{site}.conf"
    data_dir = tools.data_dir / site
    if path.exists() and not force:
        text = path.read_text(encoding="utf-8", errors="replace")
        if f'DirData="{data_dir}"' not in text:
            log.warning("%s keeps its history elsewhere than %s (a local edit, or another "
                        "--data-dir): -c rewrites it", path, data_dir)
        return path
    text = tools.template.replace("{site}", site).replace("{data_dir}", str(data_dir))
    if dry_run:
        log.info("(dry run) would write %s", path)
        return path
    data_dir.mkdir(parents=True, exist_ok=True)
    files.atomic_write(path, text)
    log.info("wrote %s", path)
    return path


def signature(info):
    return [info.st_size, info.st_mtime_ns]


def access_logs(folder, pattern, log=None):
    """The regular log files of ``folder`` matching ``pattern``, oldest first, as
    (path, stat) pairs; archives, symlinks and unsafe names are left out (the unsafe ones
    with a warning in ``log``)."""
    found = []
    if not folder.is_dir() or folder.is_symlink():
        return found
    for path in folder.glob(pattern):
        if path.name.lower().endswith(ARCHIVE_SUFFIXES):
            continue
        if not SAFE_NAME.match(path.name):
            if log:
                log.warning("%r left out: AWStats is only given plain file names", path.name)
            continue
        try:
            info = path.lstat()
        except OSError:
            continue
        if path.is_file() and not path.is_symlink():
            found.append((path, info))
    found.sort(key=lambda item: (item[1].st_mtime_ns, item[0].name))
    return found


def run_perl(tools, arguments, timeout):
    """Run a Perl program of AWStats; return its output; TaskError with its error line."""
    import subprocess

    try:
        result = subprocess.run([tools.perl, *map(str, arguments)], capture_output=True,
                                text=True, encoding="utf-8", errors="replace",
                                timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise cioctasks.TaskError(f"{Path(arguments[0]).name} took more than {timeout} s") from None
    except OSError as error:
        raise cioctasks.TaskError(f"cannot run {tools.perl}: {error.strerror}") from None
    output = result.stdout + result.stderr
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error")]
    # awstats_buildstaticpages.pl exits with awstats.pl's raw status (256), which the
    # system cuts to 0: its "Error" lines are the only sign of a failure.
    if result.returncode != 0 or errors:
        reason = (errors or lines or [f"exit code {result.returncode}"])[0]
        raise cioctasks.TaskError(f"{Path(arguments[0]).name}: {reason}")
    return output


def update(context, tools, site, logs_folder):
    """Feed AWStats the new or grown logs of a site; return (files, new records)."""
    key_prefix = f"log:{site}:"
    seen = context.state.items(context.task, key_prefix)
    present = set()
    count = records = 0
    for path, info in access_logs(logs_folder, context.args.pattern, context.log):
        key = key_prefix + path.name
        present.add(key)
        if seen.get(key) == signature(info):
            continue
        if context.dry_run:
            context.log.info("(dry run) would give AWStats %s", path)
            count += 1
            continue
        output = run_perl(tools, [tools.awstats, f"-config={site}",
                                  f"-configdir={tools.config_dir}", "-update",
                                  f"-LogFile={path}"], context.args.timeout)
        found = NEW_RECORDS.search(output)
        new = int(found.group(1)) if found else 0
        context.log.info("%s: %d new records", path.name, new)
        context.state.set(context.task, key, signature(info))
        count += 1
        records += new
    gone = [key for key in seen if key not in present]
    if gone and not context.dry_run:
        context.state.set_many(context.task, {}, delete=gone)
    return count, records


def months_with_data(data_folder, site):
    """{'YYYY-MM': data file mtime} of the months AWStats holds for a site."""
    months = {}
    if not data_folder.is_dir():
        return months
    for path in data_folder.iterdir():
        found = DATA_FILE.match(path.name)
        if found and found.group(3) == site and path.is_file():
            months[f"{found.group(2)}-{found.group(1)}"] = path.stat().st_mtime_ns
    return months


def stale_months(months, stats, site):
    """The months whose pages in ``stats`` are missing or older than their data."""
    stale = []
    for month, data_time in sorted(months.items()):
        page = stats / month / f"awstats.{site}.html"
        try:
            if page.stat().st_mtime_ns >= data_time:
                continue
        except OSError:
            pass
        stale.append(month)
    return stale


def index_page(site, months):
    import html

    rows = "\n".join(
        f'<li><a href="{month}/awstats.{html.escape(site)}.html">{month}</a></li>'
        for month in sorted(months, reverse=True))
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>Statistics for {html.escape(site)}</title></head>\n"
            f"<body><h1>Statistics for {html.escape(site)}</h1>\n<ul>\n{rows}\n</ul>\n"
            "</body></html>\n")


def swap_in(built, stats):
    """Put the folder ``built`` in the place of ``stats``; the old one is removed after."""
    import shutil

    old = stats.with_name(f".{STATS}-old-{os.getpid()}")
    if stats.exists():
        os.replace(stats, old)
    try:
        os.replace(built, stats)
    except OSError:
        if old.exists():
            os.replace(old, stats)
        raise
    shutil.rmtree(old, ignore_errors=True)


def remove_leftovers(site_folder):
    """Delete the temporary folders a crashed run left beside the stats folder; when it died
    between the two renames of swap_in, put the published folder back first."""
    import shutil

    stats = site_folder / STATS
    old = sorted((p for p in site_folder.glob(f".{STATS}-old-*") if p.is_dir() and not p.is_symlink()),
                 key=lambda p: p.stat().st_mtime_ns)
    if old and not stats.exists():
        os.replace(old[-1], stats)
    for path in site_folder.glob(f".{STATS}-*"):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)


def publish_pages(context, tools, site):
    """Rebuild the pages of the months whose data changed; return the months rebuilt."""
    import shutil
    import tempfile

    from cioctasks import files

    site_folder = Path(context.settings.virtualservers_base) / site
    stats = site_folder / STATS
    if stats.is_symlink() or (stats.exists() and not stats.is_dir()):
        raise cioctasks.TaskError(f"{stats} is not a plain folder: refused")
    if not context.dry_run and site_folder.is_dir():
        remove_leftovers(site_folder)
    months = months_with_data(tools.data_dir / site, site)
    stale = stale_months(months, stats, site)
    if not stale:
        return []
    if context.dry_run:
        context.log.info("(dry run) would build the pages of %s", ", ".join(stale))
        return stale
    if SHELL_SPECIAL.search(str(site_folder)):
        raise cioctasks.TaskError(f"{site_folder}: AWStats cannot be given a folder with "
                                  "\" $ ` % & or control characters")
    site_folder.mkdir(parents=True, exist_ok=True)
    built = Path(tempfile.mkdtemp(prefix=f".{STATS}-new-", dir=site_folder))
    try:
        os.chmod(built, files.plain_mode(stats, default=0o777))  # the web server reads it
        if stats.is_dir():
            # Everything published stays (other months, a web.config or .htaccess that
            # guards the pages); the rebuilt months' pages are written over it.
            shutil.copytree(stats, built, symlinks=True, dirs_exist_ok=True)
        for month in stale:
            year, number = month.split("-")
            (built / month).mkdir(exist_ok=True)
            main_page = built / month / f"awstats.{site}.html"
            with contextlib.suppress(FileNotFoundError):
                main_page.unlink()
            run_perl(tools, [tools.buildstatic, f"-config={site}",
                             f"-configdir={tools.config_dir}", f"-awstatsprog={tools.awstats}",
                             f"-dir={built / month}", f"-month={number}", f"-year={year}"],
                     context.args.timeout)
            if not main_page.is_file() or main_page.stat().st_size == 0:
                raise cioctasks.TaskError(f"AWStats built no {main_page.name} for {month}")
            context.log.info("built the pages of %s", month)
        files.atomic_write(built / "index.html", index_page(site, months))
        swap_in(built, stats)
    finally:
        shutil.rmtree(built, ignore_errors=True)
    return stale


def task(context, site):
    if not SAFE_NAME.match(site):
        raise cioctasks.TaskError(f"{site!r}: not a name AWStats can be given safely")
    try:
        return process_site(context, context.prepared, site)
    except OSError as error:  # a folder that cannot be written, a stats folder held open
        where = f" ({error.filename})" if error.filename else ""
        raise cioctasks.TaskError(f"{error.strerror or error}{where}") from None


def process_site(context, tools, site):
    write_config(tools, site, context.args.create_configs, context.dry_run, context.log)
    logs_folder = Path(context.settings.log_root) / site
    stopped = None
    try:
        count, records = update(context, tools, site, logs_folder)
    except cioctasks.TaskError as error:
        stopped, count, records = error, None, None  # publish what was counted, then fail
    months = publish_pages(context, tools, site)
    if stopped:
        raise stopped
    if context.dry_run:
        return (f"would give AWStats {count} log files"
                + (f" and build the pages of {', '.join(months)}" if months else ""))
    pages = f"pages of {', '.join(months)} published" if months else "pages up to date"
    return f"{count} log files, {records:,} new records; {pages}"


def add_arguments(parser):
    parser.add_argument("-c", "--create-configs", action="store_true",
                        help="rewrite every site's AWStats configuration from the template")
    parser.add_argument("--template", default=str(TEMPLATE),
                        help="the AWStats configuration template "
                             "(default config/awstats.conf.template)")
    parser.add_argument("--config-dir", help="where the awstats.<site>.conf files are "
                                             "(default <CIOC_STATE_DIR>/awstats/conf)")
    parser.add_argument("--data-dir", help="where AWStats keeps each site's history "
                                           "(default <CIOC_STATE_DIR>/awstats/data)")
    parser.add_argument("--pattern", default="access.log*",
                        help="the access logs in <CIOC_LOG_ROOT>/<site>/ (default %(default)s)")
    parser.add_argument("--timeout", type=cioctasks.number(1, 7 * 86400), default=3600,
                        help="seconds one AWStats run may take (default %(default)s)")


if __name__ == "__main__":
    sys.exit(cioctasks.run(task, add_arguments, per_database=True, prepare=prepare))
