"""The distilled student: a closed-form Gaussian teacher distilled exactly, training through the
loop with an exact resume, and ``sampler='student'`` through every entry point."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import load_config
from neurop_jax.diffusion.formulation import Formulation
from neurop_jax.diffusion.samplers import sample_conditioned, timestep_sequence
from neurop_jax.diffusion.schedule import make_schedule
from neurop_jax.evaluation.evaluate import evaluate
from neurop_jax.inference.api import make_super_resolver, super_resolve
from neurop_jax.inference.run import load_run
from neurop_jax.inference.tiled import super_resolve_tiled
from neurop_jax.io import checkpoints
from neurop_jax.io.images import read_image, write_image
from neurop_jax.training import distill
from neurop_jax.training import loop as train
from neurop_jax.training.state import create_train_state
from neurop_jax.upsample import main as upsample_main

MU, SIGMA = 0.2, 0.1  # the Gaussian data of the known-answer test: x0 ~ N(MU, SIGMA^2) per value
STEPS = (1, 2, 4)


def _gaussian_teacher(x, g):
  """The exact x0-predictor of Gaussian data: E[x0 | x_t] = MU + sqrt(a) S^2 / (a S^2 + 1 - a)
  (x_t - sqrt(a) MU), a = g^2."""
  a = (g * g)[:, None, None, None]
  return MU + jnp.sqrt(a) * SIGMA**2 / (a * SIGMA**2 + 1 - a) * (x - jnp.sqrt(a) * MU)


def _affine_student(levels):
  """A student affine in x_t at each of ``levels`` (its noise levels): output w_k x_t + c_k, with
  k the level nearest g; params {'params': {'student': {'w': (L,), 'c': (L,)}}}."""
  def denoise(params, x, g, prior):
    p = params["params"]["student"]
    k = jnp.argmin(jnp.abs(levels[None, :] - g[:, None]), axis=1)
    return p["w"][k][:, None, None, None] * x + p["c"][k][:, None, None, None]
  return denoise


def test_a_perfectly_distilled_gaussian_teacher_is_reproduced_at_1_2_and_4_steps():
  """The teacher (exact denoiser, 50 DDIM steps) maps x_T affinely; a student affine per level can
  match it exactly at every step count at once (each perfect evaluation keeps DDIM's (x0, eps)
  pair). Distilled by ``distill_step`` from the teacher's output alone, it reproduces the
  teacher at 1, 2 and 4 steps, on noise it never saw; the teacher's own 4 DDIM steps do not."""
  schedule, formulation = make_schedule(), Formulation(target="x0")
  levels = jnp.asarray(sorted({t for n in STEPS for t in timestep_sequence(schedule, n,
                                                                           "trailing")}))
  levels = schedule.sqrt_alphas_cumprod_prev[levels + 1]
  teacher = jax.jit(lambda x_T, n, skip: sample_conditioned(
      _gaussian_teacher, jnp.zeros_like(x_T), x_T, jax.random.key(0), schedule=schedule,
      formulation=formulation, timesteps=timestep_sequence(schedule, n, skip)),
      static_argnums=(1, 2))
  denoise = _affine_student(levels)
  rate = optax.cosine_decay_schedule(3e-2, 1200)  # L1's gradients do not shrink: the rate must
  tx = optax.adam(rate)
  step = jax.jit(lambda state, batch: distill.distill_step(
      state, batch, jax.random.key(0), denoise=denoise, tx=tx, schedule=rate,
      ema_decay=0.0, noise=schedule, formulation=formulation, steps=STEPS, teacher_weight=1.0,
      hr_weight=0.0))
  params = {"w": jnp.ones(len(levels)) * 0.5, "c": jnp.zeros(len(levels))}
  state = create_train_state(params, tx)
  for i in range(1200):
    x_T = jax.random.normal(jax.random.key(i), (4, 4, 4, 1))
    target = teacher(x_T, 50, "uniform")
    state, _ = step(state, {"x_T": x_T, "prior": jnp.zeros_like(x_T), "teacher": target,
                            "hr": (target + 1) / 2})
  x_T = jax.random.normal(jax.random.key(-1), (8, 4, 4, 1))
  reference = teacher(x_T, 50, "uniform")
  wrapped = {"params": {"student": state.params}}
  for n in STEPS:
    student = distill.student_image(denoise, wrapped, jnp.zeros_like(x_T), x_T,
                                    schedule=schedule, formulation=formulation, steps=n)
    np.testing.assert_allclose(student, reference, atol=2e-3)
  assert float(jnp.max(jnp.abs(teacher(x_T, 4, "trailing") - reference))) > 0.02


def _distill_config(num_steps=3):
  """The distillation stage of the quickstart's test config, its steps under
  ``jax.transfer_guard('disallow')`` as ``conftest.trained_config``'s."""
  config = load_config("quickstart", "test,distill")
  config.distill.num_steps = num_steps
  config.transfer_guard = "disallow"
  return config


