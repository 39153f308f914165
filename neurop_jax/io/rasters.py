"""Rasters in and out through rasterio (the 'geo' extra): any band count and dtype, masks, COG.

Reading (``open_raster``, ``read_bands``): any number of bands, integer or float; the bands the
model reads are chosen 1-based as in GDAL (``--bands 4,3,2``); an alpha band is the mask, not a
band. The mask is GDAL's: a nodata value, an internal (per-dataset) mask or the alpha band; NaN
(and infinity) is nodata in float rasters too, as in GDAL: a float raster without a mask that holds
one is read as a raster whose nodata value is NaN (its output too), so its holes stay holes and
never reach the model. A pixel is nodata when it is so in every band read (GDAL's dataset
mask: a pixel with the nodata value in one band only, e.g. a saturated 255, is data).

Writing (``RasterWriter``): the same ground at the output size, so the CRS and the top-left
corner are kept and the pixel size is ``in / out`` times the input's per axis (about
``1 / scale``); the input's dtype, band descriptions, tags, nodata value and mask kind (nodata
value, internal mask, alpha band) are kept. Regions are written as they are made (windowed, tiled
256x256, DEFLATE), so the output never sits whole in memory; with ``cog=True`` the finished file is
copied into a Cloud-Optimized GeoTIFF (GDAL's COG driver: tiled, with overviews averaged down to
256 pixels, masks honoured). The file appears at its path only when complete (``atomic``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from neurop_jax.io.atomic import atomic_path
from neurop_jax.errors import InputError
from neurop_jax.io.nodata import fill
from neurop_jax.io.values import ValueMapping

GEO_EXTRA = "pip install 'neurop_jax[geo]'"
TIFF_SUFFIXES = (".tif", ".tiff")
BLOCK = 256
"""The output's tile side, in pixels."""
CACHE_MB = 64
"""GDAL's block cache while a raster is read by windows or written (the COG copy included): its
default, 5% of the RAM, holds up to the whole file (a 9888x9196 RGB COG copy peaked at 461 MiB of
RSS with it, 102 MiB with this), so memory would grow with the scene up to that share of the RAM."""
# GeoTIFF tags: ModelPixelScale, ModelTiepoint, ModelTransformation, GeoKeyDirectory.
_GEO_TAGS = (33550, 33922, 34264, 34735)


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


def rasterio_module(path: str | os.PathLike):
  """``rasterio``, or ``InputError`` naming ``path`` and the 'geo' extra when it is missing."""
  try:
    import rasterio
  except ImportError as err:
    raise InputError(f"{path} is a TIFF: reading it with its georeference, bands and dtype needs "
                     f"rasterio; install the 'geo' extra: {GEO_EXTRA}") from err
  return rasterio


@contextlib.contextmanager
def _opened(path: Path):
  rasterio = rasterio_module(path)
  from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", NotGeoreferencedWarning)
      with rasterio.open(path) as src:
        yield src
  except RasterioIOError as err:
    raise InputError(f"cannot read raster {path}: {err}") from err


@dataclasses.dataclass(frozen=True)
class RasterInfo:
  """What an input raster holds and which of it the model reads.

  Attributes:
    path: the file.
    height, width: its size in pixels.
    dtype: its values' dtype (all bands share it).
    bands: the 1-based bands the model reads, in the model's order.
    mask: 'none', 'nodata' (a nodata value; NaN for a float raster without a mask that holds NaN),
      'internal' (a per-dataset mask) or 'alpha'.
    alpha: the 1-based alpha band, or None.
    profile: rasterio's profile plus 'tags' and 'descriptions' (of every band).
  """

  path: Path
  height: int
  width: int
  dtype: np.dtype
  bands: tuple[int, ...]
  mask: str
  alpha: int | None
  profile: dict[str, Any]

  @property
  def nodata(self) -> float | None:
    return self.profile.get("nodata")


def parse_bands(text: str | None) -> tuple[int, ...] | None:
  """``'4,3,2'`` as ``(4, 3, 2)`` (1-based, GDAL's order); None or '' for None."""
  if not text:
    return None
  try:
    bands = tuple(int(part) for part in str(text).split(","))
  except ValueError as err:
    raise InputError(f"--bands must be 1-based band numbers separated by commas, e.g. --bands "
                     f"4,3,2; got {text!r}") from err
  return bands


def _mask_kind(src) -> tuple[str, int | None]:
  from rasterio.enums import ColorInterp, MaskFlags
  alpha = [i + 1 for i, c in enumerate(src.colorinterp) if c == ColorInterp.alpha]
  if alpha:
    return "alpha", alpha[0]
  flags = set(src.mask_flag_enums[0])
  if MaskFlags.nodata in flags:
    return "nodata", None
  if MaskFlags.per_dataset in flags:
    return "internal", None
  return "none", None


