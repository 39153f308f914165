"""Tiled super-resolution: the operator tile by tile equals the untiled one, diffusion tiles agree
where they overlap, and no tile border shows in the error."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import load_fixture, max_abs_diff
from neurop_jax.inference import tiles as tiling
from neurop_jax.io.images import to_uint8
from neurop_jax.inference.api import compute_prior, default_schedule, prior_only, sample_conditioned
from neurop_jax.models import make_model
from neurop_jax.diffusion.formulation import Formulation
from neurop_jax.inference.tiled import UNetDenoiser, encoder_radius, super_resolve_tiled, tiled_sample

LR_HW, OUT_HW, TILE = (23, 31), (61, 83), 24  # scale ~2.65, 3 x 4 tiles, the last ones shifted


def _lr(hw=LR_HW, seed=0):
  return np.random.default_rng(seed).random((*hw, 3), dtype=np.float32)


def _border_lines(size, tile, overlap=0):
  """Output rows (or columns) within 1 pixel of a tile edge or an owned-range edge."""
  tiles = tiling.axis_tiles(size, tile, overlap)
  edges = {e for s, (lo, hi) in zip(tiles.starts, tiles.owned) for e in (s, s + tiles.tile, lo, hi)}
  lines = {e + d for e in edges for d in (-1, 0) if 0 < e < size}
  return np.array(sorted(lines))


def _assert_no_seam(err, tile, overlap=0):
  """Per-line error at tile borders no larger than the largest error elsewhere (plus rounding)."""
  for axis, size in enumerate(err.shape[:2]):
    lines = err.max(axis=tuple(a for a in range(err.ndim) if a != axis))
    border = _border_lines(size, tile, overlap)
    inner = np.delete(lines, border)
    assert lines[border].max() <= inner.max() * 1.5 + 1e-6, (axis, lines[border].max(), inner.max())


def test_encoder_radius_is_the_receptive_field():
  fx = load_fixture("micro")
  operator = make_model(fx.cfg).operator
  params = fx.operator_params
  lr = jnp.asarray(_lr((40, 40))) * 2 - 1
  bumped = lr.at[20, 20].add(0.5)
  feat = lambda x: operator.apply(params, x[None], method=operator.encode)[0]
  changed = np.argwhere(np.abs(np.asarray(feat(bumped) - feat(lr))).max(-1) > 0)
  radius = encoder_radius(operator)
  assert np.abs(changed - 20).max() == radius


def test_tiled_operator_equals_untiled_everywhere():
  fx = load_fixture("micro")
  model, lr = make_model(fx.cfg), _lr()
  whole = np.asarray(prior_only(model, fx.params, lr[None], out_shape=OUT_HW))[0]
  tiled = super_resolve_tiled(model, fx.params, lr, OUT_HW, prior_only=True, tile=TILE,
                              progress=False)
  assert tiled.shape == (*OUT_HW, 3) and tiled.dtype == np.float32
  assert max_abs_diff(tiled, whole) < 2e-6
  _assert_no_seam(np.abs(tiled - whole), TILE)
  as_uint8 = super_resolve_tiled(model, fx.params, lr, OUT_HW, prior_only=True, tile=TILE,
                                 dtype=np.uint8, progress=False)
  assert np.abs(as_uint8.astype(int) - to_uint8(whole).astype(int)).max() <= 1


@dataclasses.dataclass(frozen=True)
class PointwiseDenoiser:
  """A per-pixel noise predictor: tiles of it compute exactly what the whole image would."""

  def __call__(self, params, x_t, noise_level, prior):
    return params * (x_t - prior * noise_level[:, None, None, None])


def _untiled(denoise, params, prior, rng, formulation=Formulation(), **options):
  """The whole image sampled at once from the same noise field as the tiles: [0, 1]."""
  x_T = tiling.position_noise(jax.random.fold_in(rng, 0), np.zeros(2, np.int32), prior.shape[:2])
  net_fn = lambda x, g: denoise(params, x, g, prior[None])
  image = sample_conditioned(net_fn, prior[None], x_T, jax.random.fold_in(rng, 1),
                             schedule=default_schedule(), formulation=formulation, **options)
  return np.asarray(jnp.clip((image[0] + 1) / 2, 0, 1))


@pytest.mark.parametrize("formulation", [Formulation(), Formulation("x0", "residual", 4.0),
                                         Formulation("v", "image"), Formulation("eps", "residual")])
def test_tiled_sample_pointwise_equals_untiled(formulation):
  prior = np.random.default_rng(1).uniform(-1, 1, (70, 90, 3)).astype(np.float32)
  rng, params = jax.random.key(5), jnp.float32(0.3)
  region = lambda o, shape: prior[o[0]:o[0] + shape[0], o[1]:o[1] + shape[1]]
  options = dict(sampler="ddim", steps=4, skip="uniform")
  tiled = tiled_sample(PointwiseDenoiser(), params, region, prior.shape[:2], rng=rng,
                       schedule=default_schedule(), tile=32, overlap=8, formulation=formulation,
                       progress=False, **options)
  whole = _untiled(PointwiseDenoiser(), params, jnp.asarray(prior), rng, formulation, **options)
  assert max_abs_diff(tiled, whole) < 1e-5
  assert np.std(whole) > 0.05  # an image, not a constant


def test_tiled_diffusion_has_no_seam():
  fx = load_fixture("micro")
  model, lr = make_model(fx.cfg), _lr((24, 28))
  out_hw, tile, overlap, rng = (64, 72), 32, 8, jax.random.key(2)
  options = dict(sampler="dpm_solver_pp", steps=3, skip="logsnr")
  tiled = super_resolve_tiled(model, fx.params, lr, out_hw, rng=rng, schedule=default_schedule(),
                              tile=tile, overlap=overlap, progress=False, **options)
  prior = compute_prior(model, fx.params, jnp.asarray(lr)[None], out_hw)[0]
  whole = _untiled(UNetDenoiser(model), fx.params, prior, rng, **options)
  assert tiled.shape == (*out_hw, 3) and 0 <= tiled.min() and tiled.max() <= 1
  _assert_no_seam(np.abs(tiled - whole), tile, overlap)
