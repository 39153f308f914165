"""Consistency with the input: the projection, the samplers' estimates through it, a tile's
constraint, and every entry point (API, run default, tiled, upsample)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import load_fixture
from neurop_jax.cli.upsample import _parser as upsample_parser
from neurop_jax.cli.upsampling import upsample
from neurop_jax.data import read_image, write_image
from neurop_jax.data.degrade import downsample, resize_weights
from neurop_jax.diffusion.formulation import Formulation
from neurop_jax.diffusion.samplers import Sampling, sample_conditioned
from neurop_jax.diffusion.schedule import make_schedule
from neurop_jax.errors import InputError
from neurop_jax.inference.api import prior_only, super_resolve
from neurop_jax.inference.consistency import (consistency_psnr, input_projection, window_count,
                                              window_system)
from neurop_jax.inference.run import Run
from neurop_jax.inference.tiled import super_resolve_tiled
from neurop_jax.models import make_model


@pytest.mark.parametrize("out_hw, lr_hw", [((40, 36), (10, 9)), ((40, 36), (13, 11)),
                                           ((17, 17), (17, 17))])
def test_the_projection_degrades_exactly_to_the_input_and_keeps_its_images(out_hw, lr_hw):
  """A random image projects to one whose bicubic degradation is the LR (to float32 rounding);
  an image that already degrades to it (the HR) is left as it is; the projection is idempotent."""
  rng = np.random.default_rng(0)
  hr = rng.random((2, *out_hw, 3), dtype=np.float32)
  lr = jnp.asarray(np.stack([downsample(image, lr_hw) for image in hr]))
  project = jax.jit(input_projection(lr, out_hw))
  x = jnp.asarray(rng.random((2, *out_hw, 3), dtype=np.float32))
  assert float(consistency_psnr(x, lr).max()) < 25
  assert float(consistency_psnr(project(x), lr).min()) > 100
  np.testing.assert_allclose(project(jnp.asarray(hr)), hr, atol=1e-5)
  np.testing.assert_allclose(project(project(x)), project(x), atol=1e-5)


def test_consistency_psnr_is_the_psnr_of_the_degraded_output():
  rng = np.random.default_rng(1)
  out = rng.random((1, 24, 20, 3), dtype=np.float32)
  lr = np.clip(downsample(out[0], (8, 7)) + 0.01, 0, 1)[None]
  expected = -10 * np.log10(np.mean((downsample(out[0], (8, 7)) - lr[0]) ** 2))
  np.testing.assert_allclose(consistency_psnr(out, lr), [expected], rtol=1e-4)


@pytest.mark.parametrize("formulation", [Formulation(), Formulation("x0", "residual", 4.0)],
                         ids=lambda f: f"{f.target}-{f.space}")
def test_the_sampler_projects_each_estimate_in_image_space(formulation):
  """A network whose x0 estimate is known: with the projection, the sample is the projection of
  that estimate (the last DDIM step lands on it), and degrades to the LR."""
  rng = np.random.default_rng(2)
  hr = rng.random((1, 24, 20, 3), dtype=np.float32) * 1.6 - 0.8
  lr = jnp.asarray(downsample(hr[0], (8, 7))[None])
  prior = jnp.asarray(hr + 0.1 * rng.standard_normal(hr.shape).astype(np.float32))
  guess = jnp.asarray(np.clip(hr + 0.15 * rng.standard_normal(hr.shape), -0.9, 0.9),
                      jnp.float32)
  net_fn = lambda x, g: formulation.to_space(guess, prior)  # an x0 predictor
  x0_formulation = Formulation("x0", formulation.space, formulation.residual_scale)
  project = input_projection(lr, (24, 20))
  options = dict(schedule=make_schedule(), formulation=x0_formulation, sampler="ddim", steps=5)
  plain = sample_conditioned(net_fn, prior, jnp.zeros_like(prior), jax.random.key(0), **options)
  np.testing.assert_allclose(plain, guess, atol=1e-5)
  out = sample_conditioned(net_fn, prior, jnp.zeros_like(prior), jax.random.key(0),
                           project=project, **options)
  np.testing.assert_allclose(out, np.clip(project(guess), -1, 1), atol=1e-5)
  assert float(consistency_psnr((out + 1) / 2, (lr + 1) / 2)[0]) > 60


@pytest.fixture(scope="module")
def zeroed_run() -> Run:
  """The micro model with its operator's head and its UNet's last convolution zeroed, as an x0
  predictor: its prior is the bilinear interpolation of the input and its estimate 0 (the
  projection makes that the input's own content), images in range that the final clipping
  leaves alone; random weights give estimates far outside it."""
  fixture = load_fixture("micro")
  params = jax.tree.map(np.asarray, fixture.params)
  for layer in (params["params"]["operator"]["fc2"], params["params"]["unet"]["final_conv"]["conv"]):
    layer.update(kernel=np.zeros_like(layer["kernel"]), bias=np.zeros_like(layer["bias"]))
  return Run(make_model(fixture.cfg), params, formulation=Formulation("x0", "image"))


@pytest.mark.slow  # compiles the prior and the sampler with and without consistency: 14 s
def test_the_api_offers_it_for_the_prior_and_for_neurop_diff(zeroed_run):
  """Through the prior and the sampler; the run's own setting is the default, the caller's wins."""
  run = zeroed_run
  hr = np.random.default_rng(3).random((1, 30, 25, 3), dtype=np.float32) * 0.8 + 0.1
  lr = downsample(hr[0], (12, 10))[None]
  plain, consistent = (prior_only(run, lr, out_shape=(30, 25), consistency=c) for c in (0, 1))
  assert float(consistency_psnr(plain, lr)[0]) < 40 < float(consistency_psnr(consistent, lr)[0])
  options = dict(out_shape=(30, 25), rng=jax.random.key(0), sampler="ddim", steps=3)
  draw = super_resolve(run, lr, consistency=True, **options)
  assert float(consistency_psnr(draw, lr)[0]) > 40
  assert not np.allclose(draw, super_resolve(run, lr, **options))
  np.testing.assert_array_equal(super_resolve(run, lr, consistency=True, strength=0.0, **options),
                                consistent)
  consistent_run = dataclasses.replace(run, sampling=Sampling("ddim", 3, consistency=True))
  np.testing.assert_array_equal(super_resolve(consistent_run, lr, **options), draw)
  np.testing.assert_array_equal(super_resolve(consistent_run, lr, consistency=False, **options),
                                super_resolve(run, lr, **options))


def test_a_consistency_other_than_true_or_false_is_refused():
  with pytest.raises(InputError, match="consistency must be True or False"):
    Sampling(consistency="yes")


@pytest.mark.parametrize("out_size, in_size, start, length", [(60, 15, 0, 40), (60, 15, 20, 40),
                                                              (50, 17, 13, 24), (40, 40, 8, 16)])
def test_a_window_holds_the_lr_pixels_whose_support_is_inside_it(out_size, in_size, start, length):
  """An image zero outside the window degrades, on the window's LR pixels, as the window alone
  does; those are all the LR pixels that depend on the window only."""
  count = window_count(out_size, in_size, length)
  index, a, a_pinv = window_system(out_size, in_size, start, length, count)
  full = resize_weights(out_size, in_size)
  used = a.any(axis=1)
  inside = [i for i in range(in_size) if not (full[i, :start].any() or full[i, start + length:].any())]
  assert list(index[used]) == inside and not a[~used].any()
  np.testing.assert_allclose(a[used], full[inside, start:start + length], atol=1e-7)
  np.testing.assert_allclose(a @ a_pinv, np.diag(used.astype(np.float32)), atol=1e-4)


@pytest.mark.slow  # the tiled sampler compiled twice and the untiled one: about 10 s
def test_tiles_are_consistent_with_the_input_pixels_inside_them(zeroed_run):
  """One tile is the untiled result; with overlaps of at least the bicubic's support (4 x scale
  output pixels), blended tiles degrade to the input to beyond 40 dB, where without the option
  they are near 25 dB."""
  hr = np.random.default_rng(4).random((1, 60, 50, 3), dtype=np.float32) * 0.8 + 0.1
  lr = downsample(hr[0], (15, 12))[None]
  options = dict(out_shape=(60, 50), rng=jax.random.key(1), sampler="ddim", steps=3,
                 progress=False)
  whole = super_resolve(zeroed_run, lr, consistency=True,
                        **{k: v for k, v in options.items() if k != "progress"})
  one = super_resolve_tiled(zeroed_run, lr, consistency=True, tile=64, overlap=8, **options)
  np.testing.assert_allclose(one, whole, atol=1e-6)
  tiled, plain = (super_resolve_tiled(zeroed_run, lr, consistency=c, tile=40, overlap=20,
                                      **options) for c in (True, False))
  assert float(consistency_psnr(plain, lr)[0]) < 30
  assert float(consistency_psnr(tiled, lr)[0]) > 40


@pytest.mark.slow  # the upsample program and the tiled sampler: about 8 s
def test_upsample_passes_it_through(zeroed_run, tmp_path):
  source = tmp_path / "scene.png"
  lr = np.round(downsample(np.random.default_rng(5).random((48, 40, 3)) * 0.8 + 0.1,
                           (12, 10)) * 255) / 255
  write_image(source, lr)
  options = dict(scale=4, run=zeroed_run, progress=False, sampler="ddim", steps=3)
  [consistent] = upsample([source], tmp_path / "on", consistency=True, **options)
  [plain] = upsample([source], tmp_path / "off", **options)
  lr = read_image(source)[None]
  assert (float(consistency_psnr(read_image(plain)[None], lr)[0]) < 40
          < float(consistency_psnr(read_image(consistent)[None], lr)[0]))
  assert upsample_parser().parse_args(["x.png", "--scale", "2", "--out", "o", "--workdir", "w", "--consistency"]).consistency
  assert upsample_parser().parse_args(["x.png", "--scale", "2", "--out", "o", "--workdir", "w"]).consistency is None
