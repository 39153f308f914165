"""Tile geometry: tilings cover and partition each axis, LR windows hold every neighbour, blending
weights sum to one, the noise field is one field whatever window reads it."""

import jax
import numpy as np
import pytest

from neurop_jax.inference import tiles as tiling


@pytest.mark.parametrize("size,tile,overlap", [(100, 32, 0), (100, 32, 8), (64, 64, 0), (20, 32, 4),
                                               (97, 40, 39)])
def test_axis_tiles_cover_and_partition(size, tile, overlap):
  tiles = tiling.axis_tiles(size, tile, overlap)
  assert tiles.tile == min(tile, size)
  assert tiles.starts[0] == 0 and tiles.starts[-1] + tiles.tile == size
  assert all(b - a <= tiles.tile - overlap for a, b in zip(tiles.starts, tiles.starts[1:]))
  owned = np.concatenate([np.arange(lo, hi) for lo, hi in tiles.owned])
  np.testing.assert_array_equal(owned, np.arange(size))
  for start, (lo, hi) in zip(tiles.starts, tiles.owned):
    assert start <= lo < hi <= start + tiles.tile


def test_axis_tiles_rejects_bad_overlap():
  with pytest.raises(ValueError, match="overlap"):
    tiling.axis_tiles(100, 16, 16)


@pytest.mark.parametrize("size,tile,overlap", [(100, 32, 8), (300, 64, 16), (40, 32, 31)])
def test_blend_weights_sum_to_one(size, tile, overlap):
  tiles = tiling.axis_tiles(size, tile, overlap)
  total = np.zeros(size)
  for start, w in zip(tiles.starts, tiling.blend_weights(tiles, overlap)):
    assert w.shape == (tiles.tile,) and np.all(w >= 0)
    total[start:start + tiles.tile] += w
  np.testing.assert_allclose(total, 1, atol=1e-6)


@pytest.mark.parametrize("out_size,lr_size,radius", [(101, 37, 6), (500, 100, 34), (64, 60, 2),
                                                     (1000, 125, 0)])
def test_lr_windows_fit_inside_the_image(out_size, lr_size, radius):
  tile = 32
  size = tiling.lr_window_size(tile, out_size, lr_size, radius)
  for start in range(out_size - tile + 1):
    first = tiling.lr_window_start(start, tile, out_size, lr_size, radius)  # asserts coverage
    assert 0 <= first and first + size <= lr_size


def test_position_noise_is_one_field():
  rng = jax.random.key(3)
  whole = np.asarray(tiling.position_noise(rng, np.array([0, 0]), (150, 140)))[0]
  for origin in [(0, 0), (13, 70), (63, 64), (100, 99)]:
    window = np.asarray(tiling.position_noise(rng, np.array(origin), (50, 41)))[0]
    np.testing.assert_array_equal(window, whole[origin[0]:origin[0] + 50,
                                                origin[1]:origin[1] + 41])
  assert abs(whole.mean()) < 0.05 and abs(whole.std() - 1) < 0.05
