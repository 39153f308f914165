"""Training end to end on the quickstart's ``:test`` variant: records, exact resume, clear errors.

Runs go through ``python -m neurop_jax.main`` in subprocesses sharing a persistent compilation
cache, so that only the first one compiles.
"""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from neurop_jax.io import checkpoints
from neurop_jax.training import loop as train
from neurop_jax.data import read_image

ROOT = pathlib.Path(__file__).resolve().parent.parent
STEPS = ("--config.operator.num_steps=3", "--config.diffusion.num_steps=3")


@pytest.fixture(scope="module")
def env():
  """The subprocesses' environment: CPU, and conftest's session-wide compilation cache."""
  return dict(os.environ, JAX_PLATFORMS="cpu")


def _train(workdir: pathlib.Path, env: dict, *overrides: str) -> subprocess.CompletedProcess:
  result = subprocess.run(
      [sys.executable, "-m", "neurop_jax.main", "--config", "configs/quickstart.py:test",
       "--workdir", str(workdir), *STEPS, *overrides],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-4000:]
  return result


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, env):
  workdir = tmp_path_factory.mktemp("uninterrupted")
  return workdir, _train(workdir, env)


def _records(workdir: pathlib.Path, stage: str, kind: str) -> list[dict]:
  lines = (workdir / stage / "metrics.jsonl").read_text().splitlines()
  return [r for r in map(json.loads, lines) if r["kind"] == kind]


def _final_state(workdir: pathlib.Path, stage: str) -> dict:
  manager = checkpoints.stage_manager(checkpoints.checkpoint_dir(workdir, stage), read_only=True)
  return checkpoints._restore_items(manager, 3, ("state",))["state"]


def test_both_stages_leave_checkpoints_logs_and_samples(uninterrupted):
  workdir, result = uninterrupted
  for stage, columns in (("operator", 3), ("diffusion", 4)):
    assert sorted(p.name for p in checkpoints.checkpoint_dir(workdir, stage).iterdir()) == ["2", "3"]
    assert [r["step"] for r in _records(workdir, stage, "train")] == [1, 2, 3]
    assert {"loss", "grad_norm", "lr", "steps_per_s"} <= set(_records(workdir, stage, "train")[0])
    val = _records(workdir, stage, "val")
    assert [r["step"] for r in val] == [2, 3]
    assert {"psnr", "ssim", "bicubic_psnr", "bicubic_ssim"} <= set(val[-1])
    assert list((workdir / stage / "tensorboard").glob("events.out.tfevents.*"))
    grid = read_image(workdir / stage / "samples" / "step_00000003.png")
    assert grid.shape[1] > (columns - 1) * grid.shape[0]  # one row: LR-bicubic, outputs, HR
  assert "prior_psnr" in _records(workdir, "diffusion", "val")[-1]
  assert "diffusion: 100%" in result.stderr
  assert "orbax" not in result.stderr and "atomicity.py" not in result.stderr

  model_cfg, params = checkpoints.restore_inference_params(workdir, "latest")
  assert model_cfg.unet.channel_mults == (1, 2, 4)
  _, operator, _ = checkpoints.restore_operator(workdir)
  jax.tree.map(np.testing.assert_array_equal, params["params"]["operator"], operator)
  unet = _final_state(workdir, "diffusion")["ema_params"]
  jax.tree.map(np.testing.assert_array_equal, params["params"]["unet"], unet)


def test_killed_and_resumed_equals_uninterrupted(uninterrupted, env, tmp_path):
  reference, _ = uninterrupted
  latest = lambda stage: checkpoints.stage_manager(
      checkpoints.checkpoint_dir(tmp_path, stage), read_only=True).latest_step()
  for expected in ((2, None), (3, 1), (3, 3)):  # stops inside stage 1, then inside stage 2
    _train(tmp_path, env, "--config.max_steps_per_run=2")
    assert (latest("operator"), latest("diffusion")) == expected
  for stage in ("operator", "diffusion"):
    jax.tree.map(np.testing.assert_array_equal, _final_state(tmp_path, stage),
                 _final_state(reference, stage))
    losses = lambda workdir: [(r["step"], r["loss"]) for r in _records(workdir, stage, "train")]
    assert losses(tmp_path) == losses(reference)


def _quickstart_config(arg: str):
  spec = importlib.util.spec_from_file_location("quickstart", ROOT / "configs" / "quickstart.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def test_stage_two_alone_needs_a_prior(tmp_path):
  config = _quickstart_config("test,diffusion")
  with pytest.raises(FileNotFoundError, match="needs a trained prior.*train stage 1 first"):
    train.train_and_evaluate(config, tmp_path)
  config.diffusion.prior_checkpoint = str(tmp_path / "missing.pth")
  with pytest.raises(FileNotFoundError, match="missing.pth does not exist"):
    train.train_and_evaluate(config, tmp_path)


def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(uninterrupted, env, tmp_path):
  """Training killed (SIGKILL) once its last stage-2 checkpoint exists, that checkpoint then damaged
  (its largest data file lost): the rerun sets it aside in one line, resumes from the step before
  and ends bit-identical to the uninterrupted run."""
  reference, _ = uninterrupted
  step_dir = checkpoints.checkpoint_dir(tmp_path, "diffusion") / "3"
  process = subprocess.Popen(
      [sys.executable, "-m", "neurop_jax.main", "--config", "configs/quickstart.py:test",
       "--workdir", str(tmp_path), *STEPS], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL)
  deadline = time.time() + 900
  while not step_dir.is_dir() and process.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  process.kill()
  process.wait()
  assert step_dir.is_dir()
  data_file = max((p for p in (step_dir / "state").rglob("*") if p.is_file()),
                  key=lambda p: p.stat().st_size)
  data_file.unlink()
  result = _train(tmp_path, env)
  warnings = [line for line in result.stderr.splitlines() if "cannot be read" in line]
  assert len(warnings) == 1 and "checkpoint step 3" in warnings[0], result.stderr[-3000:]
  assert "moved to" in warnings[0] and "resuming from step 2" in warnings[0]
  assert (tmp_path / "diffusion" / "damaged_checkpoints" / "3" / "state").is_dir()
  jax.tree.map(np.testing.assert_array_equal, _final_state(tmp_path, "diffusion"),
               _final_state(reference, "diffusion"))


def test_no_checkpoint_restores_is_one_line_and_moves_nothing(uninterrupted, env, tmp_path):
  _train(tmp_path, env)
  directory = checkpoints.checkpoint_dir(tmp_path, "operator")
  for step_dir in directory.iterdir():
    (step_dir / "state" / "_METADATA").unlink()
  result = subprocess.run(
      [sys.executable, "-m", "neurop_jax.main", "--config", "configs/quickstart.py:test",
       "--workdir", str(tmp_path), *STEPS], cwd=ROOT, env=env, capture_output=True, text=True,
      timeout=900)
  assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: checkpoint step 3") and "no older checkpoint" in last, last
  assert sorted(p.name for p in directory.iterdir()) == ["2", "3"]
