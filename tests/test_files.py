"""Output files: whole or nothing, with the usual permissions (0o666 minus the umask)."""

from __future__ import annotations

import os
import stat

import pytest

from pathexpand._files import check_output_path, write_atomic
from pathexpand.errors import PathexpandError


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_written_files_honour_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        write_atomic(tmp_path / "a.txt", "hello")
        write_atomic(tmp_path / "b.bin", b"\x00\x01")
    finally:
        os.umask(old)
    for name in ("a.txt", "b.bin"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~mask
    assert (tmp_path / "a.txt").read_text() == "hello"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin"]   # no temp left


def test_a_failed_write_leaves_nothing(tmp_path):
    (tmp_path / "keep.txt").write_text("old")
    with pytest.raises(TypeError):
        write_atomic(tmp_path / "keep.txt", 12345)           # not bytes or str
    assert (tmp_path / "keep.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_bad_output_paths_are_refused(tmp_path):
    with pytest.raises(PathexpandError, match="is a directory"):
        check_output_path(tmp_path, "x.svg")
    with pytest.raises(PathexpandError, match="does not exist"):
        check_output_path(tmp_path / "no" / "x.svg", "x.svg")
    assert check_output_path(tmp_path / "x.svg", "x.svg") == tmp_path / "x.svg"
