"""The samplers: the original's DDIM by teacher forcing, and all three on exactly solvable data."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import load_io, nhwc, rel_err
from neurop_jax.diffusion import samplers
from neurop_jax.diffusion.formulation import split_prediction
from neurop_jax.diffusion.schedule import make_schedule

SCHEDULE = make_schedule()


@pytest.fixture(scope="module", params=["micro", "tiny"])
def io(request) -> dict[str, np.ndarray]:
  return load_io(request.param)


def teacher(io: dict[str, np.ndarray]) -> samplers.NetFn:
  """The fixture's eps at the step whose noise level the sampler feeds, NaN for any other level."""
  levels = jnp.asarray(io["ddim_noise_levels"])
  eps = jnp.asarray(nhwc(io["ddim_eps"]))

  def eps_fn(x, noise_level):
    distance = jnp.abs(levels - noise_level[0])
    k = jnp.argmin(distance)
    return jnp.where(distance[k] == 0, eps[k], jnp.nan)

  return eps_fn


def test_timestep_pairs_and_coefficients_equal_the_original(io):
  t, t_next = samplers.timestep_pairs(tuple(io["ddim_seq"]))
  np.testing.assert_array_equal(t, io["ddim_t"])
  np.testing.assert_array_equal(t_next, io["ddim_t_next"])
  np.testing.assert_array_equal(samplers.noise_level_at(SCHEDULE, t), io["ddim_noise_levels"])
  np.testing.assert_array_equal(samplers.alpha_bar_at(SCHEDULE, t), io["ddim_at"])
  np.testing.assert_array_equal(samplers.alpha_bar_at(SCHEDULE, t_next), io["ddim_at_next"])


def test_ddim_step_equals_the_original(io):
  """One DDIM step of a noise predictor: x0 from ``split_prediction('eps')``, then ``ddim_update``."""
  xs, x0s, eps = nhwc(io["ddim_xs"]), nhwc(io["ddim_x0_preds"]), nhwc(io["ddim_eps"])
  for k in range(3):
    x0, e = split_prediction("eps", eps[k], xs[k], io["ddim_at"][k])
    x_next = samplers.ddim_update(x0, e, io["ddim_at"][k], io["ddim_at_next"][k], 0.0,
                                  np.zeros_like(xs[k]))
    assert rel_err(x_next, xs[k + 1]) <= 1e-6 and rel_err(x0, x0s[k]) <= 1e-6


def test_ddim_teacher_forced_equals_the_original(io):
  run = jax.jit(partial(samplers.sample, teacher(io), schedule=SCHEDULE, sampler="ddim",
                        timesteps=tuple(io["ddim_seq"]), return_trajectory=True))
  final, trajectory = run(jnp.asarray(nhwc(io["ddim_xT"])), jax.random.key(0))
  assert rel_err(trajectory.xs, nhwc(io["ddim_xs"])) <= 1e-4
  assert rel_err(trajectory.x0_preds, nhwc(io["ddim_x0_preds"])) <= 1e-4
  np.testing.assert_array_equal(final, jnp.clip(trajectory.xs[-1], -1, 1))


def test_timestep_sequences():
  uniform = samplers.timestep_sequence(SCHEDULE, 50)
  assert uniform == tuple(range(0, 2000, 40)) and uniform[-1] == 1960
  quad = samplers.timestep_sequence(SCHEDULE, 20, "quad")
  assert quad == tuple(int(t) for t in np.linspace(0, 40, 20) ** 2) and quad[-1] == 1600
  logsnr = samplers.timestep_sequence(SCHEDULE, 10, "logsnr")
  assert len(logsnr) == 10 and logsnr[0] == 0 and logsnr[-1] == 1800
  assert np.all(np.diff(logsnr) > 0)
  assert samplers.timestep_sequence(SCHEDULE, 1, "trailing") == (1999,)
  assert samplers.timestep_sequence(SCHEDULE, 4, "trailing") == (499, 999, 1499, 1999)
  assert samplers.timestep_sequence(SCHEDULE, 3, "trailing") == (666, 1332, 1999)
  student = samplers.Sampling().with_overrides("student", 4)
  assert (student.skip, student.network, student.solver) == ("trailing", "student", "ddim")
  with pytest.raises(ValueError, match="unknown skip"):
    samplers.timestep_sequence(SCHEDULE, 10, "cubic")
  with pytest.raises(ValueError, match="steps"):
    samplers.timestep_sequence(SCHEDULE, 0)


