"""Consistency with the input: the range-null-space projection onto the images whose degradation is
the LR input (DDNM, Wang et al. 2023), for the project's own degradation.

The degradation is ``data.degrade.downsample``: PIL's antialiased bicubic, separable, so on an
``(H, W)`` image it is ``D x = A x B^T`` with the ``(h, H)`` and ``(w, W)`` weight matrices
``A = resize_weights(H, h)`` and ``B = resize_weights(W, w)``. Its pseudo-inverse is separable too,
``D^+ y = A^+ y (B^+)^T`` (the pseudo-inverse of a Kronecker product is the product of the
pseudo-inverses), and the projection is

  x' = x + D^+ (y - D x)  (= D^+ y + (I - D^+ D) x: the input's content, and x's null-space part).

Both matrices have full row rank when h <= H and w <= W, so D x' = y to float32 rounding: the
projected image degrades exactly to the input. Each projection is four small matmuls per band,
``O(h H W + h w W + h H W + H w W)`` multiply-adds: about 4 x (H W) x (h + w) / 2, under 1% of one
UNet evaluation at 256x256 from 64x64. The bicubic taps sum to one, so the projection is the
same in the [0, 1] and the [-1, 1] scales.

A tile of a large output (``inference.tiled``) is made consistent with the LR pixels whose
bicubic support lies wholly inside it (``window_system``): for those pixels the tile alone decides
the degradation, so the tile-local projection enforces exactly their part of the global
constraint. The LR pixels that straddle a tile's edge are left to the neighbouring tile (with the
default overlap of 32 output pixels every LR pixel is inside some tile up to x8), and the blend of
two tiles' outputs in their overlap satisfies each constraint only approximately.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from neurop_jax.data.degrade import resize_weights

_HIGHEST = jax.lax.Precision.HIGHEST


def _pinv(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
  """The ``(out, in)`` weights of the degradation along one axis and their pseudo-inverse
  ``(in, out)``, float32."""
  weights = resize_weights(in_size, out_size)
  return weights.astype(np.float32), np.linalg.pinv(weights).astype(np.float32)


def degrade(image: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
  """``a x b^T`` per band: ``(B, H, W, C)`` -> ``(B, h, w, C)`` for ``a`` (h, H), ``b`` (w, W)."""
  return jnp.einsum("hH,bHWc,wW->bhwc", a, image, b, precision=_HIGHEST)


def projection(lr: jax.Array, a: jax.Array, a_pinv: jax.Array, b: jax.Array,
               b_pinv: jax.Array) -> Callable[[jax.Array], jax.Array]:
  """``project(x) = x + D^+ (lr - D x)`` for the separable ``D x = a x b^T``: ``lr`` ``(B, h, w,
  C)``, ``a`` ``(h, H)``, ``a_pinv`` ``(H, h)``, ``b`` ``(w, W)``, ``b_pinv`` ``(W, w)``; ``x``
  ``(B, H, W, C)``. Arrays or constants: jittable either way."""
  def project(x: jax.Array) -> jax.Array:
    return x + degrade(lr - degrade(x, a, b), a_pinv, b_pinv)
  return project


@functools.lru_cache(maxsize=256)
def window_system(out_size: int, in_size: int, start: int, length: int,
                  count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The degradation along one axis restricted to the output window ``[start, start + length)``.

  Args:
    out_size, in_size: the output (HR) and input (LR) sizes of the axis.
    start, length: the window, in output pixels.
    count: the rows returned (static per tile shape): at least the LR pixels inside any window
      of ``length`` (``window_count``).

  Returns:
    ``(index, a, a_pinv)``, read-only (cached: the tiles of one row or column share theirs):
    ``index`` int32 ``(count,)`` the LR pixels whose bicubic support is inside the window (then
    repeats of the last, or of the pixel nearest the window when none is), ``a`` float32 ``(count, length)`` their weights on the
    window's pixels (then zero rows, which the projection leaves alone), ``a_pinv`` float32
    ``(length, count)`` its pseudo-inverse.
  """
  weights = resize_weights(out_size, in_size)
  outside = weights[:, :start].any(axis=1) | weights[:, start + length:].any(axis=1)
  inside = np.flatnonzero(~outside)
  if inside.size > count:
    raise ValueError(f"{inside.size} LR pixels lie inside a window of {length}, more than {count}")
  nearest = min(in_size - 1, int(start * in_size / out_size))
  index = np.full(count, inside[-1] if inside.size else nearest, np.int32)
  index[:inside.size] = inside
  a = np.zeros((count, length), np.float64)
  a[:inside.size] = weights[inside, start:start + length]
  arrays = index, a.astype(np.float32), np.linalg.pinv(a).astype(np.float32)
  for array in arrays:
    array.flags.writeable = False
  return arrays


def window_count(out_size: int, in_size: int, length: int) -> int:
  """An upper bound of the LR pixels inside any output window of ``length`` pixels: their centres
  are ``out_size / in_size`` apart."""
  return min(in_size, int(np.ceil(length * in_size / out_size)) + 1)


def input_projection(lr: jax.Array, out_hw: tuple[int, int]) -> Callable[[jax.Array], jax.Array]:
  """The projection onto the images of size ``out_hw`` that degrade to ``lr``.

  Args:
    lr: ``(B, h, w, C)`` the input, in the scale of the images projected ([-1, 1] for the model's
      estimates; h <= H and w <= W).
    out_hw: the output size ``(H, W)`` (static).

  Returns:
    ``project(x)``: ``(B, H, W, C)`` -> ``(B, H, W, C)``, ``x + D^+ (lr - D x)``, linear in x
    (jittable; the weights are constants of the program).
  """
  (h, w), (big_h, big_w) = lr.shape[1:3], out_hw
  if h > big_h or w > big_w:
    raise ValueError(f"consistency needs an output at least the input's size, got {out_hw} for "
                     f"{(h, w)}")
  return projection(lr, *_pinv(big_h, h), *_pinv(big_w, w))


def consistency_psnr(output: jax.Array, lr: jax.Array) -> jax.Array:
  """How well ``output`` ``(B, H, W, C)`` in [0, 1] degrades to ``lr`` ``(B, h, w, C)`` in [0, 1]:
  the PSNR (dB, peak 1) of ``D(output)`` against ``lr``, per image ``(B,)``."""
  (h, w), (big_h, big_w) = lr.shape[1:3], output.shape[1:3]
  a, b = (resize_weights(n, m).astype(np.float32) for n, m in ((big_h, h), (big_w, w)))
  mse = jnp.mean((degrade(output, a, b) - lr) ** 2, axis=(1, 2, 3))
  return -10 * jnp.log10(jnp.maximum(mse, 1e-20))
