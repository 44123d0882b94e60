"""Download the MaxMind GeoLite2 databases the sites use (monthly).

For each --edition (default GeoLite2-City and GeoLite2-Country): fetch
<CIOC_MAXMIND_URL>/<edition>/download?suffix=tar.gz.sha256 and, when it differs from what
is installed, the .tar.gz itself (HTTP Basic auth with CIOC_MAXMIND_ACCOUNT_ID and
CIOC_MAXMIND_LICENSE_KEY; streamed, with a timeout, retries and a size cap); check its
SHA-256; take only the regular .mmdb file out of it (no path from the archive is used);
open it with geoip2 and check its type and a lookup; then replace
<CIOC_GEOIP_DIR>/<edition>.mmdb atomically, keeping the previous one as .mmdb.bak.
Anything wrong leaves the installed database untouched and fails that edition.
"""

import os
import sys
from pathlib import Path

import cioctasks
from cioctasks import udl

# Loaded once there is work (--help stays fast): hashlib, shutil, tarfile, cioctasks.files.

MAX_DOWNLOAD = 400 << 20
MAX_DATABASE = 1 << 30
CHUNK = 1 << 20
LOOKUP = "8.8.8.8"


class EditionError(cioctasks.TaskError):
    """One edition that cannot be installed this run."""


def sha256_of(path):
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Downloader:
    """GETs MaxMind's files, with retries and backoff (cioctasks.httpretry)."""

    def __init__(self, base_url, account, key, timeout, retries, backoff, log):
        from cioctasks import httpretry

        self.session = httpretry.session(retries, backoff, ["GET"], log)
        self.session.auth = (account, key)
        self.base_url = base_url.rstrip("/")
        self.timeout, self.retries = timeout, retries
        self.secrets = [key]

    def url(self, edition, suffix):
        return f"{self.base_url}/{edition}/download?suffix={suffix}"

    def get(self, edition, suffix, target=None):
        """GET one file; return its text, or stream it into ``target``. Timeouts,
        connection errors, 429 and 5xx are retried; raise EditionError for the rest."""
        import requests

        from cioctasks import httpretry

        try:
            with self.session.get(self.url(edition, suffix), stream=True,
                                  timeout=self.timeout) as response:
                if response.status_code == 401:
                    raise EditionError(f"{edition}: MaxMind refused the account ID and "
                                       "licence key (401)")
                if response.status_code in httpretry.RETRIED:
                    raise EditionError(f"{edition}: {suffix}: HTTP {response.status_code} after "
                                       f"{httpretry.attempts(response)} attempts")
                if response.status_code != 200:
                    raise EditionError(f"{edition}: {suffix}: HTTP {response.status_code}")
                return self._body(response, edition, target)
        except (requests.ConnectionError, requests.Timeout) as error:
            problem = udl.mask(httpretry.cause(error, self.timeout), self.secrets)
            raise EditionError(f"{edition}: {suffix}: {problem} after {self.retries + 1} "
                               "attempts") from None
        except requests.RequestException as error:  # a body cut short, for one
            raise EditionError(f"{edition}: {suffix}: download failed: "
                               f"{error.__class__.__name__}") from None

    @staticmethod
    def _body(response, edition, target):
        if target is None:
            return response.text[:10_000]
        size = 0
        with open(target, "wb") as handle:
            for chunk in response.iter_content(CHUNK):
                size += len(chunk)
                if size > MAX_DOWNLOAD:
                    raise EditionError(f"{edition}: the download is larger than "
                                       f"{MAX_DOWNLOAD >> 20} MB")
                handle.write(chunk)
        return size


def extract_database(archive, edition, target):
    """Copy the one regular .mmdb file of ``archive`` into ``target``; raise EditionError
    for an archive that is not one, or holds unsafe or unexpected members."""
    import shutil
    import tarfile

    try:
        with tarfile.open(archive, "r:gz") as tar:
            found = None
            for member in tar:
                parts = Path(member.name).parts
                if member.name.startswith(("/", "\\")) or ".." in parts:
                    raise EditionError(f"{edition}: the archive holds an unsafe path {member.name!r}")
                if not member.name.endswith(".mmdb"):
                    continue
                if not member.isfile():
                    raise EditionError(f"{edition}: {member.name} is not a regular file")
                if member.size > MAX_DATABASE or found is not None:
                    raise EditionError(f"{edition}: unexpected {member.name} in the archive")
                found = member
                with tar.extractfile(member) as source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out, CHUNK)
    except (tarfile.TarError, EOFError, OSError) as error:
        raise EditionError(f"{edition}: not a readable .tar.gz ({error.__class__.__name__})") from None
    if found is None:
        raise EditionError(f"{edition}: no .mmdb file in the archive")