def _states_and_losses(workdir):
  manager = checkpoints.stage_manager(checkpoints.checkpoint_dir(workdir, "student"),
                                      read_only=True)
  state = checkpoints.restore_items(manager, manager.latest_step(), ("state",))["state"]
  records = [json.loads(line) for line in (workdir / "student" / "metrics.jsonl").open()]
  return state, [(r["step"], r["loss"]) for r in records if r["kind"] == "train"]


@pytest.fixture(scope="module")
def distilled_workdir(trained_workdir, tmp_path_factory):
  """``trained_workdir`` with a student distilled for 3 steps (``:test,distill``)."""
  workdir = tmp_path_factory.mktemp("distilled") / "run"
  shutil.copytree(trained_workdir, workdir)
  train.train_and_evaluate(_distill_config(), workdir)
  return workdir


def test_distillation_leaves_checkpoints_grids_and_resumes_exactly(distilled_workdir, tmp_path):
  """The student stage starts from the teacher's EMA UNet, writes its pairs, checkpoints, records
  (TensorBoard too) and a grid with the teacher beside the student; stopped after 2 steps and
  run again, it ends bit-identical to the uninterrupted run (the pairs are made again, equal)."""
  student = distilled_workdir / "student"
  assert (student / "pairs.npz").is_file() and list((student / "tensorboard").iterdir())
  grid = read_image(student / "samples" / "step_00000003.png")
  assert grid.shape[1] > 4 * grid.shape[0]  # LR-bicubic | prior | teacher | student | HR
  val = [json.loads(line) for line in (student / "metrics.jsonl").open()][-1]
  assert {"psnr", "lpips", "teacher_psnr", "teacher_lpips", "prior_psnr"} <= set(val)

  workdir = tmp_path / "run"
  shutil.copytree(distilled_workdir, workdir, ignore=shutil.ignore_patterns("student"))
  config = _distill_config()
  config.max_steps_per_run = 2
  train.train_and_evaluate(config, workdir)
  (workdir / "student" / "pairs.npz").unlink()
  train.train_and_evaluate(_distill_config(), workdir)
  (state, losses), (reference, reference_losses) = (_states_and_losses(workdir),
                                                    _states_and_losses(distilled_workdir))
  jax.tree.map(np.testing.assert_array_equal, state, reference)
  assert losses == reference_losses


def test_the_student_through_every_entry_point(distilled_workdir, trained_workdir, tmp_path,
                                               capsys):
  """A workdir with a student samples with it by default: super_resolve, make_super_resolver,
  the tiled call (one tile: the untiled result), K samples, upsample (which says so) and
  evaluate; a run without a student refuses sampler='student'."""
  run = load_run(distilled_workdir)
  assert run.has_student and run.sampling.sampler == "student" and run.student_step == 3
  lr = jax.random.uniform(jax.random.key(1), (1, 8, 8, 3))
  key = jax.random.key(2)
  default = super_resolve(run, lr, scale=2, rng=key)
  np.testing.assert_array_equal(default, super_resolve(run, lr, scale=2, rng=key,
                                                       sampler="student", steps=1))
  assert not np.array_equal(default, super_resolve(run, lr, scale=2, rng=key, sampler="ddim"))
  resolver = make_super_resolver(run, lr_shape=lr.shape, scale=2, sampler="student", steps=2)
  two = resolver(run.params, lr, key)
  assert two.shape == (1, 16, 16, 3) and not np.array_equal(two, default)
  tiled = super_resolve_tiled(run, np.asarray(lr), scale=2, rng=key, tile=32, overlap=8)
  np.testing.assert_allclose(tiled, default, atol=1e-5)
  mean, std = super_resolve(run, lr, scale=2, rng=key, samples=2)
  assert mean.shape == std.shape == (1, 16, 16, 3) and float(std.max()) > 0

  image = tmp_path / "scene.png"
  write_image(image, np.asarray(lr[0]))
  status = upsample_main([str(image), "--scale", "2", "--out", str(tmp_path / "out"),
                          "--workdir", str(distilled_workdir), "--tile", "32", "--overlap", "8"])
  err = capsys.readouterr().err
  assert status == 0, err
  assert "the distilled student of" in err and "(1 steps, step 3)" in err
  assert read_image(tmp_path / "out" / "scene_x2.png").shape == (16, 16, 3)

  config = load_config("quickstart", "test")
  config.evaluate.sampler = "student"
  config.evaluate.steps = 1
  report = evaluate(config, distilled_workdir)
  assert report["sampling"]["sampler"] == "student"

  teacher_only = load_run(trained_workdir)
  with pytest.raises(ValueError, match="needs a distilled student.*:distill"):
    super_resolve(teacher_only, lr, scale=2, rng=key, sampler="student")
