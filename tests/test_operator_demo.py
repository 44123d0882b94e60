"""bin/demo as an operator runs it: it never deletes a folder that is not a sample world,
and its help describes the flags it has."""

import sys

from cioctasks.sampledb import world
from conftest import ROOT, assert_no_traceback, run_command

DEMO = ROOT / "bin" / "demo.py"


def test_demo_refuses_a_dir_that_is_not_a_sample_world_and_touches_nothing(tmp_path, cioc_env):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine", encoding="utf-8")
    result = run_command([sys.executable, DEMO, "--dir", mine], cioc_env)
    assert result.returncode == 2
    assert_no_traceback(result)
    assert result.stdout == ""
    assert result.stderr == (f"demo: error: --dir {mine} is not empty and not a sample world "
                             f"(it has no {world.MARKER}): it is left alone; give a new or "
                             "empty folder\n")
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_demo_refuses_a_dir_that_is_a_file(tmp_path, cioc_env):
    path = tmp_path / "a_file"
    path.write_text("mine", encoding="utf-8")
    result = run_command([sys.executable, DEMO, "--dir", path], cioc_env)
    assert result.returncode == 2
    assert result.stderr == f"demo: error: --dir {path} is a file, not a folder\n"
    assert path.read_text(encoding="utf-8") == "mine"


def test_demo_help_names_only_the_flags_it_has_each_with_its_help(cioc_env):
    result = run_command([sys.executable, DEMO, "--help"], cioc_env)
    assert result.returncode == 0
    assert "--keep" not in result.stdout
    options = result.stdout.split("options:", 1)[1]
    for flag in ("--dir DIR", "--sites SITES", "--scale {small,medium,large}"):
        assert flag in options
    assert "where to build the sample world" in options and "(default 2)" in options
    assert "how many records each site holds" in options
    description = result.stdout.split("\n\n", 2)[1]
    assert description.rstrip().endswith("first.")  # whole, not cut after its first line
