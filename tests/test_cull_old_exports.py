"""cull_old_exports: old export files go, everything else stays."""

import logging
import os
import sys
import time

import pytest

from conftest import ROOT, assert_no_traceback, run_command

SCRIPT = ROOT / "cron" / "cull_old_exports.py"
sys.path.insert(0, str(ROOT / "cron"))
import cull_old_exports  # noqa: E402

LOG = logging.getLogger("test")


def aged(path, days, text="x"):
    path.write_text(text, encoding="utf-8")
    moment = time.time() - days * 86400
    os.utime(path, (moment, moment))
    return path


@pytest.mark.parametrize("name, expected", [
    ("jdoe_261101093000mrv2.xml", True), ("Marie_Claire_261101093000exc.csv", True),
    ("jdoe_261101093000sh.xml", True), ("jdoe_261101093000exc.htm", True),
    ("jdoe_261101093000exc.zip", True), ("jdoe_261101093000exc.csv.zip", True),
    ("ciocdemoCIC12.zip", False), ("ciocdemoVOL3.zip", False),
    ("ciocdemoStats2025CIC1.zip", False), ("readme.html", False),
    ("jdoe_2611010930mrv2.xml", False), ("jdoe_261101093000mrv2.xml.bak", False),
    ("_261101093000mrv2.xml", False), ("jdoe_261101093000other.csv", False),
])
def test_only_the_exports_file_names_are_recognised(name, expected):
    assert cull_old_exports.is_export(name) is expected


def test_old_exports_go_and_recent_ones_and_downloads_stay(tmp_path):
    folder = tmp_path / "download"
    folder.mkdir()
    old = aged(folder / "jdoe_261001093000mrv2.xml", 7.01)
    recent = aged(folder / "jdoe_261120093000mrv2.xml", 6.99)
    member = aged(folder / "ciocdemoCIC1.zip", 400)
    count, size, problems = cull_old_exports.cull(folder, 7, False, LOG)
    assert (count, size, problems) == (1, 1, [])
    assert not old.exists() and recent.exists() and member.exists()


def test_a_symlink_to_a_file_outside_is_never_followed(tmp_path):
    folder = tmp_path / "download"
    folder.mkdir()
    outside = aged(tmp_path / "precious.txt", 30, "keep me")
    link = folder / "jdoe_261001093000exc.csv"
    link.symlink_to(outside)
    moment = time.time() - 30 * 86400
    os.utime(link, (moment, moment), follow_symlinks=False)
    count, _, problems = cull_old_exports.cull(folder, 7, False, LOG)
    assert count == 0 and problems and "symlink" in problems[0]
    assert outside.read_text(encoding="utf-8") == "keep me" and link.is_symlink()


def test_a_download_folder_that_is_a_symlink_is_refused(tmp_path):
    real = tmp_path / "elsewhere"
    real.mkdir()
    export = aged(real / "jdoe_261001093000exc.csv", 30)
    (tmp_path / "download").symlink_to(real)
    count, _, problems = cull_old_exports.cull(tmp_path / "download", 7, False, LOG)
    assert count == 0 and "symlink" in problems[0] and export.exists()


def test_a_file_that_cannot_be_deleted_is_reported_and_the_others_go(tmp_path, monkeypatch):
    folder = tmp_path / "download"
    folder.mkdir()
    stuck = aged(folder / "jdoe_261001093000exc.csv", 30)
    other = aged(folder / "jdoe_261002093000exc.csv", 30)
    real_unlink = type(stuck).unlink

    def unlink(path, *args, **kwargs):
        if path.name == stuck.name:
            raise PermissionError(13, "The process cannot access the file", str(path))
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(type(stuck), "unlink", unlink)
    count, _, problems = cull_old_exports.cull(folder, 7, False, LOG)
    assert count == 1 and not other.exists() and stuck.exists()
    assert len(problems) == 1 and stuck.name in problems[0]


def test_the_script_culls_the_sample_sites_and_a_dry_run_deletes_nothing(world):
    folder = world.directory / "VirtualServers" / "ciocdemo" / "download"
    before = sorted(p.name for p in folder.iterdir())
    dry = run_command([sys.executable, SCRIPT, "-n"], world.env)
    assert dry.returncode == 0 and "would free" in dry.stdout
    assert sorted(p.name for p in folder.iterdir()) == before
    result = run_command([sys.executable, SCRIPT], world.env)
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result)
    after = sorted(p.name for p in folder.iterdir())
    assert len(after) < len(before)
    assert "ciocdemoCIC1.zip" in after and "readme.html" in after
    assert "ciocnord: ok" in result.stdout and "export files, freed" in result.stdout
