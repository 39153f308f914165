"""Tiled super-resolution against the untiled calls: the operator tile by tile equals the untiled
one, diffusion tiles of a per-pixel network reproduce the whole image (x_T and the step noise by
position), one tile is the untiled call, and small tiles of the UNet agree with it, no tile
border showing in the difference."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import bfloat16_twin, load_fixture, max_abs_diff, no_transfers_or_compiles
from neurop_jax.diffusion.formulation import Formulation
from neurop_jax.diffusion.samplers import Sampling
from neurop_jax.inference import tiles as tiling
from neurop_jax.inference.api import prior_only, sample_image, super_resolve
from neurop_jax.inference.run import Run, paper_schedule
from neurop_jax.inference.tiled import (TiledOperator, encoder_radius, prior_only_tiled,
                                        sample_strips, super_resolve_tiled)
from neurop_jax.io.images import to_uint8
from neurop_jax.models import make_model

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
  run, lr = Run(make_model(fx.cfg), fx.params), _lr()[None]
  whole = np.asarray(prior_only(run, lr, out_shape=OUT_HW))
  tiled = prior_only_tiled(run, lr, out_shape=OUT_HW, tile=TILE, progress=False)
  assert tiled.shape == (1, *OUT_HW, 3) and tiled.dtype == np.float32
  assert max_abs_diff(tiled, whole) < 2e-6
  as_uint8 = prior_only_tiled(run, lr, out_shape=OUT_HW, tile=TILE, dtype=np.uint8,
                              progress=False)
  assert np.abs(as_uint8.astype(int) - to_uint8(whole).astype(int)).max() <= 1


@dataclasses.dataclass(frozen=True)
class PointwiseDenoiser:
  """A per-pixel network: tiles of it compute exactly what the whole image would."""

  def __call__(self, params, x_t, noise_level, prior):
    return params * (x_t - prior * noise_level[:, None, None, None])


def _whole(denoise, params, prior, key, sampling, formulation):
  """The whole image sampled at once (``api.sample_image``, origin 0): ``(H, W, C)`` in [0, 1]."""
  return np.asarray(sample_image(denoise, params, jnp.asarray(prior)[None], key,
                                 jnp.float32(sampling.eta), paper_schedule(),
                                 sampler=sampling.sampler, timesteps=sampling.timesteps(
                                     paper_schedule()), formulation=formulation))[0]


@pytest.mark.parametrize("sampling", [Sampling("ddim", 4), Sampling("ddpm", 4),
                                      Sampling("ddim", 4, eta=1.0)])
@pytest.mark.parametrize("formulation", [Formulation(), Formulation("x0", "residual", 4.0),
                                         Formulation("v", "image"), Formulation("eps", "residual")])
def test_tiled_sample_pointwise_equals_untiled(formulation, sampling):
  """With a per-pixel network the tiles must reproduce the whole image exactly: x_T and, for DDPM
  and DDIM with eta > 0, every step's noise come from the same position field in every tile."""
  prior = np.random.default_rng(1).uniform(-1, 1, (70, 90, 3)).astype(np.float32)
  key, params = jax.random.key(5), jnp.float32(0.3)
  tiled = _pointwise_tiled(prior, key, params, sampling, formulation)
  whole = _whole(PointwiseDenoiser(), params, prior, key, sampling, formulation)
  assert max_abs_diff(tiled, whole) < 1e-5
  assert np.std(whole) > 0.05  # an image, not a constant


def _pointwise_tiled(prior, key, params, sampling, formulation, tile_batch=1):
  """``sample_strips`` of ``PointwiseDenoiser`` over ``prior`` ``(H, W, C)``, 32-pixel tiles
  overlapping by 8, gathered: ``(H, W, C)``."""
  regions = lambda origins, shape: jnp.stack([prior[y:y + shape[0], x:x + shape[1]]
                                              for y, x in origins])
  strips = sample_strips(PointwiseDenoiser(), params, regions, prior.shape[:2], keys=key[None],
                         schedule=paper_schedule(), sampling=sampling, formulation=formulation,
                         tile=32, overlap=8, tile_batch=tile_batch, progress=False)
  return np.concatenate([strip[0] for _, strip in strips], axis=0)


def test_tiles_in_batches_equal_tiles_one_at_a_time():
  """Batches of 2 diffusion tiles (3 per tile row: the last batch padded) blend into what tiles one
  at a time give; the operator in batches of 5 of its 12 tiles, with the encoder's feature map
  kept, equals its tiles one at a time, each encoding its own window."""
  prior = np.random.default_rng(1).uniform(-1, 1, (70, 90, 3)).astype(np.float32)
  args = (prior, jax.random.key(5), jnp.float32(0.3), Sampling("ddpm", 3), Formulation())
  assert max_abs_diff(_pointwise_tiled(*args, tile_batch=2), _pointwise_tiled(*args)) < 1e-6
  fx = load_fixture("micro")
  operator, lr = make_model(fx.cfg).operator, _lr()
  kept = TiledOperator(operator, fx.operator_params, lr, OUT_HW, TILE, 5, progress=False)
  alone = TiledOperator(operator, fx.operator_params, lr, OUT_HW, TILE, 1, feature_cache_mib=0,
                        progress=False)
  assert kept.feature_map is not None and alone.feature_map is None
  assert len(kept.rows) * len(kept.cols) == 12
  for (origin, a), (same, b) in zip(kept.regions(), alone.regions(), strict=True):
    assert origin == same and max_abs_diff(a, b) < 1e-6
  # more regions than the operator's batch (a row of overlapping diffusion tiles): one program
  wide = TiledOperator(operator, fx.operator_params, lr, OUT_HW, TILE, 20, progress=False)
  assert wide.tile_batch == 12
  origins = [(0, x) for x in range(0, 14 * 4, 4)]
  rendered = wide.render(origins, (TILE, TILE), wide.kv_sums())
  assert rendered.shape == (14, TILE, TILE, 3)
  one = alone.render(origins[3:4], (TILE, TILE), alone.kv_sums())[0]
  assert max_abs_diff(rendered[3], one) < 1e-6


