"""The inference API: full-model DDIM parity with the original, shapes, validation, compilation."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import (Fixture, bfloat16_twin, load_fixture, max_abs_diff, nhwc,
                      no_transfers_or_compiles, rel_err)
from neurop_jax.inference import api as inference
from neurop_jax.inference import tiled
from neurop_jax.diffusion.formulation import Formulation
from neurop_jax.inference.run import Run, paper_schedule
from neurop_jax.models import NeurOpDiff, make_model, make_operator, make_unet

TRACES: list[tuple[int, ...]] = []


class CountingModel(NeurOpDiff):
  """NeurOpDiff that records each trace of ``prior`` (a Python side effect runs only when traced)."""

  def prior(self, lr: jnp.ndarray, coord: jnp.ndarray, cell: jnp.ndarray) -> jnp.ndarray:
    TRACES.append(lr.shape)
    return super().prior(lr, coord, cell)


@functools.lru_cache(maxsize=None)
def trajectory_fn(fx: Fixture):
  """The fixture's 3-step DDIM with the full model, jitted: (params, prior, x_T, rng, eta)."""
  model = make_model(fx.cfg)
  return jax.jit(functools.partial(
      inference.sample_given_prior, model, schedule=paper_schedule(),
      timesteps=tuple(int(t) for t in fx.io["ddim_seq"]), return_trajectory=True))


@functools.lru_cache(maxsize=None)
def fixture_prior(fx: Fixture) -> jax.Array:
  """The operator's prior of the fixture's lr, coord and cell: (1, H, W, 3) in [-1, 1] scale."""
  model = make_model(fx.cfg)
  return jax.jit(lambda p, lr, coord, cell: model.apply(p, lr, coord, cell, method=model.prior))(
      fx.params, fx.image("lr"), fx.io["coord"], fx.io["cell"])


@pytest.fixture(scope="module")
def micro() -> Fixture:
  return load_fixture("micro")


@pytest.fixture(scope="module")
def counting_model(micro) -> CountingModel:
  return CountingModel(operator=make_operator(micro.cfg), unet=make_unet(micro.cfg))


@pytest.fixture(scope="module")
def lr01(micro) -> jax.Array:
  """The fixture's 8x8 LR image in [0, 1]: (1, 8, 8, 3)."""
  return (micro.image("lr") + 1) / 2


@pytest.fixture(scope="module")
def resolved(micro, counting_model, lr01) -> jax.Array:
  """3-step DDIM super-resolution of ``lr01`` at scale 4 with rng key(0): (1, 32, 32, 3)."""
  return inference.super_resolve(Run(counting_model, micro.params), lr01, scale=4,
                                 rng=jax.random.key(0),
                                 steps=3)


def test_full_model_ddim_matches_original(fixture):
  prior = fixture_prior(fixture)
  final, traj = trajectory_fn(fixture)(fixture.params, prior, fixture.image("ddim_xT"),
                                       jax.random.key(0), eta=jnp.float32(0))
  err_xs = rel_err(traj.xs, nhwc(fixture.io["ddim_xs"]))
  err_x0 = rel_err(traj.x0_preds, nhwc(fixture.io["ddim_x0_preds"]))
  print(f"{fixture.name}: DDIM xs rel err {err_xs:.2e}, x0_preds rel err {err_x0:.2e}")
  assert err_xs <= 1e-4 and err_x0 <= 1e-4
  np.testing.assert_array_equal(final, jnp.clip(traj.xs[-1], -1, 1))


def test_eta_zero_is_deterministic_given_x_T(micro):
  run = functools.partial(trajectory_fn(micro), micro.params, fixture_prior(micro),
                          micro.image("ddim_xT"))
  a, _ = run(jax.random.key(1), eta=jnp.float32(0))
  b, _ = run(jax.random.key(2), eta=jnp.float32(0))
  c, _ = run(jax.random.key(2), eta=jnp.float32(1))
  np.testing.assert_array_equal(a, b)
  assert max_abs_diff(b, c) > 1e-3


