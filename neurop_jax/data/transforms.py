"""Random training transforms, pure functions of an image and a ``np.random.Generator``.

Images are float32 ``(H, W, C)`` in [0, 1] (C = 3, RGB, or the bands of rasters). LR images are
bicubic (PIL-exact) downsamplings of the HR crop, clipped to [0, 1] (as PIL's 8-bit resize clips; they are not quantised to 8 bits). The
pipelines call these functions inside grain random maps, which hand them a generator seeded by the
pipeline seed and the element (or batch) index.
"""

from __future__ import annotations

import math

import numpy as np

from neurop_jax.models.coords import make_cell, make_coord
from neurop_jax.data.degrade import downsample


def sample_scale(rng: np.random.Generator, s_max: float, s_min: float = 1.0) -> float:
  """A scale uniform on ``(s_min, s_max]`` (``s_max`` itself when ``s_min == s_max``)."""
  return float(s_max - (s_max - s_min) * rng.random())


def random_dihedral(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Horizontal flip, vertical flip, then transpose of ``(H, W, C)``, each with probability 0.5."""
  hflip, vflip, transpose = rng.random(3) < 0.5
  if hflip:
    image = image[:, ::-1]
  if vflip:
    image = image[::-1]
  if transpose:
    image = image.transpose(1, 0, 2)
  return np.ascontiguousarray(image)


def operator_example(image: np.ndarray, rng: np.random.Generator, patch_size: int, s_max: float,
                     augment: bool) -> dict[str, np.ndarray]:
  """One stage-1 sample (SRNO recipe) from an HR image ``(H, W, 3)``.

  A scale ``s`` uniform on ``(1, min(s_max, min(H, W) / p)]`` (capped so that the crop fits the
  image), a random ``c = round(p*s)`` square HR crop (at least ``p + 1`` so that the scale stays
  above 1; flipped/transposed when ``augment``), its ``(p, p)`` bicubic downsampling as LR and
  ``p*p`` of its pixels drawn without replacement as the query points. Returns ``lr``
  ``(p, p, 3)``, ``coord`` ``(p, p, 2)`` (pixel centres of the query points in the crop, as
  ``make_coord((c, c))``), ``cell`` ``(2,)`` = ``make_cell((c, c))``, ``gt`` ``(p, p, 3)`` (the
  crop at the query points) and ``scale`` = ``c / p``, all float32.
  """
  p = patch_size
  h, w = image.shape[:2]
  if min(h, w) < p:
    raise ValueError(f"an image of {h}x{w} pixels is smaller than the patch size {p}")
  s = sample_scale(rng, min(s_max, min(h, w) / p))
  c = min(max(int(round(p * s)), p + 1), h, w)
  y0 = int(rng.integers(0, h - c + 1))
  x0 = int(rng.integers(0, w - c + 1))
  crop = image[y0:y0 + c, x0:x0 + c]
  crop = random_dihedral(crop, rng) if augment else np.ascontiguousarray(crop)
  lr = np.clip(downsample(crop, (p, p)), 0.0, 1.0)
  query = rng.choice(c * c, size=p * p, replace=False)
  return {
      "lr": lr,
      "coord": make_coord((c, c)).reshape(-1, 2)[query].reshape(p, p, 2),
      "cell": make_cell((c, c)),
      "gt": crop.reshape(-1, crop.shape[-1])[query].reshape(p, p, crop.shape[-1]),
      "scale": np.float32(c / p),
  }


def diffusion_crop(image: np.ndarray, rng: np.random.Generator, crop_size: int,
                   augment: bool) -> np.ndarray:
  """A random ``(C, C, 3)`` HR crop; flipped/transposed when ``augment``.

  An image with a side below ``C`` (44 UC Merced images are a few pixels short of 256) is first
  resized with bicubic, keeping its aspect, so that its short side is ``C``.
  """
  h, w = image.shape[:2]
  if min(h, w) < crop_size:
    factor = crop_size / min(h, w)
    size = (max(int(round(h * factor)), crop_size), max(int(round(w * factor)), crop_size))
    image = np.clip(downsample(image, size), 0.0, 1.0)
    h, w = size
  y0 = int(rng.integers(0, h - crop_size + 1))
  x0 = int(rng.integers(0, w - crop_size + 1))
  crop = image[y0:y0 + crop_size, x0:x0 + crop_size]
  return random_dihedral(crop, rng) if augment else np.ascontiguousarray(crop)


def _bucket_scale(k: int, s_max: float, buckets: int) -> float:
  return 1.0 + (s_max - 1.0) * k / buckets


def lr_sides(crop_size: int, s_max: float, buckets: int) -> tuple[int, ...]:
  """Every LR side stage 2 can produce, ascending (each is one LR shape, one jit compilation).

  ``buckets > 0``: the sides ``round(C / s_k)`` of the scales ``s_k = 1 + (s_max-1)*k/buckets``,
  ``k = 1..buckets``; ``buckets = 0``: every integer from ``round(C / s_max)`` to ``C - 1``.
  """
  if buckets == 0:
    return tuple(range(max(int(round(crop_size / s_max)), 1), crop_size))
  sides = {min(max(int(round(crop_size / _bucket_scale(k, s_max, buckets))), 1), crop_size - 1)
           for k in range(1, buckets + 1)}
  return tuple(sorted(sides))


def draw_lr_side(rng: np.random.Generator, crop_size: int, s_max: float, buckets: int) -> int:
  """The LR side of one stage-2 batch: ``s`` uniform on ``(1, s_max]``, quantised (``lr_sides``).

  With buckets, ``s`` goes to the bucket ``k = ceil((s-1)/(s_max-1) * buckets)`` (so every bucket
  is equally likely); without, the side is ``round(C / s)`` capped at ``C - 1``.
  """
  s = sample_scale(rng, s_max)
  if buckets == 0:
    return min(max(int(round(crop_size / s)), 1), crop_size - 1)
  k = min(max(math.ceil((s - 1.0) / (s_max - 1.0) * buckets), 1), buckets)
  side = int(round(crop_size / _bucket_scale(k, s_max, buckets)))
  return min(max(side, 1), crop_size - 1)


def diffusion_batch(hr: np.ndarray, rng: np.random.Generator, s_max: float,
                    buckets: int) -> dict[str, np.ndarray]:
  """A stage-2 batch from HR crops ``(B, C, C, 3)``: one LR size for the whole batch.

  Returns ``hr`` ``(B, C, C, 3)``, ``lr`` ``(B, h, h, 3)`` with ``h = draw_lr_side(...)`` and
  ``scale`` ``(B,)`` = ``C / h``, float32, images in [0, 1].
  """
  crop_size = hr.shape[1]
  side = draw_lr_side(rng, crop_size, s_max, buckets)
  return {
      "hr": hr,
      "lr": np.clip(downsample(hr, (side, side)), 0.0, 1.0),
      "scale": np.full((hr.shape[0],), crop_size / side, np.float32),
  }
