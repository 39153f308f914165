"""Consistency with the input: the projection, the samplers' estimates through it, and the API."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import load_fixture
from neurop_jax.data.degrade import downsample
from neurop_jax.diffusion.formulation import Formulation
from neurop_jax.diffusion.samplers import sample_conditioned
from neurop_jax.diffusion.schedule import make_schedule
from neurop_jax.inference.api import prior_only, super_resolve
from neurop_jax.inference.consistency import consistency_psnr, input_projection
from neurop_jax.inference.run import Run
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


def test_the_api_offers_it_for_the_prior_and_for_neurop_diff():
  """The micro model with its operator's head and its UNet's last convolution zeroed, as an x0
  predictor: its prior is the bilinear interpolation of the input and its estimate 0 (the
  projection makes that the input's own content), images in range that the final clipping
  leaves alone; random weights give estimates far outside it."""
  fixture = load_fixture("micro")
  params = jax.tree.map(np.asarray, fixture.params)
  for layer in (params["params"]["operator"]["fc2"], params["params"]["unet"]["final_conv"]["conv"]):
    layer.update(kernel=np.zeros_like(layer["kernel"]), bias=np.zeros_like(layer["bias"]))
  run = Run(make_model(fixture.cfg), params, formulation=Formulation("x0", "image"))
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
