"""Tests of neurop_jax.data.splits: deterministic, disjoint, recorded splits."""

import json

import pytest

from neurop_jax.data.splits import fraction_split, folder_split, read_split, write_split

NAMES = [f"class{c}/img{i:02d}.tif" for c in range(5) for i in range(20)]


def test_fraction_split_is_deterministic_disjoint_and_complete():
  split = fraction_split(NAMES, 0.8, 0.1, seed=3)
  assert split == fraction_split(list(reversed(NAMES)), 0.8, 0.1, seed=3)
  assert [len(split[k]) for k in ("train", "val", "test")] == [80, 10, 10]
  assert set(split["train"]).isdisjoint(split["val"])
  assert set(split["train"]).isdisjoint(split["test"])
  assert set(split["val"]).isdisjoint(split["test"])
  assert sorted(split["train"] + split["val"] + split["test"]) == sorted(NAMES)
  assert split != fraction_split(NAMES, 0.8, 0.1, seed=4)


def test_fraction_split_rejects_bad_fractions():
  with pytest.raises(ValueError):
    fraction_split(NAMES, 0.8, 0.3, seed=0)


def test_folder_split_uses_top_folders_and_fills_a_missing_val():
  names = ["train/a/1.png", "train/b/2.png", "test/a/3.png", "other/4.png"]
  split = folder_split(names)
  assert split == {"train": ["train/a/1.png", "train/b/2.png"], "val": ["test/a/3.png"],
                   "test": ["test/a/3.png"]}
  with pytest.raises(ValueError):
    folder_split(["a/1.png"])


def test_split_file_round_trip_and_validation(tmp_path):
  split = fraction_split(NAMES, 0.5, 0.25, seed=0)
  write_split(tmp_path / "run" / "split.json", split)
  assert read_split(tmp_path / "run" / "split.json", NAMES) == split
  (tmp_path / "bad.json").write_text(json.dumps({"train": ["nope.png"]}))
  with pytest.raises(ValueError, match="not in the data"):
    read_split(tmp_path / "bad.json", NAMES)
  (tmp_path / "overlap.json").write_text(json.dumps({"train": NAMES[:2], "test": NAMES[1:3]}))
  with pytest.raises(ValueError, match="overlaps"):
    read_split(tmp_path / "overlap.json", NAMES)