def test_super_resolve_returns_images_in_unit_range(resolved, micro, counting_model, lr01):
  assert resolved.shape == (1, 32, 32, 3) and resolved.dtype == jnp.float32
  assert 0 <= float(resolved.min()) and float(resolved.max()) <= 1
  again = inference.super_resolve(Run(counting_model, micro.params), lr01, scale=4,
                                  rng=jax.random.key(0), steps=3)
  np.testing.assert_array_equal(resolved, again)
  other = inference.super_resolve(Run(counting_model, micro.params), lr01, scale=4,
                                  rng=jax.random.key(1), steps=3)
  assert max_abs_diff(resolved, other) > 1e-3


def test_factory_reuses_the_compiled_program(resolved, micro, counting_model, lr01):
  resolver = inference.make_super_resolver(Run(counting_model, micro.params), lr_shape=(1, 8, 8, 3),
                                           scale=4, steps=3)
  first = resolver(micro.params, lr01, jax.random.key(0))
  traces = len(TRACES)
  resolver(micro.params, lr01, jax.random.key(3))
  scaled = jax.tree.map(lambda p: p * 1.01, micro.params)
  resolver(scaled, lr01.astype(jnp.float16), jax.random.key(4))
  same = inference.make_super_resolver(Run(counting_model, micro.params), lr_shape=(1, 8, 8, 3),
                                       out_shape=(32, 32),
                                       steps=3)
  raw_key = same(micro.params, lr01, jax.random.PRNGKey(0))
  assert len(TRACES) == traces
  np.testing.assert_array_equal(first, resolved)
  np.testing.assert_array_equal(raw_key, resolved)
  with pytest.raises(ValueError, match="made for"):
    resolver(micro.params, jnp.zeros((2, 8, 8, 3)), jax.random.key(0))


def test_super_resolve_inside_user_jit_and_vmap(resolved, micro, counting_model, lr01):
  keys = jnp.stack([jax.random.key(0), jax.random.key(1)])
  many = jax.jit(jax.vmap(lambda k: inference.super_resolve(
      Run(counting_model, micro.params), lr01, scale=4, rng=k, steps=3)))(keys)
  assert many.shape == (2, 1, 32, 32, 3)
  assert max_abs_diff(many[0], resolved) <= 1e-4
  assert max_abs_diff(many[0], many[1]) > 1e-3


@pytest.mark.parametrize("sampler", ["ddpm", "dpm_solver_pp"])
def test_other_samplers_run_end_to_end(micro, lr01, sampler):
  model = make_model(micro.cfg)
  run = lambda seed: inference.super_resolve(Run(model, micro.params), lr01, scale=4,
                                             rng=jax.random.key(seed), sampler=sampler, steps=3)
  first = run(0)
  assert first.shape == (1, 32, 32, 3) and first.dtype == jnp.float32
  assert 0 <= float(first.min()) and float(first.max()) <= 1
  np.testing.assert_array_equal(first, run(0))
  assert max_abs_diff(first, run(1)) > 1e-3


def test_sample_memory_is_bounded_whatever_k(micro):
  """Draws run ``SAMPLE_GROUP`` at a time: 16 draws hold no more than 1.3 times the temporary
  memory of 4, where all 16 at once (``group=16``, the vmap of before) hold about 4 times."""
  run = Run(make_model(micro.cfg), micro.params)
  lr = jnp.zeros((1, 24, 24, 3), jnp.float32)
  four, sixteen = (inference.sampler_temp_bytes(run, lr, scale=4, samples=k) for k in (4, 16))
  assert sixteen <= 1.3 * four, (sixteen, four)
  assert inference.sampler_temp_bytes(run, lr, scale=4, samples=16, group=16) >= 2.5 * four


