"""Tests of neurop_jax.data.sources: folder sources, bad images, the sample, build_sources."""

import json

import numpy as np
import pytest
from PIL import Image

from neurop_jax.data.config import default_data_config
from neurop_jax.data.sources import ImageFolderSource, build_sources, sample_data_path


def _make_tree(root, names, size=(12, 10)):
  for i, name in enumerate(names):
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(i).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(root / name)


AID_LIKE = [f"{c}/{c.lower()}_{i}.jpg" for c in ("Airport", "Beach", "Forest") for i in range(10)]


def test_folder_source_returns_images_and_names(tmp_path):
  _make_tree(tmp_path, ["a/x.png", "b/y.tif"])
  source = ImageFolderSource(tmp_path, ["b/y.tif", "a/x.png"])
  assert len(source) == 2
  element = source[0]
  assert element["name"] == "b/y.tif"
  assert element["image"].shape == (12, 10, 3) and element["image"].dtype == np.float32
  expected = np.asarray(Image.open(tmp_path / "b/y.tif"))
  np.testing.assert_array_equal(element["image"] * 255, expected)


def test_bad_image_raises_by_default_and_is_skipped_and_counted_on_request(tmp_path):
  _make_tree(tmp_path, ["a/ok.png"])
  (tmp_path / "a" / "bad.png").write_bytes(b"junk")
  strict = ImageFolderSource(tmp_path, ["a/bad.png", "a/ok.png"])
  with pytest.raises(ValueError, match="bad.png"):
    strict[0]
  lenient = ImageFolderSource(tmp_path, ["a/bad.png", "a/ok.png"], skip_bad_images=True)
  with pytest.warns(UserWarning, match="skipping bad image"):
    assert lenient[0] is None
  assert lenient[1]["name"] == "a/ok.png"
  assert lenient.bad_images == ["a/bad.png"]


def test_sample_data_is_bundled():
  root = sample_data_path()
  train = sorted(root.glob("train/*/*.png"))
  assert len(train) == 42 and len(list(root.glob("test/*/*.png"))) == 21
  assert sum(p.stat().st_size for p in root.rglob("*.png")) < 10 * 2**20
  sources = build_sources(default_data_config())
  assert [len(sources[k]) for k in ("train", "val", "test")] == [42, 21, 21]
  assert sources["train"][0]["image"].shape == (256, 256, 3)


def test_folder_fraction_split_is_recorded_deterministic_and_disjoint(tmp_path):
  _make_tree(tmp_path / "AID", AID_LIKE)
  config = default_data_config()
  config.source, config.path = "folder", str(tmp_path / "AID")
  config.train_fraction, config.val_fraction = 0.6, 0.2
  first = build_sources(config, record_to=tmp_path / "run" / "split.json")
  second = build_sources(config)
  names = {k: first[k].names for k in ("train", "val", "test")}
  assert names == {k: second[k].names for k in names}
  assert [len(names[k]) for k in ("train", "val", "test")] == [18, 6, 6]
  assert not set(names["train"]) & (set(names["val"]) | set(names["test"]))
  assert json.loads((tmp_path / "run" / "split.json").read_text()) == names


def test_split_file_selects_the_named_images(tmp_path):
  _make_tree(tmp_path / "imgs", AID_LIKE)
  (tmp_path / "split.json").write_text(json.dumps({"train": AID_LIKE[:4], "test": AID_LIKE[-2:]}))
  config = default_data_config()
  config.source, config.path, config.split_file = "folder", str(tmp_path / "imgs"), str(
      tmp_path / "split.json")
  sources = build_sources(config)
  assert sources["train"].names == sorted(AID_LIKE[:4]) and len(sources["val"]) == 0
  assert sources["test"].names == sorted(AID_LIKE[-2:])


def test_folders_split_reads_train_and_val_folders(tmp_path):
  _make_tree(tmp_path, ["train/a/1.png", "train/a/2.png", "val/a/3.png"])
  config = default_data_config()
  config.source, config.path = "folder", str(tmp_path)
  sources = build_sources(config)
  assert sources["train"].names == ["train/a/1.png", "train/a/2.png"]
  assert sources["val"].names == sources["test"].names == ["val/a/3.png"]


def test_unknown_source_is_an_error():
  config = default_data_config()
  config.source = "ftp"
  with pytest.raises(ValueError, match="ftp"):
    build_sources(config)
