"""Tests of neurop_jax.data.tfds_prepare and TfdsSource: prepare and read without TensorFlow."""

import numpy as np
from PIL import Image

from neurop_jax.data.config import default_data_config
from neurop_jax.data.sources import TfdsSource, build_sources
from neurop_jax.data.tfds_prepare import prepare_uc_merced

CLASSES = ("agricultural", "beach", "forest")


def test_prepared_uc_merced_is_read_through_tfds_data_source(tmp_path):
  images = {}
  for c in CLASSES:
    (tmp_path / "Images" / c).mkdir(parents=True)
    for i in range(3):
      pixels = np.random.default_rng(len(images)).integers(0, 256, (16, 12 + i, 3), dtype=np.uint8)
      Image.fromarray(pixels).save(tmp_path / "Images" / c / f"{c}{i:02d}.tif")
      images[f"{c}/{c}{i:02d}.tif"] = pixels
  dataset_dir = prepare_uc_merced(tmp_path / "Images", tmp_path / "tfds")
  assert dataset_dir == tmp_path / "tfds" / "uc_merced" / "2.0.0"
  assert list(dataset_dir.glob("uc_merced-train.array_record-*"))

  source = TfdsSource("uc_merced", data_dir=str(tmp_path / "tfds"))
  assert sorted(source.names) == sorted(images)
  for index in range(len(source)):
    element = source[index]
    np.testing.assert_array_equal(element["image"] * 255, images[element["name"]])

  config = default_data_config()
  config.source, config.tfds_data_dir = "tfds", str(tmp_path / "tfds")
  config.train_fraction, config.val_fraction = 5 / 9, 2 / 9
  sources = build_sources(config, record_to=tmp_path / "split.json")
  assert [len(sources[k]) for k in ("train", "val", "test")] == [5, 2, 2]
  assert sorted(sum((sources[k].names for k in sources), [])) == sorted(images)
