"""Pixels without data: filling them for the model, and the output's mask.

The model must not see a nodata value (0, -9999, ...) as image content: its convolutions would
smear it into the valid pixels around. ``fill`` replaces masked pixels by the mean of the nearest
valid ones, at the coarsest scale needed (a push-pull pyramid: 2x2 block means of the valid pixels
only, coarse levels filling the holes of the finer ones), so a hole is filled with what surrounds
it and valid pixels are kept exactly. The output mask is the input mask upsampled by nearest
neighbour on the output grid (``upsample_mask``): every output pixel whose centre falls in a
nodata input pixel is nodata, so the nodata fraction is kept to within a pixel row at the border
of each nodata region.
"""

from __future__ import annotations

import numpy as np


def fill(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
  """``values`` ``(h, w, C)`` with the pixels where ``valid`` ``(h, w)`` is False filled.

  Any real dtype; the fill is computed band by band in float32 and rounded for integer dtypes.
  Valid pixels are returned unchanged; an image without a valid pixel is returned as zeros.
  """
  values = np.asarray(values)
  if valid.all():
    return values
  if not valid.any():
    return np.zeros_like(values)
  out = values.copy()
  for band in range(values.shape[-1]):
    estimate = _push_pull(values[..., band], valid)[~valid]
    if np.issubdtype(values.dtype, np.integer):
      estimate = np.round(estimate)
    out[~valid, band] = estimate.astype(values.dtype)
  return out


def _push_pull(band: np.ndarray, valid: np.ndarray) -> np.ndarray:
  """One band ``(h, w)`` with every pixel estimated from the valid ones: float32 ``(h, w)``."""
  weight = valid.astype(np.float32)
  sums, weights = [np.where(valid, band, 0).astype(np.float32)], [weight]
  pool = lambda a: a.reshape(a.shape[0] // 2, 2, a.shape[1] // 2, 2).sum(axis=(1, 3))
  while max(sums[-1].shape) > 1:
    s, w = (np.pad(a, ((0, a.shape[0] % 2), (0, a.shape[1] % 2))) for a in (sums[-1], weights[-1]))
    sums.append(pool(s))
    weights.append(pool(w))
  estimate = sums[-1] / weights[-1]
  for s, w in zip(reversed(sums[:-1]), reversed(weights[:-1])):
    coarse = np.repeat(np.repeat(estimate, 2, axis=0), 2, axis=1)[:s.shape[0], :s.shape[1]]
    estimate = np.where(w > 0, s / np.maximum(w, 1), coarse)
  return estimate


def nearest_rows(start: int, count: int, in_size: int, out_size: int) -> np.ndarray:
  """The input pixel holding each output pixel centre ``start .. start + count - 1`` of an axis:
  ``floor((i + 0.5) * in_size / out_size)``, exactly, in integers."""
  i = np.arange(start, start + count, dtype=np.int64)
  return (2 * i + 1) * in_size // (2 * out_size)


def upsample_mask(valid: np.ndarray, origin: tuple[int, int], shape: tuple[int, int],
                  out_hw: tuple[int, int]) -> np.ndarray:
  """The nearest upsampling of ``valid`` ``(h, w)`` bool on the ``out_hw`` grid, over the region
  at ``origin`` of ``shape``: ``(shape[0], shape[1])`` bool."""
  rows = nearest_rows(origin[0], shape[0], valid.shape[0], out_hw[0])
  cols = nearest_rows(origin[1], shape[1], valid.shape[1], out_hw[1])
  return valid[np.ix_(rows, cols)]
