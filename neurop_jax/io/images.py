"""Reading, writing and listing image files.

Every image leaves this module as float32 ``(H, W, 3)`` RGB in [0, 1]. Files that are not 8-bit RGB
are converted with a warning that names the file and the conversion; files that cannot be decoded
raise ``ValueError`` naming the file and the cause. A JPEG or TIFF with an EXIF orientation is
read upright, turned as every viewer shows it (PNG's rare eXIf chunk is not read).
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from neurop_jax.io.atomic import atomic_path
from neurop_jax.errors import MissingInputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_WRITE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}
_TIFF_BITS_PER_SAMPLE = 258


def list_images(root: str | os.PathLike) -> list[str]:
  """Relative POSIX paths of the PNG/JPEG/TIFF files under ``root``, sorted; hidden ones skipped."""
  root = Path(root)
  if not root.is_dir():
    raise MissingInputError(f"image folder {root} does not exist or is not a directory: check "
                            "--config.data.path")
  names = []
  for path in root.rglob("*"):
    rel = path.relative_to(root)
    if any(part.startswith(".") for part in rel.parts):
      continue
    if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
      names.append(rel.as_posix())
  return sorted(names)


def _warn_convert(path: str, what: str, allow_convert: bool) -> None:
  if not allow_convert:
    raise ValueError(f"image {path} is {what}; refusing to convert (allow_convert=False)")
  warnings.warn(f"image {path}: {what}", stacklevel=3)


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
  return np.repeat(gray[..., None], 3, axis=-1)


def _alpha_to_rgb(image: Image.Image, path: str, allow_convert: bool) -> np.ndarray:
  """RGB of an image with alpha: alpha dropped when fully opaque, else composited on white."""
  rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
  alpha = rgba[..., 3:]
  if np.all(alpha == 1.0):
    _warn_convert(path, f"mode {image.mode}, converted to RGB (alpha fully opaque, dropped)",
                  allow_convert)
    return rgba[..., :3]
  _warn_convert(path, f"mode {image.mode}, converted to RGB (composited on white)", allow_convert)
  return rgba[..., :3] * alpha + (1.0 - alpha)


def _read_sixteen_bit_rgb_tiff(source: str | io.BytesIO, path: str) -> np.ndarray:
  """A 16-bit RGB TIFF at full precision (Pillow keeps only 8 bits), via tifffile."""
  try:
    import tifffile
  except ImportError as err:
    raise ValueError(f"image {path} is a 16-bit RGB TIFF: Pillow reads only its top 8 bits; "
                     "install tifffile to read it at full precision") from err
  if isinstance(source, io.BytesIO):
    source.seek(0)
  data = np.asarray(tifffile.imread(source))
  if data.dtype != np.uint16 or data.ndim != 3 or data.shape[-1] not in (3, 4):
    raise ValueError(f"image {path}: unsupported TIFF layout {data.shape} {data.dtype}")
  return data[..., :3].astype(np.float32) / 65535.0


def _decode(image: Image.Image, source: str | io.BytesIO, path: str,
            allow_convert: bool) -> np.ndarray:
  """Pixels of a PIL image opened from ``source`` as float32 ``(H, W, 3)`` in [0, 1]."""
  mode = image.mode
  if mode == "RGB":
    bits = getattr(image, "tag_v2", {}).get(_TIFF_BITS_PER_SAMPLE, (8,))
    if max(np.atleast_1d(bits)) > 8:
      _warn_convert(path, "a 16-bit RGB TIFF, scaled by 1/65535 (for reflectance or other units, "
                    "read it as a raster with its value mapping: config.data.value_mapping, or "
                    "upsample --values)", allow_convert)
      return _read_sixteen_bit_rgb_tiff(source, path)
    return np.asarray(image, dtype=np.float32) / 255.0
  if mode in ("L", "1"):
    _warn_convert(path, f"grayscale (mode {mode}), converted to RGB", allow_convert)
    return _gray_to_rgb(np.asarray(image.convert("L"), dtype=np.float32) / 255.0)
  if mode in _SIXTEEN_BIT_MODES:
    values = np.asarray(image).astype(np.float32)
    if values.min() < 0 or values.max() > 65535:
      raise ValueError(f"image {path}: mode {mode} values outside [0, 65535]")
    _warn_convert(path, f"16-bit grayscale (mode {mode}), scaled by 1/65535 and converted to RGB",
                  allow_convert)
    return _gray_to_rgb(values / 65535.0)
  if mode == "F":
    values = np.asarray(image, dtype=np.float32)
    if not np.all(np.isfinite(values)) or values.min() < 0 or values.max() > 1:
      raise ValueError(f"image {path}: float image (mode F) must hold finite values in [0, 1], "
                       f"found [{np.nanmin(values)}, {np.nanmax(values)}]")
    _warn_convert(path, "float grayscale (mode F), converted to RGB", allow_convert)
    return _gray_to_rgb(values)
  if mode in ("LA", "La", "RGBA", "RGBa", "PA"):
    return _alpha_to_rgb(image, path, allow_convert)
  if mode == "P":
    if "transparency" in image.info:
      return _alpha_to_rgb(image, path, allow_convert)
    _warn_convert(path, "palette (mode P), converted to RGB", allow_convert)
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
  if mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
    _warn_convert(path, f"mode {mode}, converted to RGB", allow_convert)
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
  raise ValueError(f"image {path}: unsupported image mode {mode}")


_ORIENTATION = 0x0112
"""The EXIF orientation tag: 1 upright; 5 to 8 turn the image by 90 degrees."""
_UNREADABLE = (OSError, SyntaxError, UnidentifiedImageError, Image.DecompressionBombError)


_EXIF_FORMATS = ("JPEG", "MPO", "TIFF")
"""Formats whose EXIF orientation is read: in their header (a PNG's would cost a decode)."""


def _orientation(image: Image.Image) -> int:
  if image.format not in _EXIF_FORMATS:
    return 1
  return int(image.getexif().get(_ORIENTATION, 1) or 1)


def _load(source: str | io.BytesIO, path: str, allow_convert: bool) -> np.ndarray:
  """The pixels of ``source`` upright: turned as its EXIF orientation says, as viewers show it."""
  try:
    with Image.open(source) as image:
      image.load()
      if _orientation(image) != 1:
        image = ImageOps.exif_transpose(image)
      pixels = _decode(image, source, path, allow_convert)
  except _UNREADABLE as err:
    raise ValueError(f"cannot read image {path}: {type(err).__name__}: {err}") from err
  return np.ascontiguousarray(pixels, dtype=np.float32)


def image_size(source: str | os.PathLike | io.BytesIO, name: str | None = None) -> tuple[int, int]:
  """``(H, W)`` of an image file (or encoded bytes) as ``read_image`` returns it (its EXIF
  orientation applied), from its header alone; ``ValueError`` naming it (``name``, else the path)
  when it cannot be opened."""
  name = os.fspath(source) if name is None else name
  try:
    with Image.open(source) as image:
      width, height = image.size
      turned = _orientation(image) in (5, 6, 7, 8)
  except _UNREADABLE as err:
    raise ValueError(f"cannot read image {name}: {type(err).__name__}: {err}") from err
  return (width, height) if turned else (height, width)


def read_image(path: str | os.PathLike, *, allow_convert: bool = True) -> np.ndarray:
  """Reads an image file as float32 ``(H, W, 3)`` RGB in [0, 1].

  8-bit RGB is read as is. Grayscale, palette, alpha, CMYK, 16-bit (scaled by 1/65535) and float
  ('F', values in [0, 1]) images are converted to RGB with a warning naming the file and the
  conversion; images with a non-opaque alpha are composited on white, opaque alpha is dropped. With
  ``allow_convert=False`` any conversion raises ``ValueError`` instead. A file that cannot be
  opened or decoded raises ``ValueError`` naming it and the cause.
  """
  path = os.fspath(path)
  return _load(path, path, allow_convert)


def decode_image(data: bytes, name: str, *, allow_convert: bool = True) -> np.ndarray:
  """``read_image`` for encoded bytes (PNG/JPEG/TIFF); ``name`` is what warnings and errors say."""
  return _load(io.BytesIO(data), name, allow_convert)


def to_uint8(array: np.ndarray) -> np.ndarray:
  """``(H, W[, C])`` float in [0, 1] (clipped) or uint8 to uint8, rounding to the nearest level."""
  array = np.asarray(array)
  if array.dtype == np.uint8:
    return array
  if not np.issubdtype(array.dtype, np.floating):
    raise ValueError(f"expected float in [0, 1] or uint8, got {array.dtype}")
  if not np.all(np.isfinite(array)):
    raise ValueError("image holds NaN or infinite values")
  return np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)