@pytest.mark.slow  # compiles K-sample programs: about 10 s
def test_samples_give_the_mean_and_spread_of_the_draws(micro, lr01):
  run = Run(make_model(micro.cfg), micro.params)
  rng = jax.random.key(3)
  options = dict(scale=4, sampler="ddim", steps=3, eta=1.0)
  samples = inference.SAMPLE_GROUP + 2  # one full group and a smaller last one
  mean, std = inference.super_resolve(run, lr01, rng=rng, samples=samples, **options)
  assert mean.shape == std.shape == (1, 32, 32, 3)
  draws = [inference.super_resolve(run, lr01, rng=key, **options)  # draw d: rng=split(rng, K)[d]
           for key in jax.random.split(rng, samples)]
  np.testing.assert_allclose(mean, np.mean(draws, axis=0), atol=1e-4)  # batched vs single convs
  np.testing.assert_allclose(std, np.std(draws, axis=0), atol=1e-4)
  assert float(std.mean()) > 1e-3
  one_mean, one_std = inference.super_resolve(run, lr01, rng=rng, samples=1, **options)
  np.testing.assert_array_equal(one_std, 0)
  np.testing.assert_allclose(one_mean, inference.super_resolve(
      run, lr01, rng=jax.random.split(rng, 1)[0], **options), atol=1e-4)
  with pytest.raises(ValueError, match="samples must be an integer >= 1"):
    inference.super_resolve(run, lr01, rng=rng, samples=0, **options)


def test_image_b_of_a_batch_draws_from_its_own_key(micro, lr01):
  """Image b draws from fold_in(rng, b): image 0 of a batch is the image alone with the same key,
  and two equal images of a batch get different noise."""
  run = Run(make_model(micro.cfg), micro.params)
  options = dict(scale=4, rng=jax.random.key(5), sampler="ddpm", steps=3)
  batch = inference.super_resolve(run, jnp.concatenate([lr01, lr01]), **options)
  alone = inference.super_resolve(run, lr01, **options)
  assert max_abs_diff(batch[0], alone[0]) <= 1e-4  # batched vs single convolutions
  assert max_abs_diff(batch[0], batch[1]) > 1e-3


def test_output_shapes_for_odd_sizes(micro):
  model = make_model(micro.cfg)
  lr = jax.random.uniform(jax.random.key(0), (1, 11, 13, 3))
  out = inference.super_resolve(Run(model, micro.params), lr, out_shape=(37, 53),
                                rng=jax.random.key(0),
                                steps=2)
  assert out.shape == (1, 37, 53, 3) and bool(jnp.all(jnp.isfinite(out)))
  shape = jax.eval_shape(
      lambda x: inference.super_resolve(Run(model, micro.params), x, scale=3.1,
                                        rng=jax.random.key(0)),
      jax.ShapeDtypeStruct((2, 10, 10, 3), jnp.float32))
  assert shape.shape == (2, 31, 31, 3) and shape.dtype == jnp.float32


def test_prior_only_is_the_operator_clipped_to_unit_range(micro, lr01):
  prior = inference.prior_only(Run(make_model(micro.cfg), micro.params), lr01, scale=4)
  reference = np.clip((nhwc(micro.io["srno_out"]) + 1) / 2, 0, 1)
  assert prior.shape == (1, 32, 32, 3) and prior.dtype == jnp.float32
  assert 0 <= float(prior.min()) and float(prior.max()) <= 1
  assert max_abs_diff(prior, reference) <= 1e-4


def test_bfloat16_model_returns_float32(micro, lr01):
  model = make_model(bfloat16_twin(micro.cfg))
  prior = inference.prior_only(Run(model, micro.params), lr01, out_shape=(20, 24))
  assert prior.dtype == jnp.float32 and prior.shape == (1, 20, 24, 3)
  shape = jax.eval_shape(
      lambda x: inference.super_resolve(Run(model, micro.params), x, scale=4,
                                        rng=jax.random.key(0)),
      lr01)
  assert shape.dtype == jnp.float32