def test_ddpm_step_is_ddim_with_eta_one():
  """The DDPM posterior draw equals DDIM with eta = 1 (Song et al. 2021), skipped steps included."""
  x, eps, z = jax.random.normal(jax.random.key(0), (3, 2, 4, 4, 3))
  for a_i, a_j in [(0.01, 0.3), (0.5, 0.52), (0.3, 1.0), (0.7, 0.7)]:
    a_i, a_j = jnp.float32(a_i), jnp.float32(a_j)
    x0, e = split_prediction("eps", eps, x, a_i)
    np.testing.assert_allclose(samplers.ddpm_update(x, x0, a_i, a_j, z),
                               samplers.ddim_update(x0, e, a_i, a_j, 1.0, z), atol=2e-5)


def toy_eps(x: jax.Array, noise_level: jax.Array) -> jax.Array:
  """A cheap stand-in noise predictor that depends on both inputs."""
  return 0.1 * x * noise_level[:, None, None, None]


@pytest.mark.parametrize("name", ["ddim", "ddpm", "dpm_solver_pp"])
def test_odd_shapes_and_trajectory(name):
  x_T = jax.random.normal(jax.random.key(0), (2, 37, 53, 3))
  final, trajectory = samplers.sample(toy_eps, x_T, jax.random.key(1), schedule=SCHEDULE,
                                      sampler=name, steps=5, return_trajectory=True)
  assert final.shape == x_T.shape and float(jnp.max(jnp.abs(final))) <= 1
  assert trajectory.xs.shape == (6, 2, 37, 53, 3) and trajectory.x0_preds.shape == (5, 2, 37, 53, 3)
  np.testing.assert_array_equal(trajectory.xs[0], x_T)


def test_eta_zero_is_deterministic_and_eta_one_is_not():
  x_T = jax.random.normal(jax.random.key(0), (1, 8, 8, 3))
  run = jax.jit(partial(samplers.sample, toy_eps, schedule=SCHEDULE, sampler="ddim", steps=10))
  np.testing.assert_array_equal(run(x_T, jax.random.key(1), eta=0.0),
                                run(x_T, jax.random.key(2), eta=0.0))
  assert not np.allclose(run(x_T, jax.random.key(1), eta=1.0), run(x_T, jax.random.key(2), eta=1.0))


@pytest.mark.parametrize("name", ["ddpm", "dpm_solver_pp"])
def test_rng_use_of_the_other_samplers(name):
  """DPM-Solver++ ignores the rng; DDPM follows it: the same key repeats, another one differs."""
  x_T = jax.random.normal(jax.random.key(0), (1, 8, 8, 3))
  run = jax.jit(partial(samplers.sample, toy_eps, schedule=SCHEDULE, sampler=name, steps=10))
  first = run(x_T, jax.random.key(1))
  np.testing.assert_array_equal(first, run(x_T, jax.random.key(1)))
  other = run(x_T, jax.random.key(2))
  if name == "ddpm":
    assert not np.allclose(first, other)
  else:
    np.testing.assert_array_equal(first, other)


def test_dpm_solver_first_order_steps_equal_ddim():
  """With two steps both are first order, where DPM-Solver++ is DDIM (eta = 0) exactly."""
  x_T = jax.random.normal(jax.random.key(0), (1, 8, 8, 3))
  kwargs = dict(schedule=SCHEDULE, timesteps=(300, 1500), return_trajectory=True)
  _, ddim = samplers.sample(toy_eps, x_T, jax.random.key(1), sampler="ddim", **kwargs)
  _, dpm = samplers.sample(toy_eps, x_T, jax.random.key(1), sampler="dpm_solver_pp", **kwargs)
  np.testing.assert_allclose(dpm.xs, ddim.xs, rtol=1e-5, atol=1e-6)


