"""grain random-access sources of images: image folders, tfds datasets and the bundled sample.

Each source has ``__len__`` and ``__getitem__`` (grain's ``RandomAccessDataSource`` protocol) and
returns ``{'image': float32 (H, W, 3) in [0, 1], 'name': str}``. A file that cannot be read raises
``ValueError`` naming it; with ``skip_bad_images=True`` the source warns, records the name in
``bad_images`` and returns ``None``, which the pipelines drop (grain skips ``None`` elements).
"""

from __future__ import annotations

import functools
import importlib.resources
import io
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from neurop_jax.data import splits
from neurop_jax.io import images, rasters
from neurop_jax.errors import InputError


def sample_data_path() -> Path:
  """The bundled UC Merced sample (``train/<class>/*.png``: 42, ``test/<class>/*.png``: 21)."""
  return Path(os.fspath(importlib.resources.files("neurop_jax") / "sample_data" / "ucm-mini"))


class _SkipsBadImages:
  """Shared handling of unreadable images: raise, or warn, remember the name and return None."""

  def __init__(self, skip_bad_images: bool):
    self._skip = skip_bad_images
    self._bad: set[str] = set()

  @property
  def bad_images(self) -> list[str]:
    """Names of the unreadable images met so far in this process (skip mode), sorted."""
    return sorted(self._bad)

  def _load(self, name: str, read) -> dict[str, Any] | None:
    image = self._read(name, read)
    return None if image is None else {"image": image, "name": name}

  def _read(self, name: str, read) -> Any:
    """``read()``, or for an unreadable file (``ValueError``) an ``InputError`` naming the skip
    option, or in skip mode a warning and None."""
    try:
      return read()
    except ValueError as err:
      if not self._skip:
        raise InputError(f"{err} (to train without the unreadable images, set "
                         "--config.data.skip_bad_images=True)") from err
      self._bad.add(name)
      warnings.warn(f"skipping bad image ({len(self._bad)} so far): {err}", stacklevel=3)
      return None


class ImageFolderSource(_SkipsBadImages):
  """The images ``names`` (relative paths) under ``root``, read on access.

  With a value mapping ``values`` (``neurop_jax.io.values``) the files are rasters read through
  rasterio (``rasters.read_unit``): ``channels`` bands, ``bands`` chosen 1-based (None: all), as
  float32 ``(H, W, channels)`` in [0, 1]; without, 8-bit RGB images (``images.read_image``).
  """

  def __init__(self, root: str | os.PathLike, names: Sequence[str], *,
               skip_bad_images: bool = False, allow_convert: bool = True, values: str = "",
               bands: Sequence[int] | None = None, channels: int = 3):
    super().__init__(skip_bad_images)
    self.root = Path(root)
    self.names = list(names)
    self._allow_convert = allow_convert
    self._raster = (channels, bands, values) if values else None

  def __len__(self) -> int:
    return len(self.names)

  def __getitem__(self, index: int) -> dict[str, Any] | None:
    name = self.names[index]
    path = self.root / name
    if self._raster is not None:
      return self._load(name, lambda: rasters.read_unit(path, *self._raster))
    return self._load(name, lambda: images.read_image(path, allow_convert=self._allow_convert))

  def size_of(self, index: int) -> tuple[int, int] | None:
    """``(H, W)`` of image ``index`` as read (upright), from its header; an unreadable file as
    in ``__getitem__`` (an ``InputError`` naming it, or None in skip mode)."""
    name = self.names[index]
    path = self.root / name
    if self._raster is None:
      return self._read(name, lambda: images.image_size(path))
    info = self._read(name, lambda: rasters.open_raster(path, *self._raster[:2]))
    return None if info is None else (info.height, info.width)

  def __repr__(self) -> str:
    return f"ImageFolderSource(root={str(self.root)!r}, n={len(self.names)})"


@functools.lru_cache(maxsize=8)
def _tfds_records(name: str, split: str, data_dir: str | None):
  """A tfds array_record source with undecoded images, and the name of every record."""
  import tensorflow_datasets as tfds

  records = tfds.data_source(name, split=split, data_dir=data_dir,
                             decoders={"image": tfds.decode.SkipDecoding()})
  features = records.dataset_info.features
  label_names = getattr(features["label"], "names", None) if "label" in features else None
  names = []
  for index in range(len(records)):
    record = records[index]
    filename = record.get("filename")
    if filename is None:
      names.append(f"{index:06d}")
      continue
    filename = filename.decode() if isinstance(filename, bytes) else str(filename)
    names.append(f"{label_names[int(record['label'])]}/{filename}" if label_names else filename)
  if len(set(names)) != len(names):
    raise ValueError(f"tfds {name}[{split}]: record names are not unique")
  return records, tuple(names)