LR = np.full((1, 8, 8, 3), 0.5, np.float32)


@pytest.mark.parametrize("lr, options, match", [
    (LR[0], dict(scale=2), r"expected NHWC \(B, h, w, 3\).*lr\[None\]"),
    (LR[None], dict(scale=2), r"expected NHWC"),
    (LR[..., :1], dict(scale=2), r"expected 3 \(RGB\).*convert"),
    (np.concatenate([LR, LR[..., :1]], -1), dict(scale=2), r"RGBA"),
    ((LR * 255).astype(np.uint8), dict(scale=2), r"divide uint8 by 255"),
    (LR * 255, dict(scale=2), r"must be in \[0, 1\]; divide uint8 by 255"),
    (LR * 2 - 1.5, dict(scale=2), r"must be in \[0, 1\]"),
    (LR, dict(scale=0), r"finite number > 0"),
    (LR, dict(scale=-2), r"finite number > 0"),
    (LR, dict(scale=float("inf")), r"finite number > 0"),
    (LR, dict(scale=float("nan")), r"finite number > 0"),
    (LR, dict(scale=0.5), r"upsamples; use scale >= 1"),
    (LR, dict(out_shape=(16, 4)), r"smaller than the input"),
    (LR, dict(), r"exactly one of scale"),
    (LR, dict(scale=2, out_shape=(16, 16)), r"exactly one of scale"),
    (LR, dict(scale=2, sampler="euler"), r"unknown sampler"),
    (LR, dict(scale=2, sampler="dpm_solver_pp", eta=1.0), r"'ddim' only"),
    (LR, dict(scale=2, skip="cosine"), r"unknown skip"),
    (np.where(np.eye(8)[None, :, :, None] > 0, np.nan, LR), dict(scale=2),
     r"NaN or infinite values: fill them"),
    (LR.transpose(0, 3, 1, 2), dict(scale=2), r"looks like NCHW.*transpose\(0, 2, 3, 1\)"),
    (LR, dict(scale=300), r"exceeds MAX_OUTPUT_PIXELS .*tiled.super_resolve_tiled"),
    (LR[:, :0], dict(scale=2), r"shape \(1, 0, 8, 3\): its images are empty"),
])
def test_bad_inputs_raise_helpful_errors(micro, lr, options, match):
  model = make_model(micro.cfg)
  with pytest.raises(ValueError, match=match):
    inference.super_resolve(Run(model, micro.params), lr, rng=jax.random.key(0), **options)


@pytest.mark.parametrize("call", ["untiled", "tiled"])
@pytest.mark.parametrize("lr, options, error, match", [
    ([LR[0]], dict(), TypeError, r"lr is a list: pass one array of shape \(B, h, w, 3\).*np.stack"),
    (LR, dict(rng=None), TypeError, r"rng is None: diffusion needs a PRNG key.*jax.random.key"),
    (LR[:, :, :0], dict(), ValueError, r"its images are empty"),
])
def test_wrong_kinds_of_argument_say_what_to_pass(micro, call, lr, options, error, match):
  """A list of images, ``rng=None`` and empty images, untiled and tiled: an error that says
  what to pass (not numpy's or JAX's own, which name neither)."""
  run = Run(make_model(micro.cfg), micro.params)
  options = dict(dict(scale=2, rng=jax.random.key(0), steps=1), **options)
  with pytest.raises(error, match=match):
    if call == "untiled":
      inference.super_resolve(run, lr, **options)
    else:
      tiled.super_resolve_tiled(run, lr, progress=False, **options)


def test_regions_of_a_batch_name_the_shape_passed(micro):
  run = Run(make_model(micro.cfg), micro.params)
  with pytest.raises(ValueError, match=r"image has shape \(1, 8, 8, 3\): super_resolve_regions "
                                       r"takes one \(h, w, 3\) image .*lr\[b\]"):
    next(tiled.super_resolve_regions(run, LR, (16, 16), prior_only=True, progress=False))


