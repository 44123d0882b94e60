"""geoip_download against a local server serving real GeoLite2-shaped tarballs."""

import hashlib
import io
import sys
import tarfile

import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet
from werkzeug.wrappers import Response

from conftest import ROOT, assert_no_traceback, run_command

SCRIPT = ROOT / "cron" / "geoip_download.py"
KEY = "lic-key-secret-123"


def mmdb_bytes(tmp_path, database_type, city="Ottawa"):
    writer = MMDBWriter(ip_version=4, database_type=database_type)
    writer.insert_network(IPSet(["8.8.8.0/24"]), {"country": {"iso_code": "CA"},
                                                   "city": {"names": {"en": city}}})
    path = tmp_path / f"{database_type}-{city}.mmdb"
    writer.to_db_file(str(path))
    return path.read_bytes()


def tarball(members):
    """A .tar.gz of {name: bytes}; a value of ("symlink", target) makes a link."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            if isinstance(data, tuple):
                info.type, info.linkname = tarfile.SYMTYPE, data[1]
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class MaxMind:
    """Serves editions as MaxMind does: /<edition>/download?suffix=tar.gz(.sha256)."""

    def __init__(self, httpserver):
        self.files = {}
        self.requests = []
        self.refuse = False
        self.cut = False
        self.failures = []  # per request, in order: a status to answer with (503 says
        # Retry-After: 1), or None
        self.times = []
        httpserver.expect_request(
            "/geoip/databases/GeoLite2-City/download").respond_with_handler(self.handle)
        httpserver.expect_request(
            "/geoip/databases/GeoLite2-Country/download").respond_with_handler(self.handle)
        self.url = httpserver.url_for("/geoip/databases")

    def publish(self, edition, archive, sha256=None):
        self.files[edition] = (archive, sha256 or hashlib.sha256(archive).hexdigest())

    def handle(self, request):
        import time

        edition = request.path.split("/")[-2]
        self.requests.append((edition, request.args.get("suffix"), request.authorization))
        self.times.append(time.monotonic())
        failure = self.failures.pop(0) if self.failures else None
        if failure:
            headers = {"Retry-After": "1"} if failure == 503 else {}
            return Response("not now", status=failure, headers=headers)
        if self.refuse or request.authorization is None or request.authorization.password != KEY:
            return Response("unauthorized", status=401)
        archive, sha256 = self.files[edition]
        if request.args.get("suffix") == "tar.gz.sha256":
            return Response(f"{sha256}  {edition}_20261117.tar.gz\n")
        body = archive[: len(archive) // 2] if self.cut else archive
        response = Response(body)
        if self.cut:
            response.headers["Content-Length"] = str(len(archive))
            response.automatically_set_content_length = False
        return response


@pytest.fixture
def maxmind(httpserver, tmp_path):
    site = MaxMind(httpserver)
    for edition, kind in (("GeoLite2-City", "GeoLite2-City"), ("GeoLite2-Country", "GeoLite2-Country")):
        site.publish(edition, tarball({f"{edition}_20261117/{edition}.mmdb": mmdb_bytes(tmp_path, kind),
                                       f"{edition}_20261117/LICENSE.txt": b"licence"}))
    return site


def run(cioc_env, maxmind, *args, key=KEY, retries=0):
    env = dict(cioc_env, CIOC_MAXMIND_ACCOUNT_ID="12345", CIOC_MAXMIND_LICENSE_KEY=key,
               CIOC_MAXMIND_URL=maxmind.url)
    return run_command([sys.executable, SCRIPT, "--retries", str(retries), "--backoff", "0.01",
                        *args], env)


def geoip(tmp_path):
    return tmp_path / "tools" / "geoip"


def test_a_fresh_install_then_an_unchanged_upstream_rewrites_nothing(cioc_env, tmp_path, maxmind):
    first = run(cioc_env, maxmind)
    assert first.returncode == 0, first.stderr
    assert_no_traceback(first)
    assert "GeoLite2-City updated; GeoLite2-Country updated" in first.stdout
    city = geoip(tmp_path) / "GeoLite2-City.mmdb"
    import geoip2.database

    with geoip2.database.Reader(str(city)) as reader:
        assert reader.city("8.8.8.8").city.name == "Ottawa"
    stamp = city.stat().st_mtime_ns
    second = run(cioc_env, maxmind)
    assert "GeoLite2-City unchanged" in second.stdout
    assert city.stat().st_mtime_ns == stamp
    assert [s for _, s, _ in maxmind.requests].count("tar.gz") == 2  # only the first run


def test_a_new_version_replaces_and_keeps_the_previous_as_bak(cioc_env, tmp_path, maxmind):
    run(cioc_env, maxmind, "--edition", "GeoLite2-City")
    old = (geoip(tmp_path) / "GeoLite2-City.mmdb").read_bytes()
    maxmind.publish("GeoLite2-City", tarball({"GeoLite2-City.mmdb": mmdb_bytes(tmp_path, "GeoLite2-City", "Gatineau")}))
    result = run(cioc_env, maxmind, "--edition", "GeoLite2-City")
    assert "GeoLite2-City updated" in result.stdout
    assert (geoip(tmp_path) / "GeoLite2-City.mmdb.bak").read_bytes() == old
    assert (geoip(tmp_path) / "GeoLite2-City.mmdb").read_bytes() != old


@pytest.mark.parametrize("damage, reason", [
    ("401", "refused the account ID and licence key (401)"),
    ("checksum", "does not match its SHA-256"),
    ("corrupt", "not a valid database"),
    ("traversal", "unsafe path"),
    ("symlink", "is not a regular file"),
    ("wrong type", "is a GeoLite2-Country database"),
    ("truncated", "download failed"),
])
def test_a_bad_download_leaves_the_installed_database_untouched(cioc_env, tmp_path, maxmind, damage, reason):
    run(cioc_env, maxmind, "--edition", "GeoLite2-City")
    installed = (geoip(tmp_path) / "GeoLite2-City.mmdb").read_bytes()
    good = mmdb_bytes(tmp_path, "GeoLite2-City", "Laval")
    if damage == "401":
        maxmind.refuse = True
    elif damage == "checksum":
        maxmind.publish("GeoLite2-City", tarball({"GeoLite2-City.mmdb": good}), sha256="0" * 64)
    elif damage == "corrupt":
        maxmind.publish("GeoLite2-City", tarball({"GeoLite2-City.mmdb": b"\x00" * 5000}))
    elif damage == "traversal":
        maxmind.publish("GeoLite2-City", tarball({"../../GeoLite2-City.mmdb": good}))
    elif damage == "symlink":
        maxmind.publish("GeoLite2-City", tarball({"GeoLite2-City.mmdb": ("symlink", "/etc/passwd")}))
    elif damage == "wrong type":
        maxmind.publish("GeoLite2-City", tarball({"GeoLite2-City.mmdb": mmdb_bytes(tmp_path, "GeoLite2-Country", "X")}))
    else:
        maxmind.publish("GeoLite2-City", tarball({"GeoLite2-City.mmdb": good}))
        maxmind.cut = True
    result = run(cioc_env, maxmind, "--edition", "GeoLite2-City")
    assert result.returncode == 1
    assert_no_traceback(result)
    assert reason in result.stderr
    assert (geoip(tmp_path) / "GeoLite2-City.mmdb").read_bytes() == installed
    assert sorted(p.name for p in geoip(tmp_path).iterdir()) == ["GeoLite2-City.mmdb"]


def test_a_503_is_retried_after_the_delay_its_retry_after_header_asks(cioc_env, tmp_path,
                                                                    maxmind):
    maxmind.failures = [503]
    result = run(cioc_env, maxmind, "--edition", "GeoLite2-City", retries=1)
    assert result.returncode == 0, result.stderr
    assert "GeoLite2-City updated" in result.stdout
    assert [s for _, s, _ in maxmind.requests][:2] == ["tar.gz.sha256", "tar.gz.sha256"]
    assert 0.9 <= maxmind.times[1] - maxmind.times[0] < 5
    log = (tmp_path / "logs" / "cioctasks" / "geoip_download.log").read_text(encoding="utf-8")
    assert ("GET /geoip/databases/GeoLite2-City/download: HTTP 503; retrying in 1 s "
            "(attempt 2 of 2)") in log


def test_a_429_is_retried_with_backoff_then_the_download_goes_on(cioc_env, maxmind):
    maxmind.failures = [None, 429, 429]  # the .sha256, then the .tar.gz twice
    result = run(cioc_env, maxmind, "--edition", "GeoLite2-City", retries=2)
    assert result.returncode == 0, result.stderr
    assert [s for _, s, _ in maxmind.requests] == ["tar.gz.sha256"] + ["tar.gz"] * 3
    assert maxmind.times[3] - maxmind.times[2] >= 0.02  # --backoff 0.01, doubled


def test_a_5xx_to_the_end_fails_the_edition_naming_the_status_and_attempts(cioc_env, maxmind):
    maxmind.failures = [502, 502, 502]
    result = run(cioc_env, maxmind, "--edition", "GeoLite2-City", retries=2)
    assert result.returncode == 1
    assert_no_traceback(result)
    assert "GeoLite2-City: tar.gz.sha256: HTTP 502 after 3 attempts" in result.stderr


def test_a_refused_key_is_not_retried(cioc_env, maxmind):
    maxmind.refuse = True
    result = run(cioc_env, maxmind, "--edition", "GeoLite2-City", retries=3)
    assert result.returncode == 1
    assert "refused the account ID and licence key (401)" in result.stderr
    assert len(maxmind.requests) == 1


def test_a_server_that_is_not_there_fails_the_edition_after_the_retries(cioc_env, maxmind):
    import socket

    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    maxmind.url = f"http://127.0.0.1:{port}/geoip/databases"
    result = run(cioc_env, maxmind, "--edition", "GeoLite2-City", retries=1)
    assert result.returncode == 1
    assert_no_traceback(result)
    assert "GeoLite2-City: tar.gz.sha256: could not connect after 2 attempts" in result.stderr
    assert KEY not in result.stdout + result.stderr


def test_a_missing_key_is_exit_2_naming_it(cioc_env, maxmind):
    result = run(cioc_env, maxmind, key="")
    assert result.returncode == 2
    assert_no_traceback(result)
    assert "CIOC_MAXMIND_LICENSE_KEY is not set" in result.stderr


def test_the_key_never_appears_in_output_or_log(cioc_env, tmp_path, maxmind):
    maxmind.refuse = True
    result = run(cioc_env, maxmind, "-v")
    log = (tmp_path / "logs" / "cioctasks" / "geoip_download.log").read_text(encoding="utf-8")
    assert KEY not in result.stdout + result.stderr + log
    assert all(auth.password == KEY for _, _, auth in maxmind.requests)


def test_a_key_that_http_cannot_carry_is_one_line_and_exit_2_without_the_key(cioc_env, maxmind):
    key = "Secret\u20acKey"
    result = run(cioc_env, maxmind, key=key)
    assert result.returncode == 2
    assert_no_traceback(result)
    assert "CIOC_MAXMIND_LICENSE_KEY: not a MaxMind" in result.stderr
    assert key not in result.stdout + result.stderr
    assert maxmind.requests == []
