"""Each stage-2 formulation (target x space) trains and samples through the API and the tiled path:
one through ``python -m neurop_jax.main`` (in the background), the others in-process; the paper
configs keep the paper's formulation."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import load_config
from neurop_jax.diffusion.formulation import SPACES, TARGETS, Formulation
from neurop_jax.diffusion.schedule import make_schedule
from neurop_jax.inference.api import super_resolve
from neurop_jax.inference.run import load_run
from neurop_jax.inference.tiled import super_resolve_tiled
from neurop_jax.training import loop as train

ROOT = pathlib.Path(__file__).resolve().parent.parent
CLI = ("v", "residual")
"""The formulation trained through the command line; the last one tested, so that its process
runs beside the in-process ones."""
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


def _train_in_process(workdir: pathlib.Path, prior: pathlib.Path, target: str, space: str) -> None:
  """What the command line of ``cli_run`` does, for another formulation."""
  config = load_config("quickstart", "test,diffusion")
  config.diffusion.update(OVERRIDES, prior_checkpoint=str(prior), target=target, space=space)
  train.train_and_evaluate(config, workdir)


@pytest.mark.slow  # each 30-55 s on a quiet 2-core CPU, more when it is shared; 3.5 min in all
@pytest.mark.parametrize("space", SPACES)
@pytest.mark.parametrize("target", TARGETS)
def test_formulation_trains_and_samples(target, space, cli_run, trained_workdir, tmp_path):
  if (target, space) == CLI:
    workdir, process, stderr = cli_run
    assert process.wait(timeout=900) == 0, stderr.read_text()[-4000:]
  else:
    workdir = tmp_path / f"{target}-{space}"
    _train_in_process(workdir, trained_workdir, target, space)
  records = [json.loads(line) for line in (workdir / "diffusion" / "metrics.jsonl").open()]
  losses = [r["loss"] for r in records if r["kind"] == "train"]
  assert len(losses) == 2 and np.all(np.isfinite(losses))
  val = [r for r in records if r["kind"] == "val"][-1]
  for name in ("psnr", "ssim", "lpips", "prior_psnr", "prior_ssim", "prior_lpips",
               "bicubic_lpips"):
    assert np.isfinite(val[name]), name

  run = load_run(workdir)
  assert run.formulation == Formulation(target, space, 2.0)
  np.testing.assert_array_equal(run.schedule.alphas_cumprod, make_schedule().alphas_cumprod)
  lr = np.random.default_rng(0).random((1, 10, 12, 3), dtype=np.float32)
  options = dict(rng=jax.random.key(0), sampler="dpm_solver_pp", steps=3, skip="logsnr")
  out = np.asarray(super_resolve(run, lr, scale=3.2, **options))
  assert out.shape == (1, 32, 38, 3) and np.isfinite(out).all()
  assert 0 <= out.min() and out.max() <= 1 and out.std() > 0.01
  tiled = super_resolve_tiled(run, lr, out_shape=(32, 38), tile=24, overlap=8, progress=False,
                              **options)
  assert tiled.shape == (1, 32, 38, 3) and np.isfinite(tiled).all()
  assert 0 <= tiled.min() and tiled.max() <= 1 and tiled.std() > 0.01
