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
