"""files: published files are whole, readable as any file would be, and deletes stay home."""

import os
import stat

import pytest

from cioctasks import files


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits")
def test_a_new_file_gets_the_permissions_open_would_give_it(tmp_path):
    plain = tmp_path / "plain.json"
    plain.write_text("{}", encoding="utf-8")
    written = tmp_path / "written.json"
    files.atomic_write(written, "{}")
    assert mode(written) == mode(plain)


@pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits")
def test_a_replaced_file_keeps_its_permissions(tmp_path):
    target = tmp_path / "map.json"
    target.write_text("old", encoding="utf-8")
    target.chmod(0o640)
    files.atomic_write(target, "new")
    assert target.read_text(encoding="utf-8") == "new"
    assert mode(target) == 0o640


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "map.json"
    target.write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError):
        with files.atomic_writer(target) as handle:
            handle.write(b"half")
            raise RuntimeError("disk full")
    assert target.read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["map.json"]


def test_safe_delete_refuses_symlinks_and_paths_outside_its_root(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "precious.txt"
    outside.write_text("keep", encoding="utf-8")
    link = root / "link.txt"
    link.symlink_to(outside)
    with pytest.raises(ValueError, match="symlink"):
        files.safe_delete(link, root)
    with pytest.raises(ValueError, match="outside"):
        files.safe_delete(root / ".." / "precious.txt", root)
    inside = root / "old.xml"
    inside.write_text("x", encoding="utf-8")
    files.safe_delete(inside, root)
    assert not inside.exists() and outside.exists()


# -- temporary files and the leftovers of killed runs ---------------------------------------

def dead_pid():
    """The id of a process that has just ended."""
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture
def live_process():
    """A process of ours that runs for the length of the test."""
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield process
    process.kill()
    process.wait()


def touch(path, age=0.0):
    import time

    path.write_bytes(b"PK half an archive")
    moment = time.time() - age
    os.utime(path, (moment, moment))
    return path


def test_a_temporary_file_is_named_for_its_target_and_process(tmp_path):
    target = tmp_path / "ciocdemoCIC1.zip"
    fd, first = files.create_temporary(target)
    os.close(fd)
    fd, second = files.create_temporary(target)  # a second writer of the same target
    os.close(fd)
    assert first.name == f".ciocdemoCIC1.zip.{os.getpid()}.tmp"
    assert second.name == f".ciocdemoCIC1.zip.{os.getpid()}-2.tmp"
    assert files.TEMPORARY.match(second.name)["target"] == "ciocdemoCIC1.zip"
    with files.atomic_writer(tmp_path / "map.json") as handle:
        names = [p.name for p in tmp_path.iterdir()]
        handle.write(b"{}")
    assert f".map.json.{os.getpid()}.tmp" in names


@pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits")
def test_a_private_temporary_file_is_readable_by_its_owner_only(tmp_path):
    fd, path = files.create_temporary(tmp_path / "ciocdemoCIC1.zip", private=True)
    os.close(fd)
    assert mode(path) == 0o600


def test_only_our_temporary_files_of_processes_that_are_gone_are_leftovers(tmp_path, live_process):
    import logging
    import re

    gone = dead_pid()
    leftover = touch(tmp_path / f".ciocdemoCIC1.zip.{gone}.tmp")
    second = touch(tmp_path / f".ciocdemoVOL1.zip.{gone}-2.tmp")
    mine = touch(tmp_path / f".ciocdemoCIC2.zip.{os.getpid()}.tmp")
    running = touch(tmp_path / f".ciocdemoVOL2.zip.{live_process.pid}.tmp")
    not_ours = touch(tmp_path / f".export.csv.{gone}.tmp")
    not_a_pid = touch(tmp_path / ".ciocdemoCIC3.zip.x1.tmp")
    published = touch(tmp_path / "ciocdemoCIC1.zip")
    folder = tmp_path / f".ciocdemoCIC4.zip.{gone}.tmp"
    folder.mkdir()
    outside = touch(tmp_path.parent / f"{tmp_path.name}-precious")
    link = tmp_path / f".ciocdemoCIC5.zip.{gone}.tmp"
    link.symlink_to(outside)
    ours = re.compile(r"ciocdemo.+\.zip")

    found = files.leftovers(tmp_path, ours)
    assert [(path.name, reason) for path, reason in found] == [
        (leftover.name, f"process {gone} is gone"), (second.name, f"process {gone} is gone")]
    assert files.remove_leftovers(tmp_path, ours, logging.getLogger("test"), dry_run=True) == \
        [leftover, second]
    assert leftover.exists()
    assert files.remove_leftovers(tmp_path, ours, logging.getLogger("test")) == [leftover, second]
    for kept in (mine, running, not_ours, not_a_pid, published, folder, link, outside):
        assert kept.exists() or kept.is_symlink(), kept
    assert not leftover.exists() and not second.exists()


def test_a_running_process_keeps_its_temporary_file_for_a_day_only(tmp_path, live_process):
    import time

    running = touch(tmp_path / f".ciocdemoCIC1.zip.{live_process.pid}.tmp")
    assert files.leftovers(tmp_path, "ciocdemoCIC1.zip") == []
    later = time.time() + files.LEFTOVER_AGE + 3600
    assert files.leftovers(tmp_path, "ciocdemoCIC1.zip", now=later) == [
        (running, "unchanged for 25 hours")]


def test_a_pid_taken_by_a_newer_process_does_not_keep_a_leftover(tmp_path, live_process):
    started = files.process_start(live_process.pid)
    if not started:
        pytest.skip("this system does not say when a process started")
    # Last written an hour before the process that now has its pid started.
    leftover = touch(tmp_path / f".ciocdemoCIC1.zip.{live_process.pid}.tmp", age=3600)
    ((path, reason),) = files.leftovers(tmp_path, "ciocdemoCIC1.zip")
    assert path == leftover and "another process" in reason


def test_process_start_knows_this_process_and_not_one_that_ended():
    import time

    started = files.process_start(os.getpid())
    assert started is not None and started <= time.time()
    assert files.process_start(dead_pid()) is None