@pytest.mark.parametrize("lr_shape, options, match", [
    ((8, 8, 3), dict(scale=2), r"lr\[None\]"),
    ((1, 8, 8, 4), dict(scale=2), r"RGB"),
    ((1, 8, 8, 3), dict(out_shape=(4, 4)), r"upsamples"),
    ((1, 32, 32, 3), dict(scale=100), r"exceeds MAX_OUTPUT_PIXELS"),
])
def test_bad_factory_arguments_raise(micro, lr_shape, options, match):
  with pytest.raises(ValueError, match=match):
    inference.make_super_resolver(Run(make_model(micro.cfg), micro.params), lr_shape=lr_shape,
                                  **options)
  with pytest.raises(ValueError, match=match):
    inference.prior_only(Run(make_model(micro.cfg), micro.params), np.zeros(lr_shape, np.float32),
                         **options)


@pytest.mark.parametrize("formulation, min_psnr", [(Formulation(), 40.0),
                                                   (Formulation("x0", "residual", 4.0), 55.0)])
def test_bfloat16_ddim_sample_tracks_float32(micro, lr01, formulation, min_psnr):
  """A 4-step DDIM sample in bf16 against float32 from the same key: the difference's PSNR at
  least 40 dB for the paper's eps/image (its x0 = (x_t - sqrt(1 - a) eps) / sqrt(a) amplifies the
  UNet's rounding at high noise; measured 45 dB), 55 dB for x0/residual (measured 61 dB)."""
  images = [inference.super_resolve(Run(make_model(c), micro.params, formulation=formulation),
                                    lr01, scale=2, rng=jax.random.key(0), steps=4)
            for c in (micro.cfg, bfloat16_twin(micro.cfg))]
  mse = float(jnp.mean((images[1] - images[0]) ** 2))
  assert 0 < mse and -10 * np.log10(mse) >= min_psnr, mse


TRANSFER_CASES = {  # name -> call(run, lr, rng): each warmed up, then run again under the guard
    "make_super_resolver": lambda run, lr, rng: inference.make_super_resolver(
        run, lr_shape=lr.shape, scale=4, sampler="ddim", steps=2),
    "super_resolve": lambda run, lr, rng: functools.partial(
        inference.super_resolve, run, lr, scale=4, rng=rng, sampler="ddim", steps=2, eta=0.5),
    "super_resolve_samples": lambda run, lr, rng: functools.partial(
        inference.super_resolve, run, lr, scale=4, rng=rng, sampler="ddim", steps=2, samples=5),
    "prior_only": lambda run, lr, rng: functools.partial(inference.prior_only, run, lr, scale=4),
}


@pytest.mark.parametrize("case", TRANSFER_CASES)
def test_no_hidden_transfers_or_compiles_after_a_warm_up(case, micro):
  """With the parameters and the image on the device, a second call copies nothing implicitly
  between host and device and compiles nothing, and gives the first call's result (the resolver
  over several images of one shape; ``super_resolve`` with a new key)."""
  run = Run(make_model(micro.cfg), jax.device_put(micro.params))
  images = jax.device_put(list(np.random.default_rng(0).uniform(size=(3, 1, 8, 8, 3)).astype(
      np.float32)))  # a list: indexing a device array with a Python int copies the index over
  rng, other = jax.random.key(1), jax.random.key(2)
  if case == "make_super_resolver":
    resolver = TRANSFER_CASES[case](run, images[0], rng)
    first = resolver(run.params, images[0], rng)
    with no_transfers_or_compiles():
      again = [resolver(run.params, lr, rng) for lr in images]
  else:
    first = TRANSFER_CASES[case](run, images[0], rng)()
    with no_transfers_or_compiles():
      again = [TRANSFER_CASES[case](run, images[0], rng)(),
               TRANSFER_CASES[case](run, images[1], other)()]
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(again[0]), jax.device_get(first))
