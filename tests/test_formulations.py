"""Each stage-2 formulation (target x space) trains through ``main`` and samples through the API,
the tiled path and the upsample command's setup; the paper configs keep the paper's formulation."""

from __future__ import annotations

import concurrent.futures
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import load_config
from neurop_jax.io.checkpoints import restore_inference_params, restore_sampling
from neurop_jax.diffusion.schedule import make_schedule
from neurop_jax.inference.api import super_resolve
from neurop_jax.models import make_model
from neurop_jax.diffusion.formulation import SPACES, TARGETS, Formulation
from neurop_jax.inference.tiled import super_resolve_tiled

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["ucm", "aid", "rsscn7"])
def test_paper_configs_keep_the_paper_formulation(name):
  cfg = load_config(name).diffusion
  assert Formulation.from_config(cfg) == Formulation("eps", "image")
  assert (cfg.schedule, cfg.num_timesteps, cfg.beta_start, cfg.beta_end, cfg.loss) == (
      "linear", 2000, 1e-6, 0.01, "l1")


def _train(workdir: pathlib.Path, prior: pathlib.Path, target: str,
           space: str) -> subprocess.CompletedProcess:
  return subprocess.run(
      [sys.executable, "-m", "neurop_jax.main", "--config", "configs/quickstart.py:test,diffusion",
       "--workdir", str(workdir), f"--config.diffusion.prior_checkpoint={prior}",
       f"--config.diffusion.target={target}", f"--config.diffusion.space={space}",
       "--config.diffusion.residual_scale=2.0", "--config.diffusion.num_steps=2"],
      cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True,
      timeout=900)


@pytest.fixture(scope="module")
def formulation_runs(trained_workdir, tmp_path_factory):
  """Every formulation's stage-2 run through ``main``, two at a time in the background (their time
  is mostly single-threaded compilation): ``(target, space) -> future of the finished process``,
  its workdir ``<root>/<target>-<space>``."""
  root = tmp_path_factory.mktemp("formulations")
  with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
    yield root, {(t, s): pool.submit(_train, root / f"{t}-{s}", trained_workdir, t, s)
                 for t in TARGETS for s in SPACES}


@pytest.mark.parametrize("space", SPACES)
@pytest.mark.parametrize("target", TARGETS)
def test_formulation_trains_through_main_and_samples(target, space, formulation_runs):
  root, runs = formulation_runs
  result, workdir = runs[target, space].result(), root / f"{target}-{space}"
  assert result.returncode == 0, result.stderr[-4000:]
  records = [json.loads(line) for line in (workdir / "diffusion" / "metrics.jsonl").open()]
  losses = [r["loss"] for r in records if r["kind"] == "train"]
  assert len(losses) == 2 and np.all(np.isfinite(losses))
  val = [r for r in records if r["kind"] == "val"][-1]
  for name in ("psnr", "ssim", "lpips", "prior_psnr", "prior_ssim", "prior_lpips",
               "bicubic_lpips"):
    assert np.isfinite(val[name]), name

  schedule, formulation = restore_sampling(workdir)
  assert formulation == Formulation(target, space, 2.0)
  np.testing.assert_array_equal(schedule.alphas_cumprod, make_schedule().alphas_cumprod)

  model_cfg, params = restore_inference_params(workdir)
  model = make_model(model_cfg)
  lr = np.random.default_rng(0).random((1, 10, 12, 3), dtype=np.float32)
  options = dict(sampler="dpm_solver_pp", steps=3, skip="logsnr", schedule=schedule,
                 formulation=formulation)
  out = np.asarray(super_resolve(model, params, lr, scale=3.2, rng=jax.random.key(0), **options))
  assert out.shape == (1, 32, 38, 3) and np.isfinite(out).all()
  assert 0 <= out.min() and out.max() <= 1 and out.std() > 0.01
  tiled = super_resolve_tiled(model, params, lr[0], (32, 38), rng=jax.random.key(0), tile=24,
                              overlap=8, progress=False, **options)
  assert tiled.shape == (32, 38, 3) and np.isfinite(tiled).all()
  assert 0 <= tiled.min() and tiled.max() <= 1 and tiled.std() > 0.01
