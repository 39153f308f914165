"""The degradation: antialiased bicubic resizing identical to PIL's ``Image.BICUBIC``, and LR sizes.

``downsample`` builds PIL's resampling weights in float64 (``Resample.c``: Keys cubic with a = -0.5,
support 2 stretched by the scale factor when shrinking, taps normalised to sum 1) and applies them
horizontally then vertically, as PIL does. On NumPy input it sums the few nonzero taps of each
output pixel in float64 and rounds to float32 after each pass, which is PIL's float path: the
result equals PIL's mode 'F' resize bit for bit. It avoids BLAS, whose own threads slow the grain
reader threads down threefold on small images. On JAX input (inside jit too) it is two float32
matmuls with dense ``(out, in)`` weights at highest precision, within about 3e-7 of PIL.
``jax.image.resize(..., 'bicubic', antialias=True)`` agrees with PIL to 1e-6 at large factors but
computes its sample positions in float32 and drifts to 2e-5 for near-identity sizes (256 -> 255),
hence the explicit weights here.

Sizes: an HR side ``H`` at scale ``s`` has the LR side ``round(H / s)``. For evaluation at a fixed
scale the HR image is first cropped (top-left) to ``round(h * s)`` so that HR/LR is ``s`` up to
rounding; when ``round(h * s)`` exceeds ``H`` the LR side is reduced by one first.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def _bicubic(x: np.ndarray) -> np.ndarray:
  """Keys' cubic convolution kernel with a = -0.5 (PIL's ``bicubic_filter``), float64."""
  a = -0.5
  x = np.abs(x)
  near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
  far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
  return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


@functools.lru_cache(maxsize=512)
def resize_weights(in_size: int, out_size: int) -> np.ndarray:
  """PIL's BICUBIC weights from ``in_size`` to ``out_size`` pixels: float64 ``(out, in)``.

  Row ``i`` holds the weights of output pixel ``i`` (they sum to 1). Read-only (cached).
  """
  if in_size < 1 or out_size < 1:
    raise ValueError(f"sizes must be positive, got {in_size} -> {out_size}")
  scale = in_size / out_size
  filter_scale = max(scale, 1.0)
  support = 2.0 * filter_scale
  weights = np.zeros((out_size, in_size), np.float64)
  for i in range(out_size):
    centre = (i + 0.5) * scale
    lo = max(int(centre - support + 0.5), 0)
    hi = min(int(centre + support + 0.5), in_size)
    taps = _bicubic((np.arange(lo, hi) - centre + 0.5) / filter_scale)
    total = taps.sum()
    weights[i, lo:hi] = taps / total if total != 0.0 else taps
  weights.flags.writeable = False
  return weights


@functools.lru_cache(maxsize=512)
def resize_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
  """``resize_weights`` as K taps per output pixel: input indices int ``(out, K)``, weights float64.

  Taps past the kernel's reach have weight 0 (their index is valid), so sums over the K taps equal
  the dense product.
  """
  weights = resize_weights(in_size, out_size)
  nonzero = weights != 0
  first = nonzero.argmax(axis=1)
  last = in_size - 1 - nonzero[:, ::-1].argmax(axis=1)
  k = int((last - first).max()) + 1
  first = np.minimum(first, in_size - k)
  index = first[:, None] + np.arange(k)
  taps = np.take_along_axis(weights, index, axis=1)
  index.flags.writeable = False
  taps.flags.writeable = False
  return index, taps


def downsample(image, out_hw: tuple[int, int]):
  """Resizes ``(..., H, W, C)`` images to ``(..., h, w, C)`` exactly as PIL's ``Image.BICUBIC``.

  Antialiased when shrinking (the kernel widens by the factor); any ``out_hw`` works, enlarging is
  plain bicubic as in PIL. NumPy in gives float32 NumPy out (float64 arithmetic, PIL's rounding);
  a JAX array or tracer gives a float32 JAX array (usable under jit, ``out_hw`` static). Values are
  not clipped: bicubic overshoot can leave [0, 1] slightly, as with PIL.
  """
  h, w = int(out_hw[0]), int(out_hw[1])
  in_h, in_w = image.shape[-3], image.shape[-2]
  if isinstance(image, np.ndarray):
    x = image.astype(np.float32)
    if w != in_w:
      index, weight = resize_taps(in_w, w)
      x = np.einsum("...wkc,wk->...wc", x.astype(np.float64)[..., index, :], weight)
      x = x.astype(np.float32)
    if h != in_h:
      index, weight = resize_taps(in_h, h)
      x = np.einsum("...hkwc,hk->...hwc", x.astype(np.float64)[..., index, :, :], weight)
      x = x.astype(np.float32)
    return x
  x = jnp.asarray(image, jnp.float32)
  highest = jax.lax.Precision.HIGHEST
  if w != in_w:
    x = jnp.matmul(jnp.asarray(resize_weights(in_w, w), jnp.float32), x, precision=highest)
  if h != in_h:
    x = jnp.einsum("oh,...hwc->...owc", jnp.asarray(resize_weights(in_h, h), jnp.float32), x,
                   precision=highest)
  return x


def lr_size(hr_hw: tuple[int, int], scale: float) -> tuple[int, int]:
  """The LR size of an HR image of ``hr_hw`` at ``scale``: ``(round(H/s), round(W/s))``, >= 1."""
  return tuple(max(int(round(n / scale)), 1) for n in hr_hw)


def eval_sizes(hr_hw: tuple[int, int], scale: float) -> tuple[tuple[int, int], tuple[int, int]]:
  """The evaluation rule: ``(HR crop size, LR size)`` for a whole image at a fixed ``scale``.

  LR side ``h = round(H / s)`` (minus one if ``round(h * s) > H``); HR crop side ``round(h * s)``.
  """
  crop, lr = [], []
  for n, m in zip(hr_hw, lr_size(hr_hw, scale)):
    if int(round(m * scale)) > n:
      m -= 1
    if m < 1:
      raise ValueError(f"an HR side of {n} pixels is too small for scale {scale}")
    crop.append(int(round(m * scale)))
    lr.append(m)
  return tuple(crop), tuple(lr)


def eval_pair(hr: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
  """``(HR, LR)`` for evaluation: HR ``(H, W, 3)`` cropped top-left (``eval_sizes``), degraded."""
  (ch, cw), lr_hw = eval_sizes(hr.shape[:2], scale)
  crop = np.ascontiguousarray(hr[:ch, :cw])
  return crop, downsample(crop, lr_hw)
