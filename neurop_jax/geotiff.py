"""GeoTIFF in, GeoTIFF out: the georeference of a super-resolved raster, via rasterio (extra 'geo').

The output covers the same ground as the input: the CRS is kept and the affine transform is scaled
so that a pixel is ``in_size / out_size`` (about ``1 / scale``) of the input's along each axis.
Other profile entries (compression, nodata, tags) are kept; the pixels are 8-bit RGB.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from neurop_jax.atomic import atomic_path

GEO_EXTRA = "pip install 'neurop_jax[geo]'"
TIFF_SUFFIXES = (".tif", ".tiff")
# GeoTIFF tags: ModelPixelScale, ModelTiepoint, ModelTransformation, GeoKeyDirectory.
_GEO_TAGS = (33550, 33922, 34264, 34735)
# Profile entries that describe the input file's layout, not its georeference.
_LAYOUT_KEYS = ("blockxsize", "blockysize", "tiled", "interleave", "photometric")


def is_geotiff(path: str | os.PathLike) -> bool:
  """Whether ``path`` is a TIFF with GeoTIFF tags (checked with Pillow: rasterio not needed)."""
  if Path(path).suffix.lower() not in TIFF_SUFFIXES:
    return False
  try:
    with Image.open(path) as image:
      tags = getattr(image, "tag_v2", {})
      return any(tag in tags for tag in _GEO_TAGS)
  except (OSError, SyntaxError):
    return False


def _rasterio(path: str | os.PathLike):
  try:
    import rasterio
  except ImportError as err:
    raise ImportError(f"{path} is a GeoTIFF: keeping its georeference needs rasterio; install the "
                      f"'geo' extra: {GEO_EXTRA}") from err
  return rasterio


def read_profile(path: str | os.PathLike) -> dict[str, Any]:
  """The rasterio profile of a GeoTIFF (crs, transform, ...) plus its dataset tags under 'tags'."""
  rasterio = _rasterio(path)
  with rasterio.open(path) as src:
    profile = dict(src.profile)
    profile["tags"] = src.tags()
  return profile


def scaled_profile(profile: dict[str, Any], out_hw: tuple[int, int]) -> dict[str, Any]:
  """``profile`` for the same ground at ``out_hw`` pixels: transform scaled, 3-band uint8.

  The pixel size becomes ``in / out`` times the input's per axis (``1 / scale``); the CRS and the
  top-left corner are unchanged.
  """
  from rasterio import Affine
  height, width = out_hw
  scaled = {k: v for k, v in profile.items() if k not in _LAYOUT_KEYS}
  scaled.update(width=width, height=height, count=3, dtype="uint8", photometric="RGB",
                transform=profile["transform"] @ Affine.scale(profile["width"] / width,
                                                              profile["height"] / height))
  return scaled


def write_geotiff(path: str | os.PathLike, pixels: np.ndarray, profile: dict[str, Any]) -> None:
  """Writes uint8 ``(H, W, 3)`` pixels with ``profile`` (from ``scaled_profile``) atomically.

  The file is written beside ``path`` under a temporary name and moved into place, so no partial
  file is ever left at ``path``; it gets the usual permissions (0666 less the umask).
  """
  rasterio = _rasterio(path)
  path = Path(path)
  if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[-1] != 3:
    raise ValueError(f"cannot write {path}: expected uint8 (H, W, 3), got {pixels.dtype} "
                     f"{pixels.shape}")
  profile = dict(profile, driver="GTiff", height=pixels.shape[0], width=pixels.shape[1])
  tags = profile.pop("tags", {})
  with atomic_path(path) as tmp:
    with rasterio.open(tmp, "w", **profile) as dst:
      dst.write(np.moveaxis(pixels, -1, 0))
      dst.update_tags(**tags)
