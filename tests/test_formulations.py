"""Each stage-2 formulation (target x space) trains and samples: one end to end through
``python -m neurop_jax.main`` (in the background: validation, checkpoints, ``load_run``, the API and
the tiled path), the others through stage 2's train step and ``super_resolve`` in-process; the
paper configs keep the paper's formulation."""

from __future__ import annotations

import functools
import itertools
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import load_config, load_fixture
from neurop_jax.diffusion.formulation import SPACES, TARGETS, Formulation
from neurop_jax.diffusion.schedule import make_schedule, schedule_from_config
from neurop_jax.inference.api import super_resolve
from neurop_jax.inference.run import Run, load_run
from neurop_jax.inference.tiled import super_resolve_tiled
from neurop_jax.models import compute_prior, make_model
from neurop_jax.training.state import create_train_state, make_optimizer, step_schedule
from neurop_jax.evaluation import lpips
from neurop_jax.training import loop as train
from neurop_jax.training.steps import diffusion_step

ROOT = pathlib.Path(__file__).resolve().parent.parent
CLI = ("v", "residual")
"""The formulation trained through the command line; its process starts with the first test that
asks for ``cli_run`` and runs beside the others."""
OVERRIDES = dict(residual_scale=2.0, num_steps=2)
"""``config.diffusion`` fields every formulation's run sets besides its target and space."""


@pytest.mark.parametrize("name", ["ucm", "aid", "rsscn7"])
def test_paper_configs_keep_the_paper_formulation(name):
  cfg = load_config(name).diffusion
  assert Formulation.from_config(cfg) == Formulation("eps", "image")
  assert (cfg.schedule, cfg.num_timesteps, cfg.beta_start, cfg.beta_end, cfg.loss) == (
      "linear", 2000, 1e-6, 0.01, "l1")


@pytest.fixture(scope="module")
def cli_run(trained_workdir, tmp_path_factory):
  """``(workdir, process, stderr)``: stage 2 of the ``CLI`` formulation started through ``main``,
  its stderr going to the file ``stderr``."""
  root = tmp_path_factory.mktemp("formulation_cli")
  overrides = dict(OVERRIDES, prior_checkpoint=trained_workdir, target=CLI[0], space=CLI[1])
  with (root / "stderr.txt").open("w") as stderr:
    process = subprocess.Popen(
        [sys.executable, "-m", "neurop_jax.main", "--config",
         "configs/quickstart.py:test,diffusion", "--workdir", str(root / "run"),
         *(f"--config.diffusion.{k}={v}" for k, v in overrides.items())],
        cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"), stdout=subprocess.DEVNULL,
        stderr=stderr)
  yield root / "run", process, root / "stderr.txt"
  if process.poll() is None:
    process.kill()
  process.wait()


@pytest.fixture(scope="module")
def micro():
  """``(model, params, batch)``: the micro model with a two-level UNet (a third fewer layers than
  the preset's three, so each formulation's train step compiles faster), the original's random
  operator weights (the parity fixture) and random UNet weights (drawn from the shapes, no init to
  compile), and a batch of two 32x32 HR images (LPIPS needs 31) with their prior."""
  fixture = load_fixture("micro")
  cfg = fixture.cfg.copy_and_resolve_references()
  cfg.unet.update(channel_mults=(1, 2), attn_res=(16,))
  model = make_model(cfg)
  x = jnp.zeros((1, 32, 32, 3))
  shapes = jax.eval_shape(lambda r: model.init(r, x, jnp.ones((1,)), x, method=model.denoise),
                          jax.random.key(0))["params"]["unet"]
  rng = np.random.default_rng(0)
  unet = jax.tree.map(lambda s: (0.1 * rng.standard_normal(s.shape)).astype(np.float32), shapes)
  params = {"params": {"operator": fixture.params["params"]["operator"], "unet": unet}}
  lr = np.random.default_rng(1).random((2, 8, 8, 3), dtype=np.float32)
  hr = np.random.default_rng(2).random((2, 32, 32, 3), dtype=np.float32)
  prior = compute_prior(model, params, lr, (32, 32))
  return model, params, {"hr": hr, "prior": prior}