class TfdsSource(_SkipsBadImages):
  """Images of a prepared tfds dataset (array_record, read without TensorFlow).

  Records are named ``<label>/<filename>`` when the dataset has those features (uc_merced does:
  ``agricultural/agricultural00.tif``, the same as the folder layout), else by their index.
  ``names`` selects and orders the records; ``None`` takes all of them.
  """

  def __init__(self, name: str = "uc_merced", *, split: str = "train", data_dir: str | None = None,
               names: Sequence[str] | None = None, skip_bad_images: bool = False,
               allow_convert: bool = True):
    super().__init__(skip_bad_images)
    self._records, all_names = _tfds_records(name, split, data_dir or None)
    self.tfds_name = name
    self.names = list(all_names if names is None else names)
    position = {n: i for i, n in enumerate(all_names)}
    unknown = [n for n in self.names if n not in position]
    if unknown:
      raise ValueError(f"tfds {name}[{split}] has no records named {unknown[:3]}")
    self._indices = np.array([position[n] for n in self.names], dtype=np.int64)
    self._allow_convert = allow_convert

  def __len__(self) -> int:
    return len(self.names)

  def __getitem__(self, index: int) -> dict[str, Any] | None:
    name = self.names[index]
    data = self._records[int(self._indices[index])]["image"]
    label = f"tfds {self.tfds_name}:{name}"
    return self._load(name, lambda: images.decode_image(data, label,
                                                        allow_convert=self._allow_convert))

  def size_of(self, index: int) -> tuple[int, int] | None:
    """``(H, W)`` of record ``index`` as read (upright), from its encoded header; an unreadable
    record as in ``__getitem__``."""
    name = self.names[index]
    data = self._records[int(self._indices[index])]["image"]
    return self._read(name, lambda: images.image_size(io.BytesIO(data),
                                                      f"tfds {self.tfds_name}:{name}"))

  def __repr__(self) -> str:
    return f"TfdsSource(name={self.tfds_name!r}, n={len(self.names)})"


def _resolve_split(config: ml_collections.ConfigDict, names: Sequence[str]) -> dict[str, list[str]]:
  mode = config.split
  if mode == "auto":
    if config.split_file:
      mode = "file"
    elif config.source != "tfds" and any(n.split("/", 1)[0] in splits.SPLITS for n in names):
      mode = "folders"
    else:
      mode = "fractions"
  try:
    if mode == "file":
      return splits.read_split(config.split_file, names)
    if mode == "folders":
      return splits.folder_split(names)
    if mode == "fractions":
      return splits.fraction_split(names, config.train_fraction, config.val_fraction,
                                   config.split_seed)
  except (ValueError, OSError) as err:
    fix = ("--config.data.split_file" if mode == "file" else
           "--config.data.split (auto, fractions, folders or file)")
    raise InputError(f"config.data.split {mode!r}: {err}; check {fix}") from err
  raise InputError(f"config.data.split is {mode!r}: choose auto, fractions, folders or file")


def build_sources(config: ml_collections.ConfigDict,
                  record_to: str | os.PathLike | None = None, channels: int = 3) -> dict[str, Any]:
  """The train, val and test sources described by the data ``config``.

  ``config.source`` picks the images ('sample', 'folder' or 'tfds') and ``config.split`` how they
  are divided (see ``default_data_config``); ``channels`` is the model's band count, read from
  rasters when ``config.value_mapping`` is set (the 'folder' source), else 3 (RGB). When
  ``record_to`` is given the split used is written
  there as JSON (``splits.write_split``), so that the run records it.
  """
  options = dict(skip_bad_images=config.skip_bad_images, allow_convert=config.allow_convert)
  if config.source == "tfds":
    data_dir = config.tfds_data_dir or None
    _, names = _tfds_records(config.tfds_name, config.tfds_split, data_dir)
    split = _resolve_split(config, names)
    make = functools.partial(TfdsSource, config.tfds_name, split=config.tfds_split,
                             data_dir=data_dir, **options)
  elif config.source in ("sample", "folder"):
    root = sample_data_path() if config.source == "sample" else Path(config.path)
    split = _resolve_split(config, images.list_images(root))
    if config.value_mapping:
      if config.source != "folder":
        raise InputError("config.data.value_mapping maps raster values: it needs "
                         "--config.data.source=folder (a folder of GeoTIFF tiles)")
      options.update(values=config.value_mapping, bands=rasters.parse_bands(config.bands),
                     channels=channels)
    elif channels != 3:
      raise InputError(f"the model reads {channels} bands, images are RGB: set "
                       "--config.data.value_mapping (e.g. 0:10000) to read a folder of GeoTIFF tiles")
    make = functools.partial(ImageFolderSource, root, **options)
  else:
    raise InputError(f"config.data.source is {config.source!r}: choose 'sample', 'folder' or "
                     "'tfds'")
  if record_to is not None:
    splits.write_split(record_to, split)
  return {name: make(names=split[name]) for name in splits.SPLITS}


class Subset:
  """The elements ``indices`` of a grain random-access source."""

  def __init__(self, source, indices: Sequence[int]):
    self.source = source
    self.indices = [int(i) for i in indices]

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, index: int):
    return self.source[self.indices[index]]


def evenly_spaced(n: int, k: int) -> np.ndarray:
  """``k`` indices spread evenly over ``range(n)`` (all of them when ``k`` is 0 or >= n)."""
  if k <= 0 or k >= n:
    return np.arange(n)
  return np.unique(np.round(np.linspace(0, n - 1, k)).astype(np.int64))
