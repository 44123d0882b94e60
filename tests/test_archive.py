"""Password archives, checked with the real 7z program."""

import contextlib
import errno
import gc
import io
import os
import shutil
import stat
import subprocess
import sys

import pytest

from cioctasks import archive
from conftest import assert_no_traceback, run_command

from conftest import ROOT

ZIPTOOL = ROOT / "downloads" / "ziptool.py"
PASSWORD = "Mot de passe; = \"été\""
needs_7z = pytest.mark.skipif(shutil.which("7z") is None, reason="7z is not installed")


@pytest.fixture
def sources(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    database = folder / "ciocdemoCIC12.sqlite"
    database.write_bytes(b"SQLite format 3\0" + bytes(range(256)) * 4000)
    notes = folder / "lisez-moi.txt"
    notes.write_text("Données de l'organisme\n" * 100, encoding="utf-8")
    return [database, notes]


def seven_zip_test(path, password):
    return subprocess.run(["7z", "t", f"-p{password}", str(path)], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)


@needs_7z
@pytest.mark.parametrize("suffix", [".zip", ".7z"])
def test_an_archive_opens_in_7z_with_the_password_and_not_without(tmp_path, sources, suffix):
    target = tmp_path / f"ciocdemoCIC12{suffix}"
    size = archive.pack(target, sources, PASSWORD)
    assert size == target.stat().st_size
    good = seven_zip_test(target, PASSWORD)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "Everything is Ok" in good.stdout
    bad = seven_zip_test(target, "wrong")
    assert bad.returncode != 0


@needs_7z
def test_a_zip_uses_aes_256(tmp_path, sources):
    target = tmp_path / "a.zip"
    archive.pack(target, sources, PASSWORD)
    listing = subprocess.run(["7z", "l", "-slt", f"-p{PASSWORD}", str(target)],
                             capture_output=True, text=True).stdout
    assert "Method = AES-256 Deflate" in listing


@needs_7z
def test_a_7z_hides_its_member_names(tmp_path, sources):
    target = tmp_path / "a.7z"
    archive.pack(target, sources, PASSWORD)
    listing = subprocess.run(["7z", "l", "-pwrong", str(target)], capture_output=True, text=True,
                             stdin=subprocess.DEVNULL)
    assert "ciocdemoCIC12.sqlite" not in listing.stdout


@pytest.mark.parametrize("suffix", [".zip", ".7z"])
def test_an_archive_extracts_to_the_same_bytes(tmp_path, sources, suffix):
    target = tmp_path / f"out{suffix}"
    archive.pack(target, sources, PASSWORD)
    out = archive.extract(target, PASSWORD, tmp_path / "out")
    for source in sources:
        assert (out / source.name).read_bytes() == source.read_bytes()


def test_a_failed_pack_leaves_the_previous_archive_and_no_temporary_file(tmp_path, sources):
    target = tmp_path / "keep.zip"
    archive.pack(target, sources[:1], PASSWORD)
    before = target.read_bytes()
    with pytest.raises(archive.ArchiveError):
        archive.pack(target, [sources[0], tmp_path / "missing.csv"], PASSWORD)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.zip", "src"]


def test_an_error_never_shows_the_password(tmp_path, sources, monkeypatch):
    def broken_write(temporary, members, password, level):
        raise OSError(f"disk trouble while writing with {password}")

    monkeypatch.setattr(archive, "_write_zip", broken_write)
    with pytest.raises(archive.ArchiveError) as error:
        archive.pack(tmp_path / "x.zip", sources, PASSWORD)
    assert PASSWORD not in str(error.value)


def test_an_archive_that_reads_back_wrong_is_refused(tmp_path, sources, monkeypatch):
    real = archive._write_zip

    def write_then_damage(temporary, members, password, level):
        real(temporary, members[:1], password, level)

    monkeypatch.setattr(archive, "_write_zip", write_then_damage)
    with pytest.raises(archive.ArchiveError, match="members"):
        archive.pack(tmp_path / "x.zip", sources, PASSWORD)
    assert not (tmp_path / "x.zip").exists()


@needs_7z
def test_ziptool_reads_the_password_from_the_environment(cioc_env, tmp_path, sources):
    env = dict(cioc_env, DOWNLOAD_PASSWORD=PASSWORD)
    out = tmp_path / "tool.7z"
    result = run_command([sys.executable, ZIPTOOL, out, *sources, "--password-env",
                          "DOWNLOAD_PASSWORD"], env, cwd=None)
    assert result.returncode == 0, result.stderr
    assert "verified" in result.stdout and PASSWORD not in result.stdout
    assert seven_zip_test(out, PASSWORD).returncode == 0


def test_ziptool_without_the_password_variable_exits_2(cioc_env, tmp_path, sources):
    result = run_command([sys.executable, ZIPTOOL, tmp_path / "x.zip", *sources,
                          "--password-env", "UNSET_VARIABLE"], cioc_env)
    assert result.returncode == 2
    assert_no_traceback(result)
    assert "UNSET_VARIABLE" in result.stderr


def test_ziptool_refuses_other_archive_types(cioc_env, tmp_path, sources):
    env = dict(cioc_env, P="x")
    result = run_command([sys.executable, ZIPTOOL, tmp_path / "x.rar", *sources,
                          "--password-env", "P"], env)
    assert result.returncode == 2
    assert "must end in .zip or .7z" in result.stderr


# -- a full disk, and what a web server may see -----------------------------------------------

@pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits")
def test_an_archive_is_private_until_it_is_published(tmp_path, sources, monkeypatch):
    modes = []
    real = archive._verify_zip

    def verify(path, expected, password):
        modes.append(stat.S_IMODE(path.stat().st_mode))
        return real(path, expected, password)

    monkeypatch.setattr(archive, "_verify_zip", verify)
    target = tmp_path / "ciocdemoCIC1.zip"
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    archive.pack(target, sources, PASSWORD)
    assert modes == [0o600]
    assert stat.S_IMODE(target.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


@pytest.fixture
def unraisable(monkeypatch):
    """The exceptions Python could only print ("Exception ignored in: ... __del__")."""
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda report: seen.append(report.exc_value))
    yield seen
    gc.collect()


@contextlib.contextmanager
def file_size_limit(size):
    """Writes past ``size`` bytes of any file fail (EFBIG), as on a disk that is full."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


@pytest.mark.skipif(os.name == "nt", reason="POSIX resource limits")
@pytest.mark.parametrize("suffix", [".zip", ".7z"])
def test_a_write_that_fails_is_one_error_naming_the_folder_and_leaves_nothing(
        tmp_path, suffix, unraisable):
    noise = tmp_path / "noise.bin"
    noise.write_bytes(os.urandom(400_000))  # does not compress: the archive must grow
    target = tmp_path / "out" / f"ciocdemoCIC1{suffix}"
    archive.pack(target, [noise], PASSWORD)
    before = target.read_bytes()
    with file_size_limit(64 * 1024), pytest.raises(archive.ArchiveError) as error:
        archive.pack(target, [noise], PASSWORD)
    gc.collect()
    assert str(error.value) == (f"ciocdemoCIC1{suffix}: cannot write the archive: "
                                f"{target.parent}: {os.strerror(errno.EFBIG)}")
    assert unraisable == []
    assert target.read_bytes() == before
    assert [p.name for p in target.parent.iterdir()] == [target.name]


class FullDisk(io.FileIO):
    """A file on a disk that fills up after ``room`` bytes."""

    room = 10_000

    def write(self, data):
        if self.tell() + len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


@pytest.mark.parametrize("suffix", [".zip", ".7z"])
def test_a_full_disk_is_one_error_naming_the_folder(tmp_path, suffix, monkeypatch, unraisable):
    real = archive._open_temporary

    def on_a_full_disk(target):
        handle, path = real(target)
        full = FullDisk(os.dup(handle.fileno()), "r+")
        handle.close()
        return full, path

    monkeypatch.setattr(archive, "_open_temporary", on_a_full_disk)
    noise = tmp_path / "noise.bin"
    noise.write_bytes(os.urandom(100_000))
    target = tmp_path / "out" / f"ciocdemoCIC1{suffix}"
    with pytest.raises(archive.ArchiveError) as error:
        archive.pack(target, [noise], PASSWORD)
    gc.collect()
    assert str(error.value) == (f"ciocdemoCIC1{suffix}: cannot write the archive: "
                                f"{target.parent}: {os.strerror(errno.ENOSPC)}")
    assert unraisable == []
    assert list(target.parent.iterdir()) == []
