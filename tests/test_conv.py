"""``models.conv``: the value and both gradients of ``conv2d`` equal ``lax.conv_general_dilated``'s.

The shapes are those of the models (3x3 with padding 1 at stride 1 and 2, the UNet's 1x1 residual
convolutions) plus odd sizes and unpadded windows, on both sides of ``MATMUL_MIN_PIXELS``; on CPU
they take the custom-gradient paths.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from neurop_jax.models.conv import Conv, UpsampleConv, conv2d, upsample_conv2d

CASES = [  # x shape, kernel shape, strides, padding
    ((2, 9, 7, 5), (3, 3, 5, 4), (1, 1), ((1, 1), (1, 1))),
    ((2, 9, 7, 5), (3, 3, 5, 4), (2, 2), ((1, 1), (1, 1))),
    ((2, 8, 8, 6), (3, 3, 6, 6), (2, 2), ((1, 1), (1, 1))),
    ((2, 8, 6, 6), (1, 1, 6, 3), (1, 1), ((0, 0), (0, 0))),
    ((1, 5, 6, 3), (3, 3, 3, 2), (1, 1), ((0, 0), (0, 0))),
    ((3, 6, 5, 4), (3, 1, 4, 2), (1, 1), ((1, 1), (0, 0))),
    ((1, 128, 130, 3), (3, 3, 3, 2), (1, 1), ((1, 1), (1, 1))),  # the matrix-product gradient
    ((2, 40, 36, 64), (3, 3, 64, 64), (1, 1), ((1, 1), (1, 1))),  # the batch side by side
]


def _reference(x, kernel, strides, padding):
  return lax.conv_general_dilated(x, kernel, strides, padding,
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("x_shape,k_shape,strides,padding", CASES)
def test_value_and_gradients_equal_lax(x_shape, k_shape, strides, padding):
  x = jax.random.normal(jax.random.key(0), x_shape)
  kernel = jax.random.normal(jax.random.key(1), k_shape)
  y = _reference(x, kernel, strides, padding)
  cotangent = jax.random.normal(jax.random.key(2), y.shape)
  ours = jax.jit(conv2d, static_argnums=(2, 3))
  np.testing.assert_allclose(ours(x, kernel, strides, padding), y, rtol=1e-5, atol=1e-5)
  loss = lambda f: jax.jit(jax.grad(lambda x, k: jnp.sum(f(x, k, strides, padding) * cotangent),
                                    (0, 1)))
  for got, want in zip(loss(conv2d)(x, kernel), loss(_reference)(x, kernel)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))


def test_module_is_nn_conv_with_the_same_parameters_and_output():
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
  ours, theirs = (cls(4, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
                  for cls in (Conv, nn.Conv))
  params = theirs.init(jax.random.key(1), x)
  jax.tree.map(np.testing.assert_array_equal, ours.init(jax.random.key(1), x), params)
  np.testing.assert_allclose(ours.apply(params, x), theirs.apply(params, x), rtol=1e-6, atol=1e-6)


def test_string_padding_and_dilation_fall_back_to_lax():
  x = jax.random.normal(jax.random.key(0), (1, 7, 7, 2))
  for kwargs in (dict(padding="SAME"), dict(padding="VALID", kernel_dilation=(2, 2))):
    ours, theirs = Conv(3, (3, 3), **kwargs), nn.Conv(3, (3, 3), **kwargs)
    params = theirs.init(jax.random.key(1), x)
    np.testing.assert_allclose(ours.apply(params, x), theirs.apply(params, x), rtol=1e-6,
                               atol=1e-6)


def test_bfloat16_gradients_keep_dtypes():
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 4), jnp.bfloat16)
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 4, 4), jnp.bfloat16)
  grads = jax.grad(lambda x, k: jnp.sum(conv2d(x, k, (1, 1), ((1, 1), (1, 1))).astype(jnp.float32)),
                   (0, 1))(x, kernel)
  assert [g.dtype for g in grads] == [jnp.bfloat16, jnp.bfloat16]


@pytest.mark.parametrize("x_shape,c_out", [((2, 5, 7, 3), 4), ((1, 128, 130, 2), 3)])
def test_upsample_conv_equals_convolving_the_upsampled_input(x_shape, c_out):
  """Value and both gradients of ``upsample_conv2d`` (the sub-pixel form on CPU) against
  upsampling by nearest neighbour and convolving; the second shape takes the matrix-product
  kernel gradient."""
  x = jax.random.normal(jax.random.key(0), x_shape)
  kernel = jax.random.normal(jax.random.key(1), (3, 3, x_shape[-1], c_out))
  upsampled = lambda x, k: _reference(jnp.repeat(jnp.repeat(x, 2, 1), 2, 2), k, (1, 1),
                                      ((1, 1), (1, 1)))
  y = upsampled(x, kernel)
  assert y.shape == (x_shape[0], 2 * x_shape[1], 2 * x_shape[2], c_out)
  np.testing.assert_allclose(jax.jit(upsample_conv2d)(x, kernel), y, rtol=1e-5, atol=1e-5)
  cotangent = jax.random.normal(jax.random.key(2), y.shape)
  loss = lambda f: jax.jit(jax.grad(lambda x, k: jnp.sum(f(x, k) * cotangent), (0, 1)))
  for got, want in zip(loss(upsample_conv2d)(x, kernel), loss(upsampled)(x, kernel)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))


@pytest.mark.parametrize("x_shape,features", [((2, 6, 5, 3), 4), ((2, 20, 18, 64), 64)])
def test_upsample_module_is_nn_conv_of_the_upsampled_input(x_shape, features):
  """Small convolutions are upsampled and convolved, large ones take ``upsample_conv2d``."""
  x = jax.random.normal(jax.random.key(0), x_shape)
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
