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
"""

from __future__ import annotations

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
  a, a_pinv = _pinv(big_h, h)
  b, b_pinv = _pinv(big_w, w)

  def project(x: jax.Array) -> jax.Array:
    return x + degrade(lr - degrade(x, a, b), a_pinv, b_pinv)

  return project


def consistency_psnr(output: jax.Array, lr: jax.Array) -> jax.Array:
  """How well ``output`` ``(B, H, W, C)`` in [0, 1] degrades to ``lr`` ``(B, h, w, C)`` in [0, 1]:
  the PSNR (dB, peak 1) of ``D(output)`` against ``lr``, per image ``(B,)``."""
  (h, w), (big_h, big_w) = lr.shape[1:3], output.shape[1:3]
  a, b = (resize_weights(n, m).astype(np.float32) for n, m in ((big_h, h), (big_w, w)))
  mse = jnp.mean((degrade(output, a, b) - lr) ** 2, axis=(1, 2, 3))
  return -10 * jnp.log10(jnp.maximum(mse, 1e-20))