def _holds_non_finite(src) -> bool:
  """Whether any value of an open raster is NaN or infinite (read in windows of rows)."""
  from rasterio.windows import Window
  rows = max(1, 2**22 // max(src.width * src.count, 1))
  for top in range(0, src.height, rows):
    window = Window(0, top, src.width, min(rows, src.height - top))
    if not np.isfinite(src.read(window=window)).all():
      return True
  return False


def open_raster(path: str | os.PathLike, channels: int,
                bands: Sequence[int] | None = None) -> RasterInfo:
  """The ``RasterInfo`` of ``path`` for a model of ``channels`` bands (metadata only).

  Raises:
    InputError: unreadable file, complex values, band numbers out of range, or a band count that
      differs from ``channels`` without ``bands``.
  """
  path = Path(path)
  with _opened(path) as src:
    kind, alpha = _mask_kind(src)
    dtype = np.dtype(src.dtypes[0])
    profile = dict(src.profile, tags=src.tags(), descriptions=tuple(src.descriptions))
    count = src.count
    if kind == "none" and np.issubdtype(dtype, np.floating) and _holds_non_finite(src):
      kind, profile["nodata"] = "nodata", float("nan")
  if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
    raise InputError(f"raster {path} holds {dtype.name} values: only integer and real bands are "
                     "read")
  data_bands = tuple(b for b in range(1, count + 1) if b != alpha)
  if bands is None:
    if len(data_bands) != channels:
      raise InputError(f"raster {path} has {len(data_bands)} bands and the model reads {channels}: "
                       f"choose them with --bands (1-based, e.g. --bands "
                       f"{','.join(str(b) for b in data_bands[:channels][::-1])})")
    bands = data_bands
  bands = tuple(int(b) for b in bands)
  wrong = [b for b in bands if b not in data_bands]
  if wrong or len(bands) != channels:
    raise InputError(f"--bands {','.join(map(str, bands))} for {path}: give {channels} of its "
                     f"bands {','.join(map(str, data_bands))} (1-based)")
  return RasterInfo(path, int(profile["height"]), int(profile["width"]), dtype, bands, kind, alpha,
                    profile)


def read_bands(info: RasterInfo, max_pixels: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """The bands the model reads, ``(h, w, C)`` in the file's dtype, and ``(h, w)`` bool valid.

  With ``max_pixels``, a look at the file rather than its pixels: every k-th row and column
  (nearest decimation, from overviews where the file has them) so that at most that many are read.
  """
  step = 1 if max_pixels is None else max(1, math.ceil(math.sqrt(info.height * info.width /
                                                                 max_pixels)))
  shape = (-(-info.height // step), -(-info.width // step))
  with _opened(info.path) as src:
    values = np.moveaxis(src.read(list(info.bands), out_shape=(len(info.bands), *shape)), 0, -1)
    if info.mask == "alpha":
      valid = src.read(info.alpha, out_shape=shape) > 0
    else:
      valid = np.any(src.read_masks(list(info.bands), out_shape=(len(info.bands), *shape)) > 0,
                     axis=0)
  if np.issubdtype(values.dtype, np.floating):
    valid &= np.all(np.isfinite(values), axis=-1)
  return values, valid


class WindowReader:
  """The bands the model reads of a raster without a mask, read a window at a time as the model's
  input: ``reader[rows, cols]`` is float32 ``(h, w, C)`` in [0, 1] through ``mapping`` (an object
  with ``to_unit``), so the scene is never in memory whole. A context manager (it holds the file
  open)."""

  def __init__(self, info: RasterInfo, mapping):
    self.info, self.mapping = info, mapping
    self.shape, self.dtype = (info.height, info.width, len(info.bands)), np.dtype(np.float32)

  def __enter__(self) -> "WindowReader":
    self._stack = contextlib.ExitStack()
    self._stack.enter_context(rasterio_module(self.info.path).Env(GDAL_CACHEMAX=CACHE_MB))
    self._src = self._stack.enter_context(_opened(self.info.path))
    return self

  def __exit__(self, *exc) -> None:
    self._stack.__exit__(*exc)

  def __getitem__(self, index: tuple[slice, slice]) -> np.ndarray:
    from rasterio.windows import Window
    window = Window.from_slices(*index, height=self.info.height, width=self.info.width)
    return self.mapping.to_unit(np.moveaxis(self._src.read(list(self.info.bands), window=window),
                                            0, -1))


def read_unit(path: str | os.PathLike, channels: int, bands: Sequence[int] | None,
              mapping: str) -> np.ndarray:
  """A raster as the model's input: ``(h, w, channels)`` float32 in [0, 1] through the value
  ``mapping`` text, nodata pixels filled (``nodata.fill``). Raises ``InputError`` (a ValueError)
  naming the file when it cannot be read or its values do not fit the mapping."""
  info = open_raster(path, channels, bands)
  data, valid = read_bands(info)
  unit = ValueMapping.parse(mapping, channels)
  unit.check_fit(data, valid, str(path))
  return fill(unit.to_unit(data), valid)


def output_profile(info: RasterInfo, out_hw: tuple[int, int], dtype: np.dtype | None = None,
                   nodata: float | None = None) -> dict[str, Any]:
  """The profile of the output on the same ground at ``out_hw``: transform scaled, the input's
  dtype (or ``dtype``), its bands read plus its alpha band, tiled.

  ``nodata``: the nodata value of an output of another ``dtype`` (e.g. NaN for a float32 spread);
  by default the input's.
  """
  from rasterio import Affine
  p = info.profile
  height, width = out_hw
  dtype = info.dtype if dtype is None else np.dtype(dtype)
  descriptions = [p["descriptions"][b - 1] for b in info.bands]
  profile = dict(
      driver="GTiff", width=width, height=height, count=len(info.bands) + (info.alpha is not None),
      dtype=dtype.name, crs=p.get("crs"), tiled=True, blockxsize=BLOCK, blockysize=BLOCK,
      compress="deflate", interleave="pixel", tags=p["tags"], descriptions=descriptions,
      mask=info.mask, transform=p["transform"] @ Affine.scale(info.width / width,
                                                              info.height / height))
  if info.mask == "nodata":
    profile["nodata"] = info.nodata if nodata is None else nodata
  if dtype == np.uint8 and len(info.bands) == 3 and info.alpha is None:
    profile["photometric"] = "RGB"
  if p.get("crs") is None and p["transform"].is_identity:
    del profile["transform"]
  return profile


def _avoid_nodata(values: np.ndarray, nodata: float) -> np.ndarray:
  """Valid values equal to the nodata value moved off it, so that no data pixel reads as nodata:
  one unit for integers, ``2**-20`` of it (at least of 1) for floats, which GDAL compares to the
  nodata value with a tolerance."""
  if np.isnan(nodata):
    return values
  hit = values == nodata
  if not hit.any():
    return values
  if np.issubdtype(values.dtype, np.integer):
    moved = nodata + 1 if nodata < np.iinfo(values.dtype).max else nodata - 1
  else:
    moved = nodata + max(abs(nodata), 1.0) * 2.0**-20
  return np.where(hit, np.asarray(moved).astype(values.dtype), values)


class RasterWriter:
  """Writes an output raster region by region; the file appears at ``path`` when complete.

  Usage::

    with RasterWriter(path, output_profile(info, out_hw), cog=True) as out:
      out.write((y0, x0), values, valid)   # any regions, covering the grid

  Args:
    path: the output file.
    profile: from ``output_profile``.
    cog: copy the result into a Cloud-Optimized GeoTIFF.
  """

  def __init__(self, path: str | os.PathLike, profile: dict[str, Any], cog: bool = True):
    self.path, self.cog = Path(path), cog
    profile = dict(profile)
    self.tags, self.descriptions = profile.pop("tags"), profile.pop("descriptions")
    self.mask = profile.pop("mask")
    self.profile = profile

  def __enter__(self) -> "RasterWriter":
    rasterio = rasterio_module(self.path)
    stack = contextlib.ExitStack()
    self._final = self._file = stack.enter_context(atomic_path(self.path))
    if self.cog:
      self._file = self._final.with_name(self._final.name + ".gtiff")
      stack.callback(self._file.unlink, missing_ok=True)
    stack.enter_context(rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True, GDAL_CACHEMAX=CACHE_MB))
    self._dst = stack.enter_context(rasterio.open(self._file, "w", **self.profile))
    self._stack = stack
    return self

  def write(self, origin: tuple[int, int], values: np.ndarray, valid: np.ndarray) -> None:
    """``values`` ``(h, w, C)`` of the profile's dtype at ``origin``; ``valid`` ``(h, w)`` bool."""
    from rasterio.windows import Window
    window = Window(origin[1], origin[0], values.shape[1], values.shape[0])
    bands = len(self.descriptions)
    if self.mask == "nodata":
      nodata = self.profile["nodata"]
      values = np.where(valid[..., None], _avoid_nodata(values, nodata),
                        np.asarray(nodata).astype(values.dtype))
    self._dst.write(np.moveaxis(values, -1, 0), indexes=list(range(1, bands + 1)), window=window)
    if self.mask == "alpha":
      top = np.iinfo(values.dtype).max if np.issubdtype(values.dtype, np.integer) else 1
      self._dst.write((valid * top).astype(values.dtype), bands + 1, window=window)
    elif self.mask == "internal":
      self._dst.write_mask(valid.astype(np.uint8) * 255, window=window)

  def _finish(self) -> None:
    self._dst.update_tags(**self.tags)
    for band, text in enumerate(self.descriptions, start=1):
      if text:
        self._dst.set_band_description(band, text)
    self._dst.close()
    if self.cog:
      import rasterio.shutil
      rasterio.shutil.copy(self._file, self._final, driver="COG", compress="DEFLATE",
                           blocksize=BLOCK, overview_resampling="average", bigtiff="IF_SAFER")

  def __exit__(self, *exc) -> None:
    if exc[0] is not None:
      self._stack.__exit__(*exc)
      return
    with self._stack:
      self._finish()
