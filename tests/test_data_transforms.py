"""Tests of neurop_jax.data.transforms: scale law, crop/query alignment, LR shape buckets."""

import collections

import numpy as np
import pytest
from scipy import stats

from neurop_jax.models.coords import make_cell
from neurop_jax.data.degrade import downsample
from neurop_jax.data.transforms import (diffusion_batch, diffusion_crop, draw_lr_side,
                                        lr_sides, operator_example, random_dihedral, sample_scale)


def _position_image(h: int, w: int) -> np.ndarray:
  """Channel 0 = row / h, channel 1 = col / w, channel 2 = noise: pixels say where they are."""
  rows, cols = np.meshgrid(np.arange(h) / h, np.arange(w) / w, indexing="ij")
  noise = np.random.default_rng(0).random((h, w))
  return np.stack([rows, cols, noise], axis=-1).astype(np.float32)


def test_scale_is_uniform_on_one_to_s_max():
  rng = np.random.default_rng(0)
  scales = np.array([sample_scale(rng, 8.0) for _ in range(20000)])
  assert scales.min() > 1.0 and scales.max() <= 8.0
  assert stats.kstest(scales, stats.uniform(loc=1.0, scale=7.0).cdf).pvalue > 0.01
  assert stats.kstest(scales, stats.uniform(loc=1.0, scale=6.0).cdf).pvalue < 1e-6


def test_random_dihedral_gives_all_eight_symmetries_evenly():
  image = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
  rng = np.random.default_rng(0)
  counts = collections.Counter(random_dihedral(image, rng).tobytes() for _ in range(4000))
  assert len(counts) == 8
  assert stats.chisquare(list(counts.values())).pvalue > 0.001


def test_operator_example_queries_are_the_crop_at_their_coordinates():
  p, h, w = 8, 60, 70
  image = _position_image(h, w)
  rng = np.random.default_rng(1)
  for _ in range(20):
    ex = operator_example(image, rng, patch_size=p, s_max=4.0, augment=False)
    assert ex["lr"].shape == (p, p, 3) and ex["gt"].shape == (p, p, 3)
    assert ex["coord"].shape == (p, p, 2) and ex["cell"].shape == (2,)
    c = int(round(float(ex["scale"]) * p))
    assert 1.0 < ex["scale"] <= 4.0 and ex["scale"] == np.float32(c / p)
    np.testing.assert_array_equal(ex["cell"], make_cell((c, c)))
    pixel = np.rint((ex["coord"] + 1) * c / 2 - 0.5).astype(int).reshape(-1, 2)
    assert len({tuple(q) for q in pixel}) == p * p
    y0 = ex["gt"][..., 0].reshape(-1) * h - pixel[:, 0]
    x0 = ex["gt"][..., 1].reshape(-1) * w - pixel[:, 1]
    np.testing.assert_allclose(y0, np.round(y0[0]), atol=1e-3)
    np.testing.assert_allclose(x0, np.round(x0[0]), atol=1e-3)
    top, left = int(round(y0[0])), int(round(x0[0]))
    crop = image[top:top + c, left:left + c]
    np.testing.assert_array_equal(ex["lr"], np.clip(downsample(crop, (p, p)), 0, 1))


def test_operator_scale_is_capped_so_that_the_crop_fits():
  image = _position_image(20, 30)
  rng = np.random.default_rng(2)
  scales = [float(operator_example(image, rng, 8, 8.0, True)["scale"]) for _ in range(200)]
  assert max(scales) <= 20 / 8 and max(scales) > 2.2
  with pytest.raises(ValueError, match="smaller than the patch"):
    operator_example(image[:7], rng, 8, 8.0, True)


def test_diffusion_crop_is_a_window_or_a_resize_of_small_images():
  image = _position_image(40, 45)
  crop = diffusion_crop(image, np.random.default_rng(3), crop_size=32, augment=False)
  top, left = int(round(crop[0, 0, 0] * 40)), int(round(crop[0, 0, 1] * 45))
  np.testing.assert_array_equal(crop, image[top:top + 32, left:left + 32])
  short = diffusion_crop(image[:30], np.random.default_rng(3), crop_size=32, augment=True)
  assert short.shape == (32, 32, 3) and short.min() >= 0 and short.max() <= 1


def test_lr_sides_counts():
  assert lr_sides(256, 8.0, 14) == (32, 34, 37, 39, 43, 47, 51, 57, 64, 73, 85, 102, 128, 171)
  assert lr_sides(256, 8.0, 0) == tuple(range(32, 256))
  assert len(lr_sides(32, 8.0, 0)) == 28


@pytest.mark.parametrize("buckets", [0, 14])
def test_drawn_lr_sides_stay_in_the_finite_set(buckets):
  rng = np.random.default_rng(4)
  sides = [draw_lr_side(rng, 256, 8.0, buckets) for _ in range(3000)]
  assert set(sides) <= set(lr_sides(256, 8.0, buckets))
  if buckets:
    counts = collections.Counter(sides)
    assert len(counts) == 14 and stats.chisquare(list(counts.values())).pvalue > 0.001


def test_diffusion_batch_has_one_lr_size_and_its_scale():
  hr = np.random.default_rng(5).random((3, 32, 32, 3), dtype=np.float32)
  batch = diffusion_batch(hr, np.random.default_rng(6), s_max=4.0, buckets=6)
  side = batch["lr"].shape[1]
  assert batch["lr"].shape == (3, side, side, 3) and side in lr_sides(32, 4.0, 6)
  np.testing.assert_array_equal(batch["scale"], np.full(3, 32 / side, np.float32))
  np.testing.assert_array_equal(batch["lr"], np.clip(downsample(hr, (side, side)), 0, 1))
