"""The fidelity dial ``strength``: the chain starts part-way, from the noised prior, in every
sampler and through every entry point (API, factory, tiled, upsample, evaluate's settings)."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from conftest import load_fixture
from neurop_jax.cli.upsample import main as upsample_main
from neurop_jax.cli.upsampling import upsample
from neurop_jax.data import read_image, write_image
from neurop_jax.diffusion.formulation import Formulation
from neurop_jax.diffusion.samplers import (Sampling, alpha_bar_at, sample_conditioned,
                                           start_state, strength_timesteps, timestep_sequence)
from neurop_jax.diffusion.schedule import make_schedule
from neurop_jax.errors import InputError
from neurop_jax.inference.api import make_super_resolver, prior_only, super_resolve
from neurop_jax.inference.run import Run
from neurop_jax.inference.tiled import super_resolve_tiled
from neurop_jax.models import make_model

FORMULATIONS = [Formulation(), Formulation("x0", "residual", 4.0)]


@pytest.fixture(scope="module")
def micro_run() -> Run:
  fixture = load_fixture("micro")
  return Run(make_model(fixture.cfg), fixture.params)


@pytest.fixture(scope="module")
def lr() -> np.ndarray:
  return np.random.default_rng(0).random((1, 9, 11, 3), dtype=np.float32)


def test_strength_runs_its_share_of_the_steps():
  seq = timestep_sequence(make_schedule(), 50)
  assert strength_timesteps(seq, 1.0) == seq
  assert strength_timesteps(seq, 0.3) == seq[:15] == tuple(range(0, 600, 40))
  assert strength_timesteps(seq, 0.0) == ()
  assert len(strength_timesteps(seq, 0.01)) == 0 and len(strength_timesteps(seq, 0.02)) == 1
  with pytest.raises(ValueError, match="strength must be in"):
    strength_timesteps(seq, 1.5)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "dpm_solver_pp"])
@pytest.mark.parametrize("formulation", FORMULATIONS, ids=lambda f: f"{f.target}-{f.space}")
def test_each_sampler_starts_from_the_noised_prior(sampler, formulation):
  """A stand-in network that records its inputs: strength 0.4 of 10 steps makes 4 calls, the
  first at the level of step 4 of the chain on start_state(prior's own sample); strength 1 is
  the call without a strength, bit for bit; strength 0 the clipped prior, with no call."""
  schedule = make_schedule()
  rng = np.random.default_rng(1)
  prior = jax.numpy.asarray(rng.uniform(-1.2, 1.2, (1, 6, 5, 3)), jax.numpy.float32)
  x_T = jax.numpy.asarray(rng.standard_normal((1, 6, 5, 3)), jax.numpy.float32)
  calls = []

  def net_fn(x, g):
    calls.append((x, g))
    return 0.5 * x + 0.1 * prior

  options = dict(schedule=schedule, formulation=formulation, sampler=sampler, steps=10,
                 skip="uniform", return_trajectory=True)
  key = jax.random.key(0)
  whole, _ = sample_conditioned(net_fn, prior, x_T, key, **options)
  calls.clear()
  one, _ = sample_conditioned(net_fn, prior, x_T, key, strength=1.0, **options)
  np.testing.assert_array_equal(one, whole)
  calls.clear()
  part, trajectory = sample_conditioned(net_fn, prior, x_T, key, strength=0.4, **options)
  seq = timestep_sequence(schedule, 10)[:4]
  start = formulation.to_space(prior, prior)
  np.testing.assert_array_equal(trajectory.xs[0], start_state(x_T, start, schedule, seq))
  np.testing.assert_allclose(trajectory.xs[0], np.sqrt(alpha_bar_at(schedule, seq[-1])) * start
                             + np.sqrt(1 - alpha_bar_at(schedule, seq[-1])) * x_T, rtol=1e-6)
  assert trajectory.x0_preds.shape[0] == 4
  assert not np.allclose(part, whole)
  calls.clear()
  none, trajectory = sample_conditioned(net_fn, prior, x_T, key, strength=0.0, **options)
  assert not calls and trajectory.x0_preds.shape[0] == 0
  np.testing.assert_array_equal(none, np.clip(prior, -1, 1))


@pytest.mark.parametrize("formulation", [
    FORMULATIONS[0], pytest.param(FORMULATIONS[1], marks=pytest.mark.slow)],  # 3 programs: 15 s
    ids=lambda f: f"{f.target}-{f.space}")
def test_strength_zero_is_the_prior_and_one_the_paper_chain(micro_run, lr, formulation):
  run = dataclasses.replace(micro_run, formulation=formulation)
  options = dict(scale=2.5, rng=jax.random.key(3), sampler="ddim", steps=4)
  np.testing.assert_array_equal(super_resolve(run, lr, strength=0.0, **options),
                                prior_only(run, lr, scale=2.5))
  np.testing.assert_array_equal(super_resolve(run, lr, strength=1.0, **options),
                                super_resolve(run, lr, **options))
  half = super_resolve(run, lr, strength=0.5, **options)
  resolver = make_super_resolver(run, lr_shape=lr.shape, scale=2.5, sampler="ddim", steps=4,
                                 strength=0.5)
  np.testing.assert_array_equal(resolver(run.params, lr, jax.random.key(3)), half)


def test_the_runs_strength_is_the_default_and_the_callers_wins(micro_run, lr):
  options = dict(scale=2, rng=jax.random.key(4), sampler="ddim", steps=4)
  run = dataclasses.replace(micro_run, sampling=Sampling("ddim", 4, strength=0.5))
  np.testing.assert_array_equal(super_resolve(run, lr, **options),
                                super_resolve(micro_run, lr, strength=0.5, **options))
  np.testing.assert_array_equal(super_resolve(run, lr, strength=0.0, **options),
                                prior_only(run, lr, scale=2))


@pytest.mark.slow  # compiles the tiled sampler twice and the untiled one: about 15 s
def test_tiled_strength_is_the_untiled_one_on_one_tile(micro_run, lr):
  options = dict(rng=jax.random.key(5), sampler="ddpm", steps=4, strength=0.5)
  tiled = super_resolve_tiled(micro_run, lr, scale=2, tile=32, overlap=8, progress=False,
                              **options)
  np.testing.assert_allclose(tiled, super_resolve(micro_run, lr, scale=2, **options), atol=1e-4)
  zero = super_resolve_tiled(micro_run, lr, scale=2, tile=16, overlap=4, progress=False,
                             **dict(options, strength=0.0))
  np.testing.assert_allclose(zero, prior_only(micro_run, lr, scale=2), atol=1e-5)


@pytest.mark.parametrize("strength", [-0.1, 1.01, float("nan"), True])
def test_a_strength_outside_zero_one_is_refused(micro_run, lr, strength):
  with pytest.raises(InputError, match="strength must be a number in"):
    super_resolve(micro_run, lr, scale=2, rng=jax.random.key(0), strength=strength)


@pytest.mark.slow  # three upsample programs: about 10 s
def test_upsample_at_strength_zero_writes_the_prior(micro_run, tmp_path):
  source = tmp_path / "scene.png"
  write_image(source, np.random.default_rng(6).random((12, 10, 3)))
  options = dict(scale=2, run=micro_run, progress=False, tile=16, overlap=4)
  [prior] = upsample([source], tmp_path / "prior", prior_only=True, **options)
  [zero] = upsample([source], tmp_path / "zero", strength=0.0, sampler="ddim", steps=4, **options)
  [half] = upsample([source], tmp_path / "half", strength=0.5, sampler="ddim", steps=4, **options)
  assert np.abs(read_image(zero) - read_image(prior)).max() <= 1 / 255 + 1e-6
  assert np.abs(read_image(half) - read_image(prior)).max() > 2 / 255


def test_upsample_refuses_a_strength_outside_zero_one(tmp_path, capsys):
  source = tmp_path / "scene.png"
  write_image(source, np.zeros((12, 10, 3)))
  status = upsample_main([str(source), "--scale", "2", "--out", str(tmp_path / "out"),
                          "--checkpoint", str(tmp_path / "absent.npz"), "--strength", "1.5"])
  err = capsys.readouterr().err
  assert status == 1 and err.count("\n") == 1, err
  assert "--strength must be in [0, 1], got 1.5" in err
  assert not (tmp_path / "out").exists()
