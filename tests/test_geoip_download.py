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
        httpserver.expect_request(
            "/geoip/databases/GeoLite2-City/download").respond_with_handler(self.handle)
        httpserver.expect_request(
            "/geoip/databases/GeoLite2-Country/download").respond_with_handler(self.handle)
        self.url = httpserver.url_for("/geoip/databases")

    def publish(self, edition, archive, sha256=None):
        self.files[edition] = (archive, sha256 or hashlib.sha256(archive).hexdigest())

    def handle(self, request):
        edition = request.path.split("/")[-2]
        self.requests.append((edition, request.args.get("suffix"), request.authorization))
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


def run(cioc_env, maxmind, *args, key=KEY):
    env = dict(cioc_env, CIOC_MAXMIND_ACCOUNT_ID="12345", CIOC_MAXMIND_LICENSE_KEY=key,
               CIOC_MAXMIND_URL=maxmind.url)
    return run_command([sys.executable, SCRIPT, "--retries", "0", "--backoff", "0", *args], env)


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