def write_image(path: str | os.PathLike, array: np.ndarray) -> None:
  """Writes ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` float [0, 1] or uint8 pixels atomically.

  The format follows the suffix (PNG, JPEG, TIFF). Written atomically (``neurop_jax.atomic``),
  readable as the umask says (0644 by default).
  """
  path = Path(path)
  fmt = _WRITE_FORMATS.get(path.suffix.lower())
  if fmt is None:
    raise ValueError(f"cannot write {path}: unknown image suffix (use one of {IMAGE_SUFFIXES})")
  pixels = to_uint8(array)
  if pixels.ndim == 3 and pixels.shape[-1] == 1:
    pixels = pixels[..., 0]
  if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[-1] != 3):
    raise ValueError(f"cannot write {path}: expected (H, W), (H, W, 1) or (H, W, 3), "
                     f"got {pixels.shape}")
  with atomic_path(path) as tmp:
    Image.fromarray(pixels).save(tmp, format=fmt)


def image_grid(rows: list[list[np.ndarray]], gap: int = 2) -> np.ndarray:
  """Tiles ``rows`` of ``(H, W, C)`` images in [0, 1] on a white ground, ``gap`` pixels apart.

  Cells take the largest height and width found; smaller images sit at their top-left corner.
  The first three bands are shown as RGB (of a red, green, blue, near-infrared model: the colours).
  Returns float32 ``(rows * (H + gap) - gap, cols * (W + gap) - gap, 3)``.
  """
  h = max(im.shape[0] for row in rows for im in row)
  w = max(im.shape[1] for row in rows for im in row)
  cols = max(len(row) for row in rows)
  grid = np.ones((len(rows) * (h + gap) - gap, cols * (w + gap) - gap, 3), np.float32)
  for i, row in enumerate(rows):
    for j, im in enumerate(row):
      y, x = i * (h + gap), j * (w + gap)
      grid[y:y + im.shape[0], x:x + im.shape[1]] = np.clip(im[..., :3], 0.0, 1.0)
  return grid