def test_sampler_names_and_options_are_checked():
  x_T = jnp.zeros((1, 4, 4, 3))
  with pytest.raises(ValueError, match="unknown sampler"):
    samplers.sample(toy_eps, x_T, jax.random.key(0), schedule=SCHEDULE, sampler="euler")
  with pytest.raises(ValueError, match="eta"):
    samplers.sample(toy_eps, x_T, jax.random.key(0), schedule=SCHEDULE, sampler="ddpm", eta=1.0)


# Data x0 ~ N(MU, SIGMA^2) per channel: the optimal noise predictor is known in closed form.
MU = jnp.asarray([0.3, -0.2, 0.1])
SIGMA = jnp.asarray([0.15, 0.18, 0.1])


def gaussian_eps(x: jax.Array, noise_level: jax.Array) -> jax.Array:
  """E[eps | x_t] = sqrt(1 - g^2) (x_t - g mu) / (g^2 s^2 + 1 - g^2) for x0 ~ N(mu, s^2)."""
  g = noise_level[:, None, None, None]
  return jnp.sqrt(1 - g**2) * (x - g * MU) / (g**2 * SIGMA**2 + 1 - g**2)


def ode_map_error(sampler: str, steps: int, skip: str) -> float:
  """Largest error of a deterministic sampler's affine map x_T -> x0 against the exact ODE map.

  The probability-flow ODE keeps (x_t - g mu) / sqrt(g^2 s^2 + 1 - g^2) constant, so started at
  alpha_bar a it maps x_T to mu + s (x_T - sqrt(a) mu) / sqrt(a s^2 + 1 - a); the sampler's map is
  read from x_T = 0 and x_T = 1. Returns the error of the slope relative to s.
  """
  x_T = jnp.stack([jnp.zeros((1, 1, 3)), jnp.ones((1, 1, 3))])
  timesteps = samplers.timestep_sequence(SCHEDULE, steps, skip)
  out = samplers.sample(gaussian_eps, x_T, jax.random.key(0), schedule=SCHEDULE, sampler=sampler,
                        timesteps=timesteps)[:, 0, 0]
  a = SCHEDULE.alphas_cumprod[timesteps[-1]]
  slope = SIGMA / jnp.sqrt(a * SIGMA**2 + 1 - a)
  np.testing.assert_allclose(out[0], MU - slope * jnp.sqrt(a) * MU, atol=1e-3)
  return float(jnp.max(jnp.abs(out[1] - out[0] - slope) / SIGMA))


def test_deterministic_samplers_solve_the_gaussian_ode():
  """DDIM converges to the exact map (first order); DPM-Solver++ beats DDIM-50 in 10 steps."""
  ddim_50 = ode_map_error("ddim", 50, "uniform")
  assert ode_map_error("ddim", 2000, "uniform") < 0.01 < 0.1 < ddim_50
  assert ode_map_error("dpm_solver_pp", 10, "logsnr") < ddim_50 / 4
  assert ode_map_error("dpm_solver_pp", 20, "logsnr") < 0.03
  assert ode_map_error("dpm_solver_pp", 100, "logsnr") < 0.002


@pytest.mark.parametrize("name,steps,skip", [("ddim", 2000, "uniform"), ("ddpm", 2000, "uniform"),
                                             ("dpm_solver_pp", 20, "logsnr")])
def test_samples_have_the_data_distribution(name, steps, skip):
  x_T = jax.random.normal(jax.random.key(0), (8, 32, 32, 3))
  out = jax.jit(partial(samplers.sample, gaussian_eps, schedule=SCHEDULE, sampler=name,
                        steps=steps, skip=skip))(x_T, jax.random.key(1))
  np.testing.assert_allclose(jnp.mean(out, axis=(0, 1, 2)), MU, atol=0.01)
  np.testing.assert_allclose(jnp.std(out, axis=(0, 1, 2)), SIGMA, rtol=0.05)


