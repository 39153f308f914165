"""The neural operator against the original's arrays, and its shape contract."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import load_fixture, max_abs_diff
from neurop_jax.models.coords import make_cell, make_coord
from neurop_jax.models import make_operator, model_config
from neurop_jax.models.operator import query_features, sample_bilinear

CASES = ["", "2", "3"]  # square x4, non-integer 19 -> 60, non-square 13x10 -> 41x31 (56x40 -> 170x125)


def test_encoder_features_match_original(fixture):
  op = make_operator(fixture.cfg)
  feat = op.apply(fixture.operator_params, fixture.image("lr"), method=op.encode)
  assert max_abs_diff(feat, fixture.image("srno_enc_feat")) <= 1e-5


@pytest.mark.parametrize("case", CASES)
def test_prior_matches_original(fixture, case):
  op = make_operator(fixture.cfg)
  lr, coord, cell = fixture.image("lr" + case), fixture.io["coord" + case], fixture.io["cell" + case]
  out = jax.jit(op.apply)(fixture.operator_params, lr, coord, cell)
  assert out.shape == fixture.image("srno_out" + case).shape
  assert max_abs_diff(out, fixture.image("srno_out" + case)) <= 1e-5
  assert max_abs_diff(sample_bilinear(lr, coord), fixture.image("srno_skip" + case)) <= 1e-5


@pytest.mark.parametrize("case", CASES)
def test_coordinates_equal_original(fixture, case):
  coord = fixture.io["coord" + case][0]
  np.testing.assert_array_equal(make_coord(coord.shape[:2]), coord)
  np.testing.assert_array_equal(make_cell(coord.shape[:2]), fixture.io["cell" + case][0])


def test_query_grid_matches_original():
  """The 266-channel operator input (only the tiny fixture stores it)."""
  fx = load_fixture("tiny")
  op = make_operator(fx.cfg)
  feat = op.apply(fx.operator_params, fx.image("lr"), method=op.encode)
  grid = query_features(feat, jnp.asarray(fx.io["coord"]), jnp.asarray(fx.io["cell"]))
  assert max_abs_diff(grid, fx.image("srno_grid")) <= 1e-5


@pytest.mark.parametrize("lr_hw,out_hw", [((11, 13), (37, 53)), ((8, 8), (8, 8)),
                                           ((9, 7), (95, 71)), ((12, 12), (5, 5))])
def test_any_output_size(lr_hw, out_hw):
  """Odd, non-square, identity, >10x and downscaling outputs all have the asked shape."""
  cfg = model_config("micro")
  op = make_operator(cfg)
  lr = jax.random.uniform(jax.random.key(0), (2, *lr_hw, 3), minval=-1, maxval=1)
  coord = jnp.broadcast_to(make_coord(out_hw), (2, *out_hw, 2))
  cell = jnp.broadcast_to(make_cell(out_hw), (2, 2))
  params = op.init(jax.random.key(1), lr, coord, cell)
  out = op.apply(params, lr, coord, cell)
  assert out.shape == (2, *out_hw, 3)
  assert bool(jnp.all(jnp.isfinite(out)))


@pytest.mark.slow  # compiles the operator jitted and vmapped: 8 s
def test_operator_jit_and_vmap_agree():
  fx = load_fixture("micro")
  op = make_operator(fx.cfg)
  lr, coord, cell = fx.image("lr"), fx.io["coord"], fx.io["cell"]
  lr2 = jnp.concatenate([lr, -lr])
  coord2, cell2 = np.concatenate([coord] * 2), np.concatenate([cell] * 2)
  batched = jax.jit(op.apply)(fx.operator_params, lr2, coord2, cell2)
  mapped = jax.vmap(lambda l, c, s: op.apply(fx.operator_params, l[None], c[None], s[None])[0])(
      lr2, coord2, cell2)
  assert max_abs_diff(batched, mapped) <= 1e-6
  assert max_abs_diff(batched[:1], fx.image("srno_out")) <= 1e-5
  assert max_abs_diff(batched[0], batched[1]) > 1e-2  # the two inputs really differ


def test_bilinear_skip_is_exact_on_a_linear_ramp():
  """Bilinear interpolation reproduces a linear function inside the LR grid."""
  h, w = 6, 9
  ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  img = jnp.asarray((0.3 * ys - 0.2 * xs)[None, ..., None], jnp.float32)
  coord = make_coord((h, w))
  out = sample_bilinear(img, jnp.asarray(coord)[None])
  np.testing.assert_allclose(out, img, atol=1e-5)
  # A point halfway between pixel centres (0,0) and (0,1) takes their mean.
  mid = jnp.array([[[[coord[0, 0, 0], (coord[0, 0, 1] + coord[0, 1, 1]) / 2]]]])
  np.testing.assert_allclose(sample_bilinear(img, mid)[0, 0, 0, 0], -0.1, atol=1e-6)