def check_database(path, edition):
    """Open the database with geoip2, check its type and that a lookup works."""
    import geoip2.database
    import geoip2.errors
    import maxminddb

    try:
        with geoip2.database.Reader(str(path)) as reader:
            kind = reader.metadata().database_type
            expected = edition.split("-")[-1]
            if expected.lower() not in kind.lower():
                raise EditionError(f"{edition}: the file is a {kind} database")
            lookup = reader.city if "city" in kind.lower() else reader.country
            try:
                lookup(LOOKUP)
            except geoip2.errors.AddressNotFoundError:
                pass  # a database without this address still answers
            return kind
    except (maxminddb.InvalidDatabaseError, ValueError, OSError, TypeError) as error:
        raise EditionError(f"{edition}: not a valid database ({error.__class__.__name__})") from None


def install(edition, downloader, folder, state, task_name, dry_run, log):
    """Bring one edition up to date; return what happened, in a few words."""
    import shutil

    from cioctasks import files

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{edition}.mmdb"
    upstream = downloader.get(edition, "tar.gz.sha256").split()
    if not upstream or len(upstream[0]) != 64:
        raise EditionError(f"{edition}: the .sha256 file holds no SHA-256")
    upstream = upstream[0].lower()
    recorded = state.get(task_name, f"installed:{edition}") or {}
    if recorded.get("archive") == upstream and target.exists() and \
            sha256_of(target) == recorded.get("database"):
        return "unchanged"
    if dry_run:
        return "would download a new version"
    archive = folder / f".{edition}.tar.gz.tmp"
    database = folder / f".{edition}.mmdb.tmp"
    try:
        downloader.get(edition, "tar.gz", archive)
        if sha256_of(archive) != upstream:
            raise EditionError(f"{edition}: the download does not match its SHA-256")
        extract_database(archive, edition, database)
        kind = check_database(database, edition)
        if target.exists():
            backup = folder / f".{edition}.mmdb.bak.tmp"
            shutil.copy2(target, backup)
            os.replace(backup, folder / f"{edition}.mmdb.bak")
        files.publish(database, target)
        state.set(task_name, f"installed:{edition}",
                  {"archive": upstream, "database": sha256_of(target)})
        log.info("%s: installed a new %s database", edition, kind)
        return "updated"
    finally:
        for leftover in (archive, database):
            if leftover.exists():
                leftover.unlink()


def task(context):
    settings, args = context.settings, context.args
    if not settings.maxmind_account_id:
        raise cioctasks.ConfigError("CIOC_MAXMIND_ACCOUNT_ID is not set")
    if not settings.maxmind_license_key:
        raise cioctasks.ConfigError("CIOC_MAXMIND_LICENSE_KEY is not set")
    for variable, value in (("CIOC_MAXMIND_ACCOUNT_ID", settings.maxmind_account_id),
                            ("CIOC_MAXMIND_LICENSE_KEY", settings.maxmind_license_key)):
        # HTTP Basic auth carries Latin-1 only; MaxMind's IDs and keys are plain ASCII.
        if not (value.isascii() and value.isprintable() and ":" not in value
                and " " not in value):
            raise cioctasks.ConfigError(f"{variable}: not a MaxMind account ID or licence key "
                                        "(plain ASCII letters and digits)")
    downloader = Downloader(settings.maxmind_url, settings.maxmind_account_id,
                            settings.maxmind_license_key, args.timeout, args.retries,
                            args.backoff, context.log)
    results = []
    for edition in args.edition or ["GeoLite2-City", "GeoLite2-Country"]:
        try:
            done = install(edition, downloader, Path(settings.geoip_dir), context.state,
                           context.task, context.dry_run, context.log)
            results.append(f"{edition} {done}")
        except EditionError as error:
            context.problem(udl.mask(str(error), settings.secrets()))
    return "; ".join(results) or "nothing installed"


def add_arguments(parser):
    from cioctasks import runner

    parser.add_argument("--edition", action="append", default=[],
                        help="a GeoLite2 edition (repeatable; default City and Country)")
    runner.add_retry_arguments(parser, timeout=60, backoff=5)


if __name__ == "__main__":
    sys.exit(cioctasks.run(task, add_arguments))
