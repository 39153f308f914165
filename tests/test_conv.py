"""``models.conv``: the value and both gradients of ``conv2d`` and ``upsample_conv2d`` equal plain
``lax.conv_general_dilated``'s, on both sides of their ``lax.platform_dependent``.

The public functions run the branch of the host's platform; the CPU branch (``_cpu_forward`` and
``_cpu_grads``; ``_subpixel_conv``) and the default one (``_lax_conv`` and ``_lax_grads``;
``_upsampled_lax_conv``) are also called directly, so that both are checked on any host. The shapes
are those of the models (3x3 with padding 1 at stride 1 and 2, the UNet's 1x1 residual
convolutions) plus odd sizes and unpadded windows, on both sides of ``MATMUL_MIN_PIXELS`` and of
``REWRITE_MIN_MACS``. Arrays are NHWC with HWIO kernels, standard normal values.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from neurop_jax.models import conv
from neurop_jax.models.conv import (REWRITE_MIN_MACS, Conv, UpsampleConv, conv2d,
                                    upsample_conv2d)

CASES = [  # x shape, kernel shape, strides, padding, whether CPU convolves the batch side by side
    ((2, 9, 7, 5), (3, 3, 5, 4), (1, 1), ((1, 1), (1, 1)), False),
    ((2, 9, 7, 5), (3, 3, 5, 4), (2, 2), ((1, 1), (1, 1)), False),
    ((2, 8, 8, 6), (3, 3, 6, 6), (2, 2), ((1, 1), (1, 1)), False),
    ((2, 8, 6, 6), (1, 1, 6, 3), (1, 1), ((0, 0), (0, 0)), False),
    ((1, 5, 6, 3), (3, 3, 3, 2), (1, 1), ((0, 0), (0, 0)), False),
    ((3, 6, 5, 4), (3, 1, 4, 2), (1, 1), ((1, 1), (0, 0)), False),
    ((1, 128, 130, 3), (3, 3, 3, 2), (1, 1), ((1, 1), (1, 1)), False),  # matrix-product gradient
    ((2, 40, 36, 64), (3, 3, 64, 64), (1, 1), ((1, 1), (1, 1)), True),  # above REWRITE_MIN_MACS
]
UPSAMPLE_CASES = [  # x shape, output channels, whether above REWRITE_MIN_MACS
    ((2, 5, 7, 3), 4, False),
    ((1, 128, 130, 2), 3, False),  # the sub-pixel convolution's matrix-product kernel gradient
    ((2, 20, 18, 64), 64, True),
]


def _normal(seed, shape, dtype=jnp.float32):
  """Standard normal values of ``shape`` from NumPy: eager ``jax.random`` compiles for each shape."""
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape, np.float32), dtype)


def _reference(x, kernel, strides, padding):
  return lax.conv_general_dilated(x, kernel, strides, padding,
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _upsampled_reference(x, kernel):
  """``x`` ``(B, H, W, C)`` repeated to ``(B, 2H, 2W, C)``, convolved 'same' with a 3x3 kernel."""
  return _reference(jnp.repeat(jnp.repeat(x, 2, 1), 2, 2), kernel, (1, 1), ((1, 1), (1, 1)))


def _by_vjp(f):
  """``(x, kernel, cotangent) -> (value, input gradient, kernel gradient)`` of ``f(x, kernel)``."""
  def value_and_grads(x, kernel, cotangent):
    y, vjp = jax.vjp(f, x, kernel)
    return (y, *vjp(cotangent))
  return value_and_grads


def _by_branch(forward, grads, strides, padding):
  """``_by_vjp``'s form of one ``conv2d`` branch: its forward and its gradient functions."""
  return lambda x, kernel, cotangent: (forward(x, kernel, strides, padding),
                                       *grads(x, kernel, cotangent, strides, padding))


def _assert_equal_reference(reference, implementations, x, kernel):
  """Each of ``implementations`` (name -> ``_by_vjp`` form) gives the value and gradients of
  ``reference(x, kernel)`` for a standard normal output cotangent; one program computes them all."""
  cotangent = _normal(2, jax.eval_shape(reference, x, kernel).shape)
  run = lambda *args: (_by_vjp(reference)(*args),
                       {name: f(*args) for name, f in implementations.items()})
  want, got = jax.jit(run)(x, kernel, cotangent)
  for name, results in got.items():
    for what, result, expected in zip(("value", "input gradient", "kernel gradient"), results, want):
      np.testing.assert_allclose(result, expected, rtol=1e-5,
                                 atol=1e-5 * float(np.abs(expected).max()),
                                 err_msg=f"{name}: {what}")


