"""Prepares tfds ``uc_merced`` as array_record without TensorFlow, from the extracted zip.

The stock builder (``tfds build uc_merced --file_format=array_record``, needs TensorFlow: install
the ``tfds-prepare`` extra) downloads the zip itself and reads it with ``tf.io.gfile``. This module
gives the same dataset (name ``uc_merced``, version 2.0.0, features image/label/filename, images
stored as PNG) from a folder you extracted yourself, with PIL alone:

  python -m neurop_jax.data.tfds_prepare --images UCMerced_LandUse/Images \
      --data_dir ~/tensorflow_datasets

``tfds.data_source('uc_merced', data_dir=...)`` and ``source='tfds'`` then read it.
"""

from __future__ import annotations

import argparse
import io
import os
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image
from tensorflow_datasets.image_classification import uc_merced

from neurop_jax.io import images


class _UcMercedFromFolder(uc_merced.UcMerced, skip_registration=True):
  """The stock ``uc_merced`` builder reading ``<images_dir>/<class>/*`` instead of downloading."""

  name = "uc_merced"
  # No download, hence no checksum file to look for (the lookup needs importlib_resources).
  code_path = None

  def __init__(self, *, images_dir: str | os.PathLike, **kwargs):
    self._images_dir = Path(images_dir)
    super().__init__(**kwargs)

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(self._images_dir)}

  def _generate_examples(self, path: Path):
    for name in images.list_images(path):
      label, filename = name.split("/")
      with Image.open(path / name) as image:
        pixels = np.asarray(image)
      encoded = io.BytesIO()
      Image.fromarray(pixels).save(encoded, format="PNG")
      yield filename, {"image": encoded.getvalue(), "label": label, "filename": filename}


def prepare_uc_merced(images_dir: str | os.PathLike, data_dir: str | os.PathLike) -> Path:
  """Writes ``uc_merced`` (array_record) under ``data_dir`` from ``<images_dir>/<class>/<file>``.

  Class folders must be UC Merced's 21 class names. Returns the dataset folder
  (``data_dir/uc_merced/2.0.0``); an already prepared dataset is kept.
  """
  builder = _UcMercedFromFolder(images_dir=images_dir, data_dir=os.fspath(data_dir),
                                file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
  return Path(builder.data_dir)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--images", required=True, help="UCMerced_LandUse/Images (class folders)")
  parser.add_argument("--data_dir", default=os.path.expanduser("~/tensorflow_datasets"))
  args = parser.parse_args()
  print(prepare_uc_merced(args.images, args.data_dir))


if __name__ == "__main__":
  main()
