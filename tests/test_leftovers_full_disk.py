"""newdownloads on a disk that is really full: a small tmpfs mounted over the download
folder or the work folder in a private mount namespace (``unshare``). Skipped where the
system does not allow that; tests/test_newdownloads.py simulates the same failures
everywhere."""

import errno
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, assert_no_traceback, run_command

SCRIPT = ROOT / "downloads" / "newdownloads.py"
#: Mounts a tmpfs of $1 KB over the folder $2, runs $3..., then lists what is left there.
ON_A_SMALL_DISK = ('size=$1; folder=$2; shift 2; '
                   'mount -t tmpfs -o size=${size}k tmpfs "$folder" || exit 99; '
                   '"$@"; code=$?; echo "left: $(ls -A "$folder")"; exit $code')


def can_mount_a_small_disk():
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return False
    try:
        probe = subprocess.run(
            ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=16k tmpfs /mnt"],
            capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(not can_mount_a_small_disk(),
                                reason="cannot mount a tmpfs in a user namespace here")


@pytest.mark.parametrize("where", ["download", "work"])
def test_a_full_disk_fails_each_download_in_one_line_and_the_other_database_goes_on(world, where):
    if where == "download":
        folder = world.directory / "VirtualServers" / "ciocdemo" / "download"
        expected = (f"cannot write the archive: {folder}: {os.strerror(errno.ENOSPC)}")
    else:
        folder = world.directory / "state" / "downloads" / "ciocdemo"
        folder.mkdir(parents=True)
        expected = f"cannot write {folder}{os.sep}ciocdemo"
    result = run_command(["unshare", "-rm", "sh", "-c", ON_A_SMALL_DISK, "sh", "40", folder,
                          sys.executable, SCRIPT], world.env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert_no_traceback(result)
    assert "Exception ignored" not in result.stderr
    failures = [line for line in result.stderr.splitlines() if " member " in line]
    assert len(failures) == 4
    for line in failures:
        assert line.startswith("newdownloads[ciocdemo]: ciocdemo member ") and expected in line
        if where == "work":
            assert line.endswith(": database or disk is full")
    assert "ciocnord: ok" in result.stdout and "built 4 record downloads" in result.stdout
    assert result.stdout.splitlines()[-1] == "left: "
