"""nodata: the fill that keeps valid pixels and stays within their values, and the output mask as
the nearest upsampling of the input mask."""

import numpy as np

from neurop_jax.io import nodata


def test_fill_keeps_valid_pixels_and_does_not_bleed():
  rng = np.random.default_rng(0)
  values = rng.uniform(0.2, 0.4, (37, 29, 3)).astype(np.float32)
  valid = np.ones((37, 29), bool)
  valid[5:20, 3:25] = False
  valid[30:, :] = False
  values[~valid] = 1000.0  # a nodata value far outside the data
  filled = nodata.fill(values, valid)
  np.testing.assert_array_equal(filled[valid], values[valid])
  assert filled.min() >= 0.2 and filled.max() <= 0.4
  assert nodata.fill(values, np.zeros_like(valid)).max() == 0
  np.testing.assert_array_equal(nodata.fill(values, np.ones_like(valid)), values)


def test_output_mask_is_the_nearest_upsampling():
  valid = np.random.default_rng(1).uniform(size=(13, 17)) > 0.3
  out_hw = (40, 37)  # non-integer scales on both axes
  mask = nodata.upsample_mask(valid, (0, 0), out_hw, out_hw)
  rows = np.floor((np.arange(40) + 0.5) * 13 / 40).astype(int)
  cols = np.floor((np.arange(37) + 0.5) * 17 / 37).astype(int)
  np.testing.assert_array_equal(mask, valid[rows][:, cols])
  np.testing.assert_array_equal(nodata.upsample_mask(valid, (7, 9), (10, 11), out_hw),
                                mask[7:17, 9:20])


def test_fill_of_integers_rounds_within_the_valid_values():
  values = np.full((9, 11, 2), 0, np.uint16)
  values[:, :5] = 4000
  values[:, 7:] = 6001
  valid = np.ones((9, 11), bool)
  valid[:, 5:7] = False
  filled = nodata.fill(values, valid)
  assert filled.dtype == np.uint16
  np.testing.assert_array_equal(filled[valid], values[valid])
  assert 4000 <= filled[~valid].min() and filled[~valid].max() <= 6001
