"""Value mappings between a raster's units and the model's [0, 1], and back.

A mapping is a range ``LOW:HIGH`` per band: ``unit = (value - LOW) / (HIGH - LOW)``, clipped to
[0, 1], and on writing ``value = LOW + unit * (HIGH - LOW)``, rounded to the nearest integer for
integer outputs and kept within the dtype's range. Written as text, one range for every band
(``'0:10000'``: surface reflectance scaled by 10000) or one per band, comma-separated
(``'0:10000,0:10000,0:10000,0:12000'``).

Where it comes from (``neurop_jax.cli.upsampling``): ``--values`` if given, else the one a model
was trained with (``config.data.value_mapping``, saved with its checkpoints), else ``'0:255'`` for uint8
files; any other file without a mapping is an error asking for ``--values``: values are never
divided by their dtype's maximum behind the user's back. Values outside the range are clipped with
a warning while they are at most ``MAX_OUTSIDE`` of a band's valid pixels; beyond that the mapping
does not fit the file, which is an error naming the range the values span.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from neurop_jax.errors import InputError

MAX_OUTSIDE = 0.01
"""The largest fraction of a band's valid pixels that may lie outside the mapping (clipped)."""
UINT8 = "0:255"
"""The mapping of 8-bit images when none is given: the image convention, 255 is white."""


@dataclasses.dataclass(frozen=True)
class ValueMapping:
  """Per band, the file values ``low`` and ``high`` that become the model's 0 and 1."""

  low: tuple[float, ...]
  high: tuple[float, ...]

  @classmethod
  def parse(cls, text: str, bands: int) -> "ValueMapping":
    """``'LOW:HIGH'`` for all ``bands`` or one ``LOW:HIGH`` per band, comma-separated.

    Raises:
      InputError: naming the text and the expected form.
    """
    ranges = [part.strip() for part in str(text).split(",")]
    hint = (f"give LOW:HIGH for all bands or {bands} comma-separated LOW:HIGH, e.g. "
            "--values 0:10000 for reflectance scaled by 10000")
    if len(ranges) not in (1, bands):
      raise InputError(f"value mapping {text!r} has {len(ranges)} ranges for {bands} bands: {hint}")
    low, high = [], []
    for part in ranges:
      try:
        lo, hi = (float(x) for x in part.split(":"))
      except ValueError as err:
        raise InputError(f"value mapping {text!r}: cannot read {part!r} as LOW:HIGH; {hint}") from err
      if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise InputError(f"value mapping {text!r}: need finite LOW < HIGH, got {part!r}")
      low.append(lo)
      high.append(hi)
    if len(low) == 1:
      low, high = low * bands, high * bands
    return cls(tuple(low), tuple(high))

  def __str__(self) -> str:
    pairs = [f"{lo:g}:{hi:g}" for lo, hi in zip(self.low, self.high)]
    return pairs[0] if len(set(pairs)) == 1 else ",".join(pairs)

  def to_unit(self, values: np.ndarray) -> np.ndarray:
    """File values ``(..., C)`` as float32 ``(..., C)`` in [0, 1] (clipped)."""
    low, high = np.asarray(self.low, np.float64), np.asarray(self.high, np.float64)
    unit = (np.asarray(values, np.float64) - low) / (high - low)
    return np.clip(unit, 0, 1).astype(np.float32)

  def from_unit(self, unit: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``(..., C)`` in [0, 1] back to file values of ``dtype`` (rounded and clipped for ints)."""
    low, high = np.asarray(self.low, np.float64), np.asarray(self.high, np.float64)
    values = low + np.clip(np.asarray(unit, np.float64), 0, 1) * (high - low)
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
      info = np.iinfo(dtype)
      values = np.clip(np.round(values), info.min, info.max)
    return values.astype(dtype)

  def span(self) -> np.ndarray:
    """``high - low`` per band, float32 ``(C,)``: a spread in [0, 1] units times this is in the
    file's units."""
    return (np.asarray(self.high, np.float64) - np.asarray(self.low, np.float64)).astype(np.float32)

  def check_fit(self, values: np.ndarray, valid: np.ndarray, name: str) -> None:
    """Raises ``InputError`` when over ``MAX_OUTSIDE`` of a band's valid values lie outside.

    Args:
      values: ``(h, w, C)`` file values.
      valid: ``(h, w)`` bool, the pixels that hold data.
      name: the file, for the messages.
    """
    if not valid.any():
      return
    for band in range(values.shape[-1]):
      data = values[..., band][valid]
      outside = np.count_nonzero((data < self.low[band]) | (data > self.high[band])) / data.size
      if outside > MAX_OUTSIDE:
        raise InputError(
            f"{name}: {100 * outside:.1f}% of band {band + 1}'s values lie outside the value "
            f"mapping {self} (they span {data.min():g}..{data.max():g}): give --values LOW:HIGH in "
            f"the file's units (e.g. --values 0:10000 for reflectance scaled by 10000, or "
            f"--values {np.floor(data.min()):g}:{np.ceil(data.max()):g} for this file's range)")
      if outside:
        warnings.warn(f"{name}: {100 * outside:.2f}% of band {band + 1}'s values lie outside "
                      f"{self} and are clipped to it", stacklevel=2)


class UnitView:
  """A raster's bands kept in their own dtype, seen through a mapping as the model's input.

  ``view[rows, cols]`` is float32 ``(h, w, C)`` in [0, 1] (``mapping.to_unit`` of that window), so
  only the windows being used exist in float32 (``neurop_jax.inference.tiled.TiledOperator`` reads windows).
  """

  def __init__(self, data: np.ndarray, mapping: ValueMapping):
    self.data, self.mapping = data, mapping
    self.shape, self.dtype = data.shape, np.dtype(np.float32)

  def __getitem__(self, index) -> np.ndarray:
    return self.mapping.to_unit(self.data[index])


def choose(given: str | None, trained: str | None, dtype: np.dtype, bands: int,
           name: str) -> ValueMapping:
  """The mapping of a file: ``given`` (--values), else ``trained`` (the model's), else uint8's.

  Args:
    given, trained: mapping texts or None / ''.
    dtype: the file's dtype.
    bands: the bands the model reads.
    name: the file, for the message.

  Raises:
    InputError: when none applies (a file other than uint8 without a mapping).
  """
  for text in (given, trained):
    if text:
      return ValueMapping.parse(text, bands)
  if np.dtype(dtype) == np.uint8:
    return ValueMapping.parse(UINT8, bands)
  raise InputError(f"{name} holds {np.dtype(dtype).name} values: give the mapping from "
                   "its units to the model's [0, 1] with --values LOW:HIGH (e.g. --values 0:10000 "
                   "for surface reflectance scaled by 10000)")
