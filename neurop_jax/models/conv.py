"""The models' convolutions: flax's ``nn.Conv`` with gradients that XLA:CPU computes quickly.

``Conv`` is ``nn.Conv`` (same parameters ``kernel`` ``(kh, kw, C_in, C_out)`` and ``bias``, same
initialisers, same forward value) whose convolution is ``conv2d``, a ``jax.custom_vjp`` that picks
its lowering by platform with ``jax.lax.platform_dependent``:

- elsewhere (GPU, TPU): ``lax.conv_general_dilated`` and the gradients JAX derives for it, so the
  accelerator programs are the ones plain ``nn.Conv`` gives.
- on CPU: the kernel gradient of a k x k convolution over at least ``MATMUL_MIN_PIXELS`` output
  pixels per image is one matrix product instead of XLA's convolution with an ``H x W`` window.
  XLA:CPU (jax 0.10, YNNPACK) runs that window convolution on one thread at 12-45 GFLOP/s against
  95 for the forward convolution at these sizes (the 128 -> 128 channel 3x3 convolution of the
  UNet at 256 x 256 took 2.3 s for a 0.4 s forward; see experiments/profile_cpu.md). With stride
  1 the product is ``X^T D`` where ``X`` stacks the kw column shifts of the padded input and ``D``
  the kh row shifts of the output gradient, both ``(B * H_pad * W_out, k * C)``: block (j, i) of
  the ``(kw * C_in, kh * C_out)`` result is the kernel gradient at tap (i, j). Strided
  convolutions use the kh * kw input patches (im2col). Below that size the window convolution is
  as fast as the product and is kept, written in the NHWC/HWIO form XLA runs it in (the input's
  channels as the batch, its batch as the channels), which XLA does not reach by itself inside
  a loop body (``lax.scan``), where JAX's form ran 100 times slower.
  A 1x1 convolution with stride 1 and no padding is a matrix product in both directions.
  The input gradient is XLA's convolution (as fast as the forward); with stride 1 it is written as
  the forward convolution of the output gradient with the flipped, transposed kernel, which XLA
  runs in its fast NHWC/HWIO form also inside a loop body (``lax.scan``), where it does not
  rewrite the transposed-kernel form JAX derives (and runs that 10 times slower).

Arrays are NHWC (``x`` ``(B, H, W, C_in)``, any values) with HWIO kernels; other layouts, dilations
and grouped convolutions go to ``lax.conv_general_dilated`` unchanged.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Padding = tuple[tuple[int, int], tuple[int, int]]
# Output pixels per image from which the kernel gradient is a matrix product (below: XLA's window
# convolution in its NHWC form, as fast there; measured in experiments/profile_cpu.md).
MATMUL_MIN_PIXELS = 128 * 128
_NHWC = lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1),
                                 out_spec=(0, 3, 1, 2))


def _lax_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
              padding: Padding) -> jax.Array:
  return lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=_NHWC)


def _is_pointwise(kernel: jax.Array, strides: tuple[int, int], padding: Padding) -> bool:
  return kernel.shape[:2] == (1, 1) and strides == (1, 1) and padding == ((0, 0), (0, 0))


def _matmul(a: jax.Array, b: jax.Array, contract: tuple[int, int]) -> jax.Array:
  """``a`` and ``b`` contracted over one axis each, accumulated in float32."""
  return lax.dot_general(a, b, (((contract[0],), (contract[1],)), ((), ())),
                         preferred_element_type=jnp.float32)


def _cpu_forward(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                 padding: Padding) -> jax.Array:
  if _is_pointwise(kernel, strides, padding):
    return _matmul(x, kernel[0, 0], (3, 0)).astype(x.dtype)
  return _lax_conv(x, kernel, strides, padding)


def _kernel_grad(x: jax.Array, dy: jax.Array, window: tuple[int, int],
                 strides: tuple[int, int], padding: Padding) -> jax.Array:
  """d loss / d kernel ``(kh, kw, C_in, C_out)`` of a convolution of ``x`` with output grad ``dy``."""
  (kh, kw), (sh, sw) = window, strides
  _, h_out, w_out, c_out = dy.shape
  c_in = x.shape[-1]
  if strides == (1, 1) and h_out * w_out < MATMUL_MIN_PIXELS:
    grad = lax.conv_general_dilated(x.transpose(3, 1, 2, 0), dy.transpose(1, 2, 0, 3), (1, 1),
                                    padding, dimension_numbers=_NHWC)
    return grad.transpose(1, 2, 0, 3)
  xp = jnp.pad(x, ((0, 0), *padding, (0, 0)))
  h_pad = xp.shape[1]
  if strides == (1, 1):
    cols = jnp.stack([xp[:, :, j:j + w_out] for j in range(kw)], axis=-2)
    rows = jnp.stack([jnp.pad(dy, ((0, 0), (i, h_pad - h_out - i), (0, 0), (0, 0)))
                      for i in range(kh)], axis=-2)
    grad = _matmul(cols.reshape(-1, kw * c_in), rows.reshape(-1, kh * c_out), (0, 0))
    return grad.reshape(kw, c_in, kh, c_out).transpose(2, 0, 1, 3)
  patches = jnp.stack([xp[:, i:i + sh * (h_out - 1) + 1:sh, j:j + sw * (w_out - 1) + 1:sw]
                       for i in range(kh) for j in range(kw)], axis=-2)
  grad = _matmul(patches.reshape(-1, kh * kw * c_in), dy.reshape(-1, c_out), (0, 0))
  return grad.reshape(kh, kw, c_in, c_out)


def _cpu_grads(x: jax.Array, kernel: jax.Array, dy: jax.Array, strides: tuple[int, int],
               padding: Padding) -> tuple[jax.Array, jax.Array]:
  if _is_pointwise(kernel, strides, padding):
    dx = _matmul(dy, kernel[0, 0], (3, 1)).astype(x.dtype)
    dw = _matmul(x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1]), (0, 0))
    return dx, dw.reshape(kernel.shape).astype(kernel.dtype)
  dw = _kernel_grad(x, dy, kernel.shape[:2], strides, padding).astype(kernel.dtype)
  window = kernel.shape[:2]
  if strides == (1, 1) and all(0 <= p <= k - 1 for k, pair in zip(window, padding) for p in pair):
    flipped = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)
    return _lax_conv(dy, flipped, strides, tuple((k - 1 - lo, k - 1 - hi)
                                                 for k, (lo, hi) in zip(window, padding))), dw
  _, input_grad = jax.vjp(lambda x: _lax_conv(x, kernel, strides, padding), x)
  return input_grad(dy)[0], dw


def _lax_grads(x: jax.Array, kernel: jax.Array, dy: jax.Array, strides: tuple[int, int],
               padding: Padding) -> tuple[jax.Array, jax.Array]:
  _, grads = jax.vjp(functools.partial(_lax_conv, strides=strides, padding=padding), x, kernel)
  return grads(dy)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv2d(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
           padding: Padding) -> jax.Array:
  """``x`` ``(B, H, W, C_in)`` convolved with ``kernel`` ``(kh, kw, C_in, C_out)``: ``(B, H', W',
  C_out)``, as ``lax.conv_general_dilated`` with NHWC/HWIO; explicit ``padding`` pairs."""
  return lax.platform_dependent(x, kernel,
                                cpu=functools.partial(_cpu_forward, strides=strides,
                                                      padding=padding),
                                default=functools.partial(_lax_conv, strides=strides,
                                                          padding=padding))


def _conv2d_fwd(x, kernel, strides, padding):
  return conv2d(x, kernel, strides, padding), (x, kernel)


def _conv2d_bwd(strides, padding, residuals, dy):
  x, kernel = residuals
  return lax.platform_dependent(x, kernel, dy,
                                cpu=functools.partial(_cpu_grads, strides=strides,
                                                      padding=padding),
                                default=functools.partial(_lax_grads, strides=strides,
                                                          padding=padding))


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


class ConvGeneralDilated:
  """``lax.conv_general_dilated``'s signature, routed to ``conv2d`` for the cases it covers
  (NHWC/HWIO, no dilation, no feature groups, default precision); flax's
  ``nn.Conv(conv_general_dilated_cls=...)`` hook."""

  def __call__(self, lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
               padding: str | Sequence[tuple[int, int]], lhs_dilation: Sequence[int] | None = None,
               rhs_dilation: Sequence[int] | None = None, dimension_numbers: Any = None,
               feature_group_count: int = 1, precision: Any = None) -> jax.Array:
    plain = (lhs.ndim == 4 and feature_group_count == 1 and precision is None
             and all(d == 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
             and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == _NHWC)
    if not plain:
      return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                      rhs_dilation, dimension_numbers, feature_group_count,
                                      precision=precision)
    if isinstance(padding, str):
      padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
    pads = tuple((int(lo), int(hi)) for lo, hi in padding)
    return conv2d(lhs, rhs, tuple(int(s) for s in window_strides), pads)


Conv = functools.partial(nn.Conv, conv_general_dilated_cls=ConvGeneralDilated)
Conv.__doc__ = "``nn.Conv`` computing with ``conv2d`` (same parameters, value and gradients)."