@pytest.mark.parametrize("name", ["ddim", "ddpm", "dpm_solver_pp"])
def test_under_vmap_and_an_outer_jit(name):
  """vmap over start noises and keys equals a loop; a jit with the schedule as argument works."""
  x_T = jax.random.normal(jax.random.key(0), (3, 2, 8, 8, 3))
  rngs = jax.random.split(jax.random.key(1), 3)
  eta = 0.5 if name == "ddim" else 0.0

  def run(schedule, x, rng):
    return samplers.sample(gaussian_eps, x, rng, schedule=schedule, sampler=name, steps=10,
                           eta=eta)

  single = jax.jit(run)
  batched = jax.jit(jax.vmap(run, in_axes=(None, 0, 0)))(SCHEDULE, x_T, rngs)
  for i in range(3):
    np.testing.assert_allclose(batched[i], single(SCHEDULE, x_T[i], rngs[i]), atol=1e-5)
  assert not np.allclose(batched[0], batched[1])


def test_sampling_overrides_keep_the_defaults_they_do_not_name():
  run = samplers.Sampling("ddim", 20, "uniform")
  assert run.with_overrides() == run
  assert run.with_overrides(steps=7) == samplers.Sampling("ddim", 7, "uniform")
  assert run.with_overrides("dpm_solver_pp") == samplers.Sampling("dpm_solver_pp", 20, "logsnr")
  assert run.with_overrides("ddpm", skip="quad") == samplers.Sampling("ddpm", 20, "quad")
  assert samplers.Sampling("ddim", 5, eta=1.0).with_overrides("ddpm").eta == 0
  # Without a skip, each sampler takes its own spacing: the student the one it was distilled at.
  assert [samplers.Sampling(name, 4).skip for name in ("ddim", "dpm_solver_pp", "student")] == [
      "uniform", "logsnr", "trailing"]
  for bad, match in [(dict(sampler="euler"), "unknown sampler"), (dict(skip="cosine"),
                     "unknown skip"), (dict(steps=0), "steps"), (dict(eta=-1.0), "eta"),
                     (dict(sampler="ddpm", eta=0.5), "'ddim' only")]:
    with pytest.raises(ValueError, match=match):
      samplers.Sampling(**bad)


def test_step_noise_comes_from_the_noise_function():
  """DDPM and DDIM with eta > 0 draw each step's noise through ``noise``; DDIM with eta 0 and
  DPM-Solver++ never call it."""
  x_T = jax.random.normal(jax.random.key(0), (1, 4, 4, 3))
  calls = []

  def noise(key, shape, dtype):
    calls.append(shape)
    return jnp.zeros(shape, dtype)

  options = dict(schedule=SCHEDULE, steps=3, noise=noise)
  quiet = samplers.sample(toy_eps, x_T, jax.random.key(1), sampler="ddpm", **options)
  assert calls == [x_T.shape]  # traced once, inside the scan
  no_noise = samplers.sample(toy_eps, x_T, jax.random.key(1), sampler="ddpm", schedule=SCHEDULE,
                             steps=3, noise=lambda key, shape, dtype: jnp.zeros(shape, dtype))
  np.testing.assert_array_equal(quiet, no_noise)
  noisy = samplers.sample(toy_eps, x_T, jax.random.key(1), sampler="ddpm", schedule=SCHEDULE,
                          steps=3)
  assert float(jnp.abs(noisy - quiet).max()) > 1e-3
  calls.clear()
  for sampler, eta in (("ddim", 0.0), ("dpm_solver_pp", 0.0)):
    samplers.sample(toy_eps, x_T, jax.random.key(1), sampler=sampler, eta=eta, **options)
  assert calls == [x_T.shape]  # DDIM traces the update's z, multiplied by c1 = 0