def test_the_feature_map_is_the_encoder_on_the_whole_input():
  """Encoded in 8 x 8 LR tiles, each with its halo (the last ones moved inwards), the feature map
  equals the encoder run on the whole input."""
  fx = load_fixture("micro")
  operator, lr = make_model(fx.cfg).operator, _lr()
  tiled = TiledOperator(operator, fx.operator_params, lr, OUT_HW, TILE, progress=False)
  whole = operator.apply(fx.operator_params, jnp.asarray(lr)[None] * 2 - 1,
                         method=operator.encode)
  assert max_abs_diff(tiled._encode(lr_tile=8), whole) < 1e-5


@pytest.mark.slow  # compiles a sampler twice: about 10 s each
@pytest.mark.parametrize("sampler, samples", [("ddpm", None), ("ddim", 2)])
def test_one_tile_is_the_untiled_call(sampler, samples):
  """A tile that holds the whole output runs what ``super_resolve`` runs: equal outputs."""
  fx = load_fixture("micro")
  run, lr = Run(make_model(fx.cfg), fx.params), _lr((12, 14))[None]
  options = dict(out_shape=(30, 36), rng=jax.random.key(2), sampler=sampler, steps=3,
                 samples=samples)
  tiled = super_resolve_tiled(run, lr, tile=64, progress=False, **options)
  whole = super_resolve(run, lr, **options)
  for a, b in zip(*(((x,) if samples is None else x) for x in (tiled, whole))):
    assert max_abs_diff(a, b) < 1e-4  # the tiled prior sums k^T v tile by tile


@pytest.mark.slow  # compiles the tiled and untiled samplers: about 10 s
def test_tiled_diffusion_is_the_untiled_one_without_seams():
  """Small tiles of the UNet against the untiled call with the same key: the outputs agree (the
  UNet's GroupNorm and attention see one tile, so not exactly) and the difference is no larger
  at the tile borders than inside the tiles."""
  fx = load_fixture("micro")
  run, lr = Run(make_model(fx.cfg), fx.params), _lr((24, 28))[None]
  out_hw, tile, overlap = (64, 72), 32, 8
  options = dict(out_shape=out_hw, rng=jax.random.key(2), sampler="dpm_solver_pp", steps=3)
  tiled = super_resolve_tiled(run, lr, tile=tile, overlap=overlap, progress=False, **options)[0]
  whole = np.asarray(super_resolve(run, lr, **options))[0]
  assert tiled.shape == (*out_hw, 3) and 0 <= tiled.min() and tiled.max() <= 1
  err = np.abs(tiled - whole)
  unrelated = np.abs(np.asarray(super_resolve(run, lr, **dict(options, rng=jax.random.key(3))))[0]
                     - whole).mean()
  print(f"tiled vs untiled: mean {err.mean():.4f} (another key: {unrelated:.4f}), pixels off by "
        f"more than 0.1: {(err > 0.1).mean():.3f}")
  assert err.mean() < 0.15 * unrelated and (err > 0.1).mean() < 0.12
  _assert_no_seam(err, tile, overlap)


def test_bfloat16_tiled_operator_equals_untiled():
  """With bf16 compute the Galerkin sums accumulate in float32, so tiles add up to the untiled
  sums: tiled equals untiled bf16 (it differed by 5e-4 when the sums were rounded to bf16)."""
  fx = load_fixture("micro")
  run, lr = Run(make_model(bfloat16_twin(fx.cfg)), fx.params), _lr()[None]
  whole = np.asarray(prior_only(run, lr, out_shape=OUT_HW))
  tiled = prior_only_tiled(run, lr, out_shape=OUT_HW, tile=TILE, progress=False)
  assert max_abs_diff(whole, prior_only(Run(make_model(fx.cfg), fx.params), lr,
                                        out_shape=OUT_HW)) > 1e-5  # really bf16
  assert max_abs_diff(tiled, whole) < 2e-6


@pytest.mark.parametrize("diffusion", [False, True], ids=["prior", "diffusion"])
def test_tiles_copy_explicitly_and_compile_once(diffusion):
  """After a warm-up call, the tiled path over 9 tiles (3 x 3 of 32, 8x8 -> 64x64) copies only
  explicitly (each batch of tiles' inputs to the device, the results back once per tile row or
  batch) and compiles nothing, with consistency and K samples too, tiles in batches of 2 (the
  last one of each row padded) or 4 (the last one padded), and gives the warm-up's result."""
  fx = load_fixture("micro")
  run = Run(make_model(fx.cfg), jax.device_put(fx.params))
  lr, rng = _lr((8, 8))[None], jax.random.key(0)
  if diffusion:
    call = lambda: super_resolve_tiled(run, lr, scale=8, rng=rng, sampler="ddim",
                                       steps=2, eta=0.5, samples=2, consistency=True, tile=32,
                                       overlap=8, tile_batch=2, progress=False)
  else:
    call = lambda: prior_only_tiled(run, lr, scale=8, tile=32, tile_batch=4, progress=False)
  first = call()
  with no_transfers_or_compiles():
    again = call()
  jax.tree.map(np.testing.assert_array_equal, again, first)
