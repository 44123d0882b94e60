"""compress_old_logs: old logs into monthly archives, deleted only once checked."""

import datetime
import logging
import os
import sys
import time
import zipfile

import pytest

from conftest import ROOT, assert_no_traceback, run_command

SCRIPT = ROOT / "cron" / "compress_old_logs.py"
sys.path.insert(0, str(ROOT / "cron"))
import compress_old_logs  # noqa: E402

LOG = logging.getLogger("test")
NOW = time.time()


def aged(path, days, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    moment = NOW - days * 86400
    os.utime(path, (moment, moment))
    return path


def month(days):
    return datetime.datetime.fromtimestamp(NOW - days * 86400).strftime("%Y-%m")


def members(archive):
    with zipfile.ZipFile(archive) as reader:
        return {name: reader.read(name).decode("utf-8") for name in reader.namelist()}


def test_old_logs_go_into_the_months_archive_of_their_folder(tmp_path):
    old = aged(tmp_path / "site" / "access.log.20261101", 10, "GET / 200\n" * 100)
    recent = aged(tmp_path / "site" / "access.log.20261120", 5.9, "GET /new 200\n")
    zipped = aged(tmp_path / "site" / "old.zip", 40, "not really a zip")
    own = aged(tmp_path / "cioctasks" / "volnotify.log", 40, "the toolkit's own log\n")
    result = compress_old_logs.compress(tmp_path, 6, 6, False, LOG, now=NOW)
    assert (result.files, result.problems) == (1, [])
    archive = tmp_path / "site" / f"logs-{month(10)}.zip"
    assert members(archive) == {"access.log.20261101": "GET / 200\n" * 100}
    assert not old.exists() and recent.exists() and zipped.exists() and own.exists()
    assert result.before == 1000 and 0 < result.after < 1000


def test_later_nights_append_and_a_same_name_with_other_content_is_kept_beside(tmp_path):
    aged(tmp_path / "error.log.1", 10, "first\n")
    compress_old_logs.compress(tmp_path, 6, 6, False, LOG, now=NOW)
    aged(tmp_path / "error.log.2", 10, "second\n")
    aged(tmp_path / "error.log.1", 10, "another first\n")
    result = compress_old_logs.compress(tmp_path, 6, 6, False, LOG, now=NOW)
    assert result.files == 2
    assert members(tmp_path / f"logs-{month(10)}.zip") == {
        "error.log.1": "first\n", "error.log.2": "second\n", "error.log.1~2": "another first\n"}


def test_a_rerun_after_a_crash_before_the_delete_just_deletes(tmp_path, monkeypatch):
    log = aged(tmp_path / "error.log.1", 10, "content\n")

    def held_open(path, *args, **kwargs):
        raise PermissionError(13, "The process cannot access the file")

    monkeypatch.setattr(type(log), "unlink", held_open)
    first = compress_old_logs.compress(tmp_path, 6, 6, False, LOG, now=NOW)
    assert first.files == 0 and "cannot be deleted" in first.problems[0]
    monkeypatch.undo()
    second = compress_old_logs.compress(tmp_path, 6, 6, False, LOG, now=NOW)
    assert second.files == 1 and not log.exists()
    assert members(tmp_path / f"logs-{month(10)}.zip") == {"error.log.1": "content\n"}


def test_a_crash_while_writing_leaves_the_archive_and_the_files(tmp_path, monkeypatch):
    aged(tmp_path / "a.log", 10, "a\n")
    compress_old_logs.compress(tmp_path, 6, 6, False, LOG, now=NOW)
    archive = tmp_path / f"logs-{month(10)}.zip"
    before = archive.read_bytes()
    b = aged(tmp_path / "b.log", 10, "b\n")

    def crash(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(compress_old_logs, "verify", crash)
    result = compress_old_logs.compress(tmp_path, 6, 6, False, LOG, now=NOW)
    assert result.files == 0 and "No space left" in result.problems[0]
    assert archive.read_bytes() == before and b.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_an_unreadable_file_is_reported_and_the_others_go_on(tmp_path, monkeypatch):
    locked = aged(tmp_path / "locked.log", 10, "x\n")
    fine = aged(tmp_path / "fine.log", 10, "y\n")
    from cioctasks import files

    real = files.crc_and_size

    def refuse(path):
        if path.name == "locked.log":
            raise PermissionError(13, "The process cannot access the file")
        return real(path)

    monkeypatch.setattr(files, "crc_and_size", refuse)
    result = compress_old_logs.compress(tmp_path, 6, 6, False, LOG, now=NOW)
    assert result.files == 1 and locked.exists() and not fine.exists()
    assert "locked.log" in result.problems[0]


def test_the_script_on_the_sample_world_and_its_dry_run(world):
    logs = world.directory / "logs"
    before = sorted(str(p) for p in logs.rglob("*") if p.is_file())
    dry = run_command([sys.executable, SCRIPT, "-n"], world.env)
    assert dry.returncode == 0 and "would archive" in dry.stdout
    assert sorted(str(p) for p in logs.rglob("*") if p.is_file()
                  if "cioctasks" not in str(p)) == [p for p in before if "cioctasks" not in p]
    result = run_command([sys.executable, SCRIPT], world.env)
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result)
    assert list(logs.glob("ciocdemo/logs-*.zip"))
    assert "files archived" in result.stdout


def test_the_copy_a_killed_run_left_is_removed_by_the_next_run_and_nothing_else(tmp_path):
    import subprocess

    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    gone = process.pid
    leftover = aged(tmp_path / "site" / f".logs-{month(10)}.zip.{gone}.tmp", 0, "PK half")
    deeper = aged(tmp_path / "site" / "python" / f".logs-{month(40)}.zip.{gone}-2.tmp", 0, "PK")
    kept = [aged(tmp_path / "site" / f".access.log.{gone}.tmp", 0, "not ours"),
            aged(tmp_path / "site" / f".logs-{month(10)}.zip.{os.getpid()}.tmp", 0, "running"),
            aged(tmp_path / "cioctasks" / f".logs-{month(10)}.zip.{gone}.tmp", 0, "left alone")]
    dry = compress_old_logs.compress(tmp_path, 6, 6, True, LOG, now=NOW)
    assert dry.problems == [] and leftover.exists() and deeper.exists()
    result = compress_old_logs.compress(tmp_path, 6, 6, False, LOG, now=NOW)
    assert result.problems == []
    assert not leftover.exists() and not deeper.exists()
    assert all(path.exists() for path in kept)


@pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits")
def test_the_copy_is_private_while_it_is_written(tmp_path, monkeypatch):
    import stat

    aged(tmp_path / "a.log", 10, "a\n")
    modes = []
    real = compress_old_logs.verify

    def verify(archive, plan):
        modes.append(stat.S_IMODE(archive.stat().st_mode))
        return real(archive, plan)

    monkeypatch.setattr(compress_old_logs, "verify", verify)
    compress_old_logs.compress(tmp_path, 6, 6, False, LOG, now=NOW)
    plain = aged(tmp_path / "plain", 0, "")
    assert modes == [0o600]
    archive = tmp_path / f"logs-{month(10)}.zip"
    assert stat.S_IMODE(archive.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
