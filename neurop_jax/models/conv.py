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
  A batch of images narrower than ``WIDE_MIN_WIDTH`` is convolved (forward and both gradients)
  as one wide image, side by side with the padding columns between them: XLA:CPU splits a
  convolution over threads along the width and ran one of 48 columns on one thread.

``UpsampleConv`` is ``nn.Conv`` applied to its input upsampled 2x by nearest neighbour (the UNet's
Upsample), computed by ``upsample_conv2d``. On CPU a 3x3 convolution with padding 1 of a nearest-
upsampled image is computed on the image itself (sub-pixel form): each of the four output pixels
of a 2x2 block sees the low-resolution pixels through a 2x2 kernel whose taps are sums of the 3x3
kernel's (rows ``(k0, k1 + k2)`` for even output rows, ``(k0 + k1, k2)`` for odd ones, the same for
columns), so one 2x2 convolution with ``4 C_out`` outputs over the low-resolution image, its outputs
interleaved, is the whole product: 2.25 times fewer multiply-adds, and a 4 times smaller input and
residual. Elsewhere the image is upsampled and convolved as written.

The side-by-side and sub-pixel rewrites apply from ``REWRITE_MIN_MACS`` multiply-adds per
convolution: smaller ones gain nothing and compile more slowly.

Arrays are NHWC (``x`` ``(B, H, W, C_in)``, any values) with HWIO kernels; other layouts, dilations
and grouped convolutions go to ``lax.conv_general_dilated`` unchanged.

A ``jax.custom_vjp`` has no forward-mode derivative, so ``jax.jvp`` (and ``jax.jacfwd``) cannot go
through ``Conv``. ``conv_layers('plain')`` gives flax's own ``nn.Conv`` and a plain nearest-upsampled
``nn.Conv`` instead (same parameters and values): the models take it from the model config's
``conv = 'plain'``.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Padding = tuple[tuple[int, int], tuple[int, int]]
# Output pixels per image from which the kernel gradient is a matrix product (below: XLA's window
# convolution in its NHWC form, as fast there; measured in experiments/profile_cpu.md).
MATMUL_MIN_PIXELS = 128 * 128
# Image width below which a batch is convolved side by side as one wide image: XLA:CPU (YNNPACK)
# splits a convolution over threads along the width, one thread below about 64 columns.
WIDE_MIN_WIDTH = 128
# Multiply-adds from which a convolution is rewritten side by side or in sub-pixel form: smaller
# ones gain little and the rewritten programs take longer to compile.
REWRITE_MIN_MACS = 2**26
_NHWC = lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1),
                                 out_spec=(0, 3, 1, 2))
_SAME_3X3 = ((1, 1), (1, 1))


def _lax_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
              padding: Padding) -> jax.Array:
  return lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=_NHWC)


def _is_pointwise(kernel: jax.Array, strides: tuple[int, int], padding: Padding) -> bool:
  return kernel.shape[:2] == (1, 1) and strides == (1, 1) and padding == ((0, 0), (0, 0))


def _matmul(a: jax.Array, b: jax.Array, contract: tuple[int, int]) -> jax.Array:
  """``a`` and ``b`` contracted over one axis each, accumulated in float32."""
  return lax.dot_general(a, b, (((contract[0],), (contract[1],)), ((), ())),
                         preferred_element_type=jnp.float32)


def _macs(x: jax.Array, kernel: jax.Array, upsample: int = 1) -> int:
  """Multiply-adds of a stride-1 'same' convolution of ``x`` (upsampled ``upsample`` times)."""
  return math.prod(x.shape[:3]) * upsample**2 * math.prod(kernel.shape)


