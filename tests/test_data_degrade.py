"""Tests of neurop_jax.data.degrade: PIL parity of the bicubic resize and the size rules."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from neurop_jax.data.degrade import (downsample, eval_pair, eval_sizes, lr_size, resize_taps,
                                     resize_weights)

SIZES = [((64, 64), (16, 16)), ((64, 64), (13, 21)), ((50, 37), (17, 9)), ((64, 63), (63, 50)),
         ((20, 30), (40, 50)), ((9, 7), (1, 1)), ((64, 64), (32, 32))]


def _pil_bicubic(image: np.ndarray, out_hw) -> np.ndarray:
  """PIL's mode 'F' BICUBIC resize, channel by channel."""
  channels = [Image.fromarray(image[..., c], mode="F").resize(out_hw[::-1], Image.BICUBIC)
              for c in range(image.shape[-1])]
  return np.stack([np.asarray(c) for c in channels], axis=-1)


@pytest.mark.parametrize("in_hw, out_hw", SIZES)
def test_numpy_downsample_equals_pil(in_hw, out_hw):
  image = np.random.default_rng(0).random((*in_hw, 3), dtype=np.float32)
  result = downsample(image, out_hw)
  assert isinstance(result, np.ndarray) and result.dtype == np.float32
  np.testing.assert_allclose(result, _pil_bicubic(image, out_hw), rtol=0, atol=1e-6)


@pytest.mark.parametrize("in_hw, out_hw", SIZES)
def test_jitted_downsample_equals_pil(in_hw, out_hw):
  image = np.random.default_rng(1).random((*in_hw, 3), dtype=np.float32)
  result = jax.jit(downsample, static_argnums=1)(jnp.asarray(image), out_hw)
  assert isinstance(result, jax.Array)
  np.testing.assert_allclose(np.asarray(result), _pil_bicubic(image, out_hw), rtol=0, atol=1e-5)


def test_batched_downsample_equals_per_image():
  batch = np.random.default_rng(2).random((3, 40, 30, 3), dtype=np.float32)
  result = downsample(batch, (11, 7))
  assert result.shape == (3, 11, 7, 3)
  for i in range(3):
    np.testing.assert_array_equal(result[i], downsample(batch[i], (11, 7)))


def test_constant_image_stays_constant():
  np.testing.assert_allclose(downsample(np.full((33, 47, 3), 0.3, np.float32), (5, 8)), 0.3,
                             atol=1e-7)


def test_weights_sum_to_one_and_taps_match_them():
  for n_in, n_out in [(256, 32), (100, 37), (17, 40), (64, 32)]:
    weights = resize_weights(n_in, n_out)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-12)
    index, taps = resize_taps(n_in, n_out)
    dense = np.zeros_like(weights)
    for row in range(n_out):
      np.add.at(dense[row], index[row], taps[row])
    np.testing.assert_array_equal(dense, weights)


def test_lr_size_rounds():
  assert lr_size((256, 256), 4) == (64, 64)
  assert lr_size((256, 247), 3) == (85, 82)
  assert lr_size((256, 256), 2.5) == (102, 102)
  assert lr_size((3, 3), 8) == (1, 1)


def test_eval_sizes_crop_hr_to_round_lr_times_scale():
  assert eval_sizes((256, 256), 4) == ((256, 256), (64, 64))
  assert eval_sizes((256, 256), 3) == ((255, 255), (85, 85))
  assert eval_sizes((247, 256), 4) == ((244, 256), (61, 64))
  assert eval_sizes((256, 256), 2.5) == ((255, 255), (102, 102))
  with pytest.raises(ValueError):
    eval_sizes((3, 256), 8)


def test_eval_pair_crops_top_left_and_degrades():
  hr = np.random.default_rng(3).random((47, 50, 3), dtype=np.float32)
  crop, lr = eval_pair(hr, 3)
  assert crop.shape == (45, 48, 3) and lr.shape == (15, 16, 3)
  np.testing.assert_array_equal(crop, hr[:45, :48])
  np.testing.assert_array_equal(lr, downsample(hr[:45, :48], (15, 16)))