@pytest.mark.parametrize("x_shape,k_shape,strides,padding,wide", CASES)
def test_value_and_gradients_equal_lax(x_shape, k_shape, strides, padding, wide):
  """``conv2d`` and both its branches, called directly, against ``lax.conv_general_dilated``."""
  x = _normal(0, x_shape)
  kernel = _normal(1, k_shape)
  assert bool(conv._side_by_side(x, kernel, strides, padding)) == wide
  _assert_equal_reference(lambda x, k: _reference(x, k, strides, padding), {
      "conv2d": _by_vjp(lambda x, k: conv2d(x, k, strides, padding)),
      "cpu branch": _by_branch(conv._cpu_forward, conv._cpu_grads, strides, padding),
      "default branch": _by_branch(conv._lax_conv, conv._lax_grads, strides, padding),
  }, x, kernel)


def test_module_is_nn_conv_with_the_same_parameters_and_output():
  x = _normal(0, (2, 8, 8, 3))
  ours, theirs = (cls(4, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
                  for cls in (Conv, nn.Conv))
  params = theirs.init(jax.random.key(1), x)
  jax.tree.map(np.testing.assert_array_equal, ours.init(jax.random.key(1), x), params)
  np.testing.assert_allclose(ours.apply(params, x), theirs.apply(params, x), rtol=1e-6, atol=1e-6)


def test_string_padding_and_dilation_fall_back_to_lax():
  x = _normal(0, (1, 7, 7, 2))
  for kwargs in (dict(padding="SAME"), dict(padding="VALID", kernel_dilation=(2, 2))):
    ours, theirs = Conv(3, (3, 3), **kwargs), nn.Conv(3, (3, 3), **kwargs)
    params = theirs.init(jax.random.key(1), x)
    np.testing.assert_allclose(ours.apply(params, x), theirs.apply(params, x), rtol=1e-6,
                               atol=1e-6)


def test_bfloat16_gradients_keep_dtypes():
  x = _normal(0, (2, 8, 8, 4), jnp.bfloat16)
  kernel = _normal(1, (3, 3, 4, 4), jnp.bfloat16)
  grads = jax.grad(lambda x, k: jnp.sum(conv2d(x, k, (1, 1), ((1, 1), (1, 1))).astype(jnp.float32)),
                   (0, 1))(x, kernel)
  assert [g.dtype for g in grads] == [jnp.bfloat16, jnp.bfloat16]


@pytest.mark.parametrize("x_shape,c_out,rewritten", UPSAMPLE_CASES)
def test_upsample_conv_equals_convolving_the_upsampled_input(x_shape, c_out, rewritten):
  """``upsample_conv2d`` and both its branches, called directly (the sub-pixel form and the
  upsampled convolution), against upsampling by nearest neighbour and convolving."""
  x = _normal(0, x_shape)
  kernel = _normal(1, (3, 3, x_shape[-1], c_out))
  assert (conv._macs(x, kernel, upsample=2) >= REWRITE_MIN_MACS) == rewritten
  _assert_equal_reference(_upsampled_reference, {
      "upsample_conv2d": _by_vjp(upsample_conv2d),
      "cpu branch": _by_vjp(conv._subpixel_conv),
      "default branch": _by_vjp(conv._upsampled_lax_conv),
  }, x, kernel)


@pytest.mark.parametrize("x_shape,features,rewritten", [((2, 6, 5, 3), 4, False),
                                                        ((2, 20, 18, 64), 64, True)])
def test_upsample_module_is_nn_conv_of_the_upsampled_input(x_shape, features, rewritten):
  """Small convolutions are upsampled and convolved, large ones take ``upsample_conv2d``."""
  x = _normal(0, x_shape)
  macs = conv._macs(x, jnp.zeros((3, 3, x_shape[-1], features)), upsample=2)
  assert (macs >= REWRITE_MIN_MACS) == rewritten
  ours = UpsampleConv(features, (3, 3), padding=((1, 1), (1, 1)))
  theirs = nn.Conv(features, (3, 3), padding=1)
  big = jnp.repeat(jnp.repeat(x, 2, 1), 2, 2)
  params = theirs.init(jax.random.key(1), big)
  jax.tree.map(np.testing.assert_array_equal, ours.init(jax.random.key(1), x), params)
  np.testing.assert_allclose(ours.apply(params, x), theirs.apply(params, big), rtol=1e-5,
                             atol=1e-5)
  dilated = UpsampleConv(features, (3, 3), padding="SAME", kernel_dilation=(2, 2))
  np.testing.assert_allclose(
      dilated.apply(params, x),
      nn.Conv(features, (3, 3), padding="SAME", kernel_dilation=(2, 2)).apply(params, big),
      rtol=1e-5, atol=1e-5)
