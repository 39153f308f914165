"""Formulations of stage 2: targets eps / x0 / v and image / residual space, tested alone."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from neurop_jax.diffusion import samplers
from neurop_jax.diffusion.schedule import make_schedule
from neurop_jax.diffusion.formulation import (TARGETS, Formulation, regression_target,
                                         split_prediction)

SCHEDULE = make_schedule()
# alpha_bar from the last step of the original schedule (4.5e-5) to its first (1 - 1e-6).
LEVELS = np.asarray(SCHEDULE.alphas_cumprod)[[1999, 1500, 1000, 400, 100, 20, 0]]


def _pair(seed: int, shape=(7, 5, 6, 3)) -> tuple[jax.Array, jax.Array]:
  x0 = jax.random.uniform(jax.random.key(seed), shape, minval=-1, maxval=1)
  eps = jax.random.normal(jax.random.key(seed + 1), shape)
  return x0, eps


@pytest.mark.parametrize("target", TARGETS)
def test_split_inverts_the_regression_target(target):
  """A perfect network (output = its regression target) gives back x0 and eps at every level."""
  x0, eps = _pair(0)
  a = jnp.asarray(LEVELS)
  x_t = jnp.sqrt(a)[:, None, None, None] * x0 + jnp.sqrt(1 - a)[:, None, None, None] * eps
  got_x0, got_eps = split_prediction(target, regression_target(target, x0, eps, a), x_t, a)
  # float32 rounding of x_t is amplified by 1/sqrt(a) in x0 (eps target) or 1/sqrt(1-a) in eps
  # (x0 target): compare the update's ingredients with the precision float32 allows there.
  tol_x0 = 4e-7 / np.sqrt(LEVELS) if target == "eps" else np.full(7, 2e-6)
  tol_eps = 4e-7 / np.sqrt(1 - LEVELS) if target == "x0" else np.full(7, 2e-6)
  for k in range(len(LEVELS)):
    np.testing.assert_allclose(got_x0[k], x0[k], atol=tol_x0[k] * 4)
    np.testing.assert_allclose(got_eps[k], eps[k], atol=tol_eps[k] * 4)


@pytest.mark.parametrize("target", ["x0", "v"])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_every_target_gives_the_same_ddim_update(target, eta):
  """With a perfect predictor, the DDIM update of x0 / v equals that of eps to float32 precision."""
  x0, eps = _pair(2, (1, 16, 16, 3))
  z = jax.random.normal(jax.random.key(9), x0.shape)
  t, t_next = samplers.timestep_pairs(samplers.timestep_sequence(SCHEDULE, 50))
  for i, j in zip(t, t_next):
    a_i, a_j = samplers.alpha_bar_at(SCHEDULE, i), samplers.alpha_bar_at(SCHEDULE, j)
    x_t = jnp.sqrt(a_i) * x0 + jnp.sqrt(1 - a_i) * eps
    reference = samplers.ddim_update(*split_prediction("eps", eps, x_t, a_i), a_i, a_j, eta, z)
    output = regression_target(target, x0, eps, a_i)
    got = samplers.ddim_update(*split_prediction(target, output, x_t, a_i), a_i, a_j, eta, z)
    np.testing.assert_allclose(got, reference, atol=2e-6 / np.sqrt(float(a_i)) * np.sqrt(a_j),
                               err_msg=f"step {i} -> {j}")


def test_eps_split_is_the_original_ddim_arithmetic():
  x0, eps = _pair(4)
  a = jnp.float32(LEVELS[2])
  x_t = jnp.sqrt(a) * x0 + jnp.sqrt(1 - a) * eps
  got, _ = split_prediction("eps", eps, x_t, a)
  np.testing.assert_array_equal(got, (x_t - eps * jnp.sqrt(1 - a)) / jnp.sqrt(a))


# Data x0 ~ N(MU, S^2) per channel: the optimal x0, eps and v predictors in closed form.
MU = jnp.asarray([0.3, -0.2, 0.1])
S = jnp.asarray([0.15, 0.18, 0.1])


def optimal(target: str):
  def net_fn(x, noise_level):
    g = noise_level[:, None, None, None]
    denominator = g**2 * S**2 + 1 - g**2
    x0 = MU + g * S**2 * (x - g * MU) / denominator
    eps = jnp.sqrt(1 - g**2) * (x - g * MU) / denominator
    return {"eps": eps, "x0": x0, "v": g * eps - jnp.sqrt(1 - g**2) * x0}[target]
  return net_fn


@pytest.mark.parametrize("sampler,steps,skip", [("ddim", 50, "uniform"), ("ddpm", 50, "uniform"),
                                                ("dpm_solver_pp", 10, "logsnr")])
@pytest.mark.parametrize("target", ["x0", "v"])
def test_samplers_agree_across_targets(sampler, steps, skip, target):
  """Every sampler gives the same samples from the optimal eps, x0 and v networks."""
  x_T = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
  run = lambda t: samplers.sample(optimal(t), x_T, jax.random.key(1), schedule=SCHEDULE,
                                  sampler=sampler, steps=steps, skip=skip, target=t, clip=False)
  np.testing.assert_allclose(run(target), run("eps"), atol=1e-4)


def test_residual_space_round_trip_and_clipping():
  image = jnp.asarray([[-1.0, -0.2, 0.5, 1.0]])
  prior = jnp.asarray([[-0.9, 0.0, 0.4, 0.8]])
  residual = Formulation("x0", "residual", 4.0)
  np.testing.assert_allclose(residual.to_space(image, prior), 4 * (image - prior), atol=1e-6)
  np.testing.assert_allclose(residual.to_image(residual.to_space(image, prior), prior), image,
                             atol=1e-6)
  # the residual is not clipped; the image prior + residual / scale is
  np.testing.assert_allclose(residual.to_image(jnp.full((1, 4), 8.0), prior), 1.0)
  assert Formulation().to_space(image, prior) is image
  np.testing.assert_array_equal(Formulation().to_image(image * 3, prior), jnp.clip(image * 3, -1, 1))


def test_formulation_from_config_and_errors():
  cfg = ml_collections.ConfigDict(dict(target="v", space="residual", residual_scale=2.0))
  assert Formulation.from_config(cfg) == Formulation("v", "residual", 2.0)
  assert Formulation.from_config(ml_collections.ConfigDict(dict(schedule="linear"))) == Formulation()
  with pytest.raises(ValueError, match="config.diffusion.target"):
    Formulation("noise")
  with pytest.raises(ValueError, match="config.diffusion.space"):
    Formulation("eps", "latent")
  with pytest.raises(ValueError, match="residual_scale"):
    Formulation("eps", "residual", 0.0)
  assert hash(Formulation("x0", "residual")) == hash(Formulation("x0", "residual"))