def _side_by_side(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                  padding: Padding) -> int:
  """The zero columns to put between the images of the batch to convolve them as one wide image
  (0: convolve them as they are): for 'same' stride-1 convolutions of narrow images."""
  (kh, kw), (_, pad_w) = kernel.shape[:2], padding
  same = kw % 2 == 1 and pad_w == ((kw - 1) // 2,) * 2 and kh % 2 == 1
  if (x.shape[0] > 1 and x.shape[2] < WIDE_MIN_WIDTH and strides == (1, 1) and same
      and _macs(x, kernel) >= REWRITE_MIN_MACS):
    return pad_w[0]
  return 0


def _to_wide(x: jax.Array, gap: int) -> jax.Array:
  """``(B, H, W, C)`` -> ``(1, H, B * (W + gap), C)``: the images side by side, ``gap`` zero columns
  after each."""
  b, h, w, c = x.shape
  x = jnp.pad(x, ((0, 0), (0, 0), (0, gap), (0, 0)))
  return x.transpose(1, 0, 2, 3).reshape(1, h, b * (w + gap), c)


def _from_wide(y: jax.Array, batch: int, gap: int) -> jax.Array:
  """The inverse of ``_to_wide`` (the gap columns dropped)."""
  _, h, wide, c = y.shape
  return y.reshape(h, batch, wide // batch, c)[:, :, :wide // batch - gap].transpose(1, 0, 2, 3)


def _cpu_forward(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                 padding: Padding) -> jax.Array:
  if _is_pointwise(kernel, strides, padding):
    return _matmul(x, kernel[0, 0], (3, 0)).astype(x.dtype)
  gap = _side_by_side(x, kernel, strides, padding)
  if gap:
    return _from_wide(_lax_conv(_to_wide(x, gap), kernel, strides, padding), x.shape[0], gap)
  return _lax_conv(x, kernel, strides, padding)


def _kernel_grad(x: jax.Array, dy: jax.Array, window: tuple[int, int],
                 strides: tuple[int, int], padding: Padding) -> jax.Array:
  """d loss / d kernel ``(kh, kw, C_in, C_out)`` of a convolution of ``x`` with output grad ``dy``."""
  (kh, kw), (sh, sw) = window, strides
  _, h_out, w_out, c_out = dy.shape
  c_in = x.shape[-1]
  if strides == (1, 1) and window == (3, 3) and h_out * w_out < MATMUL_MIN_PIXELS:
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
  gap = _side_by_side(x, kernel, strides, padding)
  if gap:
    dx, dw = _cpu_grads(_to_wide(x, gap), kernel, _to_wide(dy, gap), strides, padding)
    return _from_wide(dx, x.shape[0], gap), dw
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


def _nearest_2x(x: jax.Array) -> jax.Array:
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def _upsampled_lax_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  return _lax_conv(_nearest_2x(x), kernel, (1, 1), _SAME_3X3)


def _parity_taps(kernel: jax.Array, axis: int) -> jax.Array:
  """The 3 taps of ``kernel`` along ``axis`` as the 2 taps that even and odd output pixels of a
  nearest-upsampled image see on the low-resolution one, ``(k0, k1 + k2)`` and ``(k0 + k1, k2)``:
  that axis becomes 2 long, and a leading axis of the 2 parities is added."""
  k0, k1, k2 = (jnp.take(kernel, i, axis=axis) for i in range(3))
  return jnp.stack([jnp.stack((k0, k1 + k2), axis), jnp.stack((k0 + k1, k2), axis)])


def _subpixel_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """``_upsampled_lax_conv`` as one 2x2 convolution of ``x`` with ``4 C_out`` outputs, interleaved."""
  b, h, w, _ = x.shape
  c_out = kernel.shape[-1]
  taps = _parity_taps(_parity_taps(kernel, 0), 2)  # (col parity, row parity, 2, 2, C_in, C_out)
  subpixel = taps.transpose(2, 3, 4, 1, 0, 5).reshape(2, 2, -1, 4 * c_out)
  y = conv2d(x, subpixel, (1, 1), _SAME_3X3).reshape(b, h + 1, w + 1, 2, 2, c_out)
  rows = [jnp.stack([y[:, a:a + h, c:c + w, a, c] for c in (0, 1)], axis=3) for a in (0, 1)]
  return jnp.stack(rows, axis=2).reshape(b, 2 * h, 2 * w, c_out)


@jax.custom_vjp
def upsample_conv2d(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """``x`` ``(B, H, W, C_in)`` upsampled to ``(B, 2H, 2W, C_in)`` by nearest neighbour, then convolved
  with the 3x3 ``kernel`` ``(3, 3, C_in, C_out)`` with zero padding 1: ``(B, 2H, 2W, C_out)``."""
  return lax.platform_dependent(x, kernel, cpu=_subpixel_conv, default=_upsampled_lax_conv)


def _upsample_conv2d_fwd(x, kernel):
  return upsample_conv2d(x, kernel), (x, kernel)


def _upsample_conv2d_bwd(residuals, dy):
  vjp = lambda conv: lambda x, kernel, dy: jax.vjp(conv, x, kernel)[1](dy)
  return lax.platform_dependent(*residuals, dy, cpu=vjp(_subpixel_conv),
                                default=vjp(_upsampled_lax_conv))


upsample_conv2d.defvjp(_upsample_conv2d_fwd, _upsample_conv2d_bwd)


def _explicit_padding(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                      padding: str | Sequence[tuple[int, int]]) -> Padding:
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
  return tuple((int(lo), int(hi)) for lo, hi in padding)


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
      return lax.conv_general_dilated(self._input(lhs), rhs, window_strides, padding, lhs_dilation,
                                      rhs_dilation, dimension_numbers, feature_group_count,
                                      precision=precision)
    return self._conv(lhs, rhs, tuple(int(s) for s in window_strides),
                      _explicit_padding(lhs, rhs, window_strides, padding))

  def _input(self, lhs: jax.Array) -> jax.Array:
    return lhs

  def _conv(self, x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
            padding: Padding) -> jax.Array:
    return conv2d(x, kernel, strides, padding)


class UpsampledConvGeneralDilated(ConvGeneralDilated):
  """``ConvGeneralDilated`` of the NHWC ``lhs`` upsampled 2x by nearest neighbour:
  ``upsample_conv2d`` for a 3x3 window with padding 1 and stride 1, else upsampled and convolved."""

  def _input(self, lhs: jax.Array) -> jax.Array:
    return _nearest_2x(lhs)

  def _conv(self, x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
            padding: Padding) -> jax.Array:
    if (kernel.shape[:2] == (3, 3) and strides == (1, 1) and padding == _SAME_3X3
        and _macs(x, kernel, upsample=2) >= REWRITE_MIN_MACS):
      return upsample_conv2d(x, kernel)
    return conv2d(self._input(x), kernel, strides, padding)


Conv = functools.partial(nn.Conv, conv_general_dilated_cls=ConvGeneralDilated)
Conv.__doc__ = "``nn.Conv`` computing with ``conv2d`` (same parameters, value and gradients)."
UpsampleConv = functools.partial(nn.Conv, conv_general_dilated_cls=UpsampledConvGeneralDilated)
UpsampleConv.__doc__ = ("``nn.Conv`` of its input ``(B, H, W, C)`` upsampled to ``(B, 2H, 2W, C)`` by "
                        "nearest neighbour (same parameters as ``nn.Conv``), by ``upsample_conv2d``.")


class _LaxUpsampledConvGeneralDilated:
  """``lax.conv_general_dilated`` of ``lhs`` upsampled 2x by nearest neighbour, as JAX derives it."""

  def __call__(self, lhs: jax.Array, rhs: jax.Array, *args: Any, **kwargs: Any) -> jax.Array:
    return lax.conv_general_dilated(_nearest_2x(lhs), rhs, *args, **kwargs)


CONV_KINDS = ("fast", "plain")


def conv_layers(kind: str = "fast") -> tuple[Callable[..., nn.Conv], Callable[..., nn.Conv]]:
  """The models' ``(Conv, UpsampleConv)``: 'fast', this module's (fast CPU gradients, reverse-mode
  AD only), or 'plain', flax's ``nn.Conv`` and JAX's own derivatives (``jax.jvp`` works)."""
  if kind == "fast":
    return Conv, UpsampleConv
  if kind == "plain":
    return nn.Conv, functools.partial(nn.Conv,
                                      conv_general_dilated_cls=_LaxUpsampledConvGeneralDilated)
  raise ValueError(f"unknown conv {kind!r}: choose one of {CONV_KINDS}")
