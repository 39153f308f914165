"""Atomic writes: the old file or the whole new one, the umask's permissions, no leftover."""

import os
import stat

import pytest

from neurop_jax.io.atomic import PARTIAL_MARK, atomic_path, write_text


def test_write_text_replaces_whole_file_with_umask_permissions(tmp_path):
  target = tmp_path / "sub" / "result.json"
  previous = os.umask(0o027)
  try:
    write_text(target, "one")
    write_text(target, "two")
  finally:
    os.umask(previous)
  assert target.read_text() == "two"
  assert stat.S_IMODE(target.stat().st_mode) == 0o640
  assert os.listdir(target.parent) == ["result.json"]


def test_failure_keeps_the_old_file_and_removes_the_partial_one(tmp_path):
  target = tmp_path / "image.png"
  target.write_text("old")
  with pytest.raises(RuntimeError):
    with atomic_path(target) as tmp:
      assert tmp.name.startswith(".image.png" + PARTIAL_MARK) and tmp.suffix == ".png"
      tmp.write_text("half")
      raise RuntimeError("killed")
  assert target.read_text() == "old"
  assert os.listdir(tmp_path) == ["image.png"]
