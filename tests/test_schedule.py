"""The schedule against the original's arrays, the forward process and the training objective."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import load_io, nhwc
from neurop_jax.diffusion import schedule as diffusion
from neurop_jax.diffusion.config import default_diffusion_config

@pytest.fixture(scope="module")
def io() -> dict[str, np.ndarray]:
  return load_io("micro")


def test_linear_schedule_equals_the_original(io):
  schedule = diffusion.make_schedule()
  assert schedule.num_timesteps == 2000
  np.testing.assert_array_equal(np.asarray(schedule.betas), io["sched_betas"])
  np.testing.assert_array_equal(np.asarray(schedule.alphas_cumprod), io["sched_alphas_cumprod_f32"])
  np.testing.assert_array_equal(np.asarray(schedule.sqrt_alphas_cumprod_prev),
                                io["sched_sqrt_alphas_cumprod_prev"].astype(np.float32))
  assert schedule.sqrt_alphas_cumprod_prev[1000] == io["noise_level"][0, 0]


def test_default_config_builds_the_original_schedule():
  config = default_diffusion_config()
  assert (config.schedule, config.num_timesteps, config.loss, config.sampler, config.steps,
          config.eta, config.skip, config.per_sample_t) == ("linear", 2000, "l1", "ddim", 50, 0.0,
                                                            "uniform", False)
  built = diffusion.schedule_from_config(config)
  reference = diffusion.make_schedule()
  for a, b in zip(jax.tree.leaves(built), jax.tree.leaves(reference)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["linear", "quad", "cosine"])
def test_schedules_are_valid(name):
  schedule = diffusion.make_schedule(name, 1000)
  betas, alpha_bar = np.asarray(schedule.betas), np.asarray(schedule.alphas_cumprod)
  g_prev = np.asarray(schedule.sqrt_alphas_cumprod_prev)
  assert betas.shape == alpha_bar.shape == (1000,) and g_prev.shape == (1001,)
  assert all(a.dtype == np.float32 for a in (betas, alpha_bar, g_prev))
  assert np.all((betas > 0) & (betas < 1)) and np.all(np.diff(alpha_bar) < 0)
  np.testing.assert_allclose(g_prev, np.sqrt(np.concatenate([[1], alpha_bar])), rtol=1e-6)


def test_quad_and_cosine_follow_their_formulas():
  quad = diffusion.make_schedule("quad", 100, 1e-4, 0.02)
  np.testing.assert_allclose(quad.betas, np.linspace(1e-2, 0.02**0.5, 100) ** 2, rtol=1e-6)
  cosine = diffusion.make_schedule("cosine", 1000)
  u = np.arange(1, 1001) / 1000
  expected = np.cos((u + 0.008) / 1.008 * np.pi / 2) ** 2 / np.cos(0.008 / 1.008 * np.pi / 2) ** 2
  np.testing.assert_allclose(cosine.alphas_cumprod[:900], expected[:900], rtol=1e-4)
  with pytest.raises(ValueError, match="unknown schedule"):
    diffusion.make_schedule("sigmoid")


def test_q_sample_equals_the_original(io):
  x_t = diffusion.q_sample(jnp.asarray(nhwc(io["x0"])), jnp.asarray(io["noise_level"][:, 0]),
                           jnp.asarray(nhwc(io["eps"])))
  np.testing.assert_allclose(x_t, nhwc(io["x_t"]), atol=1e-6)


def test_forward_process_moments():
  """E[x_t] = g x0 and Var[x_t] = 1 - g^2, per sample, over many noise draws."""
  x0 = jnp.asarray([[-0.8, 0.1, 0.9]], jnp.float32).reshape(1, 1, 1, 3)
  noise_level = jnp.asarray([0.05, 0.5, 0.95], jnp.float32)
  eps = jax.random.normal(jax.random.key(0), (3, 256, 256, 3))
  x_t = diffusion.q_sample(jnp.broadcast_to(x0, (3, 1, 1, 3)), noise_level, eps)
  g = np.asarray(noise_level)[:, None]
  np.testing.assert_allclose(np.mean(x_t, axis=(1, 2)), g * np.asarray(x0[0, 0]), atol=0.01)
  np.testing.assert_allclose(np.var(x_t, axis=(1, 2)), np.broadcast_to(1 - g**2, (3, 3)),
                             rtol=0.02)


def _common_step(schedule: diffusion.Schedule, noise_level: jax.Array) -> int | None:
  """The step t with g_prev[t] <= g <= g_prev[t-1] (to float32 rounding) for every g, or None."""
  g_prev = np.asarray(schedule.sqrt_alphas_cumprod_prev, np.float64)
  g = np.asarray(noise_level, np.float64)
  for t in range(1, schedule.num_timesteps + 1):
    if np.all((g >= g_prev[t] - 1e-7) & (g <= g_prev[t - 1] + 1e-7)):
      return t
  return None


def test_sample_noise_level_one_step_per_batch():
  schedule = diffusion.make_schedule()
  sample = jax.jit(diffusion.sample_noise_level, static_argnums=(2, 3))
  steps = set()
  for i in range(200):
    g = sample(jax.random.fold_in(jax.random.key(0), i), schedule, 8)
    assert g.shape == (8,) and g.dtype == jnp.float32 and len(np.unique(np.asarray(g))) > 1
    t = _common_step(schedule, g)
    assert t is not None and 1 <= t <= 1999
    steps.add(t)
  assert len(steps) > 150
  g = sample(jax.random.key(1), schedule, 64, True)
  assert _common_step(schedule, g) is None
  assert np.all((g >= schedule.sqrt_alphas_cumprod_prev[1999]) & (g <= 1))


def test_sample_training_inputs_are_consistent():
  schedule = diffusion.make_schedule()
  x0 = jax.random.uniform(jax.random.key(0), (2, 7, 5, 3), minval=-1, maxval=1)
  x_t, noise_level, eps = diffusion.sample_training_inputs(jax.random.key(1), schedule, x0)
  assert x_t.shape == eps.shape == x0.shape and noise_level.shape == (2,)
  np.testing.assert_allclose(x_t, diffusion.q_sample(x0, noise_level, eps), atol=1e-6)
  again = diffusion.sample_training_inputs(jax.random.key(1), schedule, x0)
  np.testing.assert_array_equal(x_t, again[0])


def test_diffusion_loss():
  eps = jnp.asarray([[1.0, -2.0], [0.5, 0.0]])
  pred = jnp.zeros_like(eps)
  assert diffusion.diffusion_loss(pred, eps) == pytest.approx(0.875)
  assert diffusion.diffusion_loss(pred, eps, "l2") == pytest.approx(1.3125)
  with pytest.raises(ValueError, match="unknown loss"):
    diffusion.diffusion_loss(pred, eps, "huber")