def _train_steps(micro, formulation: Formulation, steps: int = 2,
                 lpips_weight: float = 0.0) -> tuple[Run, list[dict]]:
  """``steps`` of stage 2's train step for ``formulation``, as ``train_and_evaluate`` builds it,
  from ``micro``'s weights: the run with the trained UNet, and each step's metrics."""
  model, params, batch = micro
  cfg = load_config("quickstart", "test,diffusion").diffusion
  cfg.update(OVERRIDES, target=formulation.target, space=formulation.space)
  schedule = step_schedule(cfg.learning_rates, cfg.learning_rate_every)
  tx = make_optimizer(cfg, schedule)
  step = jax.jit(functools.partial(
      diffusion_step, model=model, tx=tx, schedule=schedule, ema_decay=cfg.ema_decay,
      noise=schedule_from_config(cfg), loss=cfg.loss, per_sample_t=cfg.per_sample_t,
      formulation=Formulation.from_config(cfg), lpips_weight=lpips_weight,
      perceptual=train._perceptual(lpips_weight)))
  state = create_train_state(params["params"]["unet"], tx)
  records = []
  for n in range(steps):
    state, metrics = step(state, batch, jax.random.key(n))
    records.append({k: float(v) for k, v in metrics.items()})
  trained = {"params": {"operator": params["params"]["operator"], "unet": state.params}}
  return Run(model, trained, formulation=formulation), records


def _check_samples(run: Run, tiled: bool) -> None:
  """One DPM-Solver++ draw of a 10x12 input at x3.2 is finite, in [0, 1] and not flat; the same
  through the tiled path (3 tiles) when ``tiled``."""
  lr = np.random.default_rng(0).random((1, 10, 12, 3), dtype=np.float32)
  options = dict(rng=jax.random.key(0), sampler="dpm_solver_pp", steps=3, skip="logsnr")
  outputs = [super_resolve(run, lr, scale=3.2, **options)]
  if tiled:
    outputs.append(super_resolve_tiled(run, lr, out_shape=(32, 38), tile=24, overlap=8,
                                       progress=False, **options))
  for out in map(np.asarray, outputs):
    assert out.shape == (1, 32, 38, 3) and np.isfinite(out).all()
    assert 0 <= out.min() and out.max() <= 1 and out.std() > 0.01


@pytest.mark.slow  # compiles a train step and a sampler: 16 s each
@pytest.mark.parametrize("target, space", [f for f in itertools.product(TARGETS, SPACES)
                                           if f != CLI])
def test_formulation_trains_and_samples(target, space, micro):
  """Stage 2's train step for each formulation but ``CLI``'s (trained end to end below)."""
  formulation = Formulation(target, space, OVERRIDES["residual_scale"])
  run, records = _train_steps(micro, formulation)
  assert np.all(np.isfinite([r["loss"] for r in records]))
  _check_samples(run, tiled=False)


@pytest.mark.slow  # compiles LPIPS's AlexNet into the train step: about 30 s
@pytest.mark.skipif(not lpips.available(), reason="the LPIPS weights (the lpips extra) are absent")
def test_a_perceptual_term_trains(micro):
  """``lpips_weight`` 0.5: the loss is the regression loss plus half the LPIPS term, both
  recorded, and the UNet moves away from where the regression loss alone takes it."""
  formulation = Formulation("x0", "residual", OVERRIDES["residual_scale"])
  run, records = _train_steps(micro, formulation, lpips_weight=0.5)
  plain, plain_records = _train_steps(micro, formulation)
  for r in records:
    assert np.isfinite(r["loss"]) and 0 < r["perceptual_loss"] < 2
    np.testing.assert_allclose(r["loss"], r["regression_loss"] + 0.5 * r["perceptual_loss"],
                               rtol=1e-6)
  np.testing.assert_allclose(records[0]["regression_loss"], plain_records[0]["loss"], rtol=1e-6)
  moved = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))),
                                       run.params["params"]["unet"],
                                       plain.params["params"]["unet"]))
  assert max(moved) > 1e-5


@pytest.mark.slow  # both stages through the command line, in the background: about a minute
def test_formulation_trains_end_to_end_through_the_command_line(cli_run):
  workdir, process, stderr = cli_run
  assert process.wait(timeout=900) == 0, stderr.read_text()[-4000:]
  records = [json.loads(line) for line in (workdir / "diffusion" / "metrics.jsonl").open()]
  losses = [r["loss"] for r in records if r["kind"] == "train"]
  assert len(losses) == 2 and np.all(np.isfinite(losses))
  val = [r for r in records if r["kind"] == "val"][-1]
  for name in ("psnr", "ssim", "lpips", "prior_psnr", "prior_ssim", "prior_lpips",
               "bicubic_lpips"):
    assert np.isfinite(val[name]), name

  run = load_run(workdir)
  assert run.formulation == Formulation(*CLI, OVERRIDES["residual_scale"])
  np.testing.assert_array_equal(run.schedule.alphas_cumprod, make_schedule().alphas_cumprod)
  _check_samples(run, tiled=True)
