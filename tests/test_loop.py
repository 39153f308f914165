"""Training end to end on the quickstart's ``:test`` variant: records, exact resume after a stop and
after a kill, damaged checkpoints, clear errors.

The uninterrupted run is conftest's ``trained_workdir`` (trained in-process once per session);
tests that write copy it. Only the kill test runs ``python -m neurop_jax.main``, in subprocesses
that find what they compile in conftest's persistent compilation cache.
"""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import TRAINED_STEPS, load_config, lowerings, trained_config
from neurop_jax.data import read_image
from neurop_jax.inference.run import load_run
from neurop_jax.io import checkpoints
from neurop_jax.training import loop as train
from neurop_jax.training.config import STAGES

ROOT = pathlib.Path(__file__).resolve().parent.parent
STEPS = tuple(f"--config.{stage}.num_steps={TRAINED_STEPS}" for stage in STAGES)


def _records(workdir: pathlib.Path, stage: str, kind: str) -> list[dict]:
  lines = (workdir / stage / "metrics.jsonl").read_text().splitlines()
  return [r for r in map(json.loads, lines) if r["kind"] == kind]


def _latest(workdir: pathlib.Path, stage: str) -> int | None:
  directory = checkpoints.checkpoint_dir(workdir, stage)
  if not directory.is_dir():
    return None
  return checkpoints.stage_manager(directory, read_only=True).latest_step()


def _final_state(workdir: pathlib.Path, stage: str) -> dict:
  manager = checkpoints.stage_manager(checkpoints.checkpoint_dir(workdir, stage), read_only=True)
  return checkpoints.restore_items(manager, TRAINED_STEPS, ("state",))["state"]


def _assert_same_as(workdir: pathlib.Path, reference: pathlib.Path, stages=STAGES) -> None:
  """The final train states of ``stages`` are bit-identical, and so are their training losses."""
  for stage in stages:
    jax.tree.map(np.testing.assert_array_equal, _final_state(workdir, stage),
                 _final_state(reference, stage))
    losses = lambda w: [(r["step"], r["loss"]) for r in _records(w, stage, "train")]
    assert losses(workdir) == losses(reference)


def _copy(workdir: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
  shutil.copytree(workdir, tmp_path / "run")
  return tmp_path / "run"


def _largest_data_file(step_dir: pathlib.Path) -> pathlib.Path:
  return max((p for p in (step_dir / "state").rglob("*") if p.is_file()),
             key=lambda p: p.stat().st_size)


def test_both_stages_leave_checkpoints_logs_and_samples(trained_workdir):
  workdir = trained_workdir
  for stage, columns in (("operator", 3), ("diffusion", 4)):
    steps = checkpoints.checkpoint_dir(workdir, stage).iterdir()
    assert sorted(p.name for p in steps) == ["2", "3"]
    assert [r["step"] for r in _records(workdir, stage, "train")] == [1, 2, 3]
    assert {"loss", "grad_norm", "lr", "steps_per_s"} <= set(_records(workdir, stage, "train")[0])
    val = _records(workdir, stage, "val")
    assert [r["step"] for r in val] == [2, 3]
    assert {"psnr", "ssim", "bicubic_psnr", "bicubic_ssim"} <= set(val[-1])
    assert list((workdir / stage / "tensorboard").glob("events.out.tfevents.*"))
    grid = read_image(workdir / stage / "samples" / "step_00000003.png")
    assert grid.shape[1] > (columns - 1) * grid.shape[0]  # one row: LR-bicubic, outputs, HR
  assert {"prior_psnr", "lpips"} <= set(_records(workdir, "diffusion", "val")[-1])

  run = load_run(workdir, "latest")
  assert run.step == TRAINED_STEPS and run.model_config.unet.channel_mults == (1, 2, 4)
  prior = checkpoints.read_stage(checkpoints.checkpoint_dir(workdir, "operator"), "operator")
  jax.tree.map(np.testing.assert_array_equal, run.params["params"]["operator"], prior.params)
  unet = _final_state(workdir, "diffusion")["ema_params"]
  jax.tree.map(np.testing.assert_array_equal, run.params["params"]["unet"], unet)


@pytest.mark.slow  # four training runs, two of them through the command line: about a minute
def test_stopped_killed_and_resumed_equals_uninterrupted(trained_workdir, tmp_path):
  """Stopped by ``max_steps_per_run`` inside stage 1, then inside stage 2 (in-process); resumed by
  the command line and killed (SIGKILL) in stage 2's last validation, its records written and its
  checkpoint not; the same command resumes from step 2, its console quiet, and ends bit-identical
  to the uninterrupted run."""
  config = trained_config()
  config.max_steps_per_run = 2
  for expected in ((2, None), (3, 1)):
    train.train_and_evaluate(config, tmp_path)
    assert (_latest(tmp_path, "operator"), _latest(tmp_path, "diffusion")) == expected

  command = [sys.executable, "-m", "neurop_jax.main", "--config", "configs/quickstart.py:test",
             "--workdir", str(tmp_path), *STEPS]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  last_record = f'"step": {TRAINED_STEPS}, "kind": "train"'
  records = tmp_path / "diffusion" / "metrics.jsonl"
  process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  try:
    deadline = time.time() + 600
    while (process.poll() is None and time.time() < deadline
           and last_record not in records.read_text()):
      time.sleep(0.02)
  finally:
    process.send_signal(signal.SIGKILL)
    process.wait()
  assert process.returncode == -signal.SIGKILL
  assert (_latest(tmp_path, "operator"), _latest(tmp_path, "diffusion")) == (3, 2)
  assert last_record in records.read_text()

  result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-4000:]
  assert "diffusion: 100%" in result.stderr
  assert "orbax" not in result.stderr and "atomicity.py" not in result.stderr
  _assert_same_as(tmp_path, trained_workdir)


@pytest.mark.slow  # four short stage-1 runs: about 40 s
def test_a_short_last_chunk_runs_in_the_same_program(tmp_path):
  """``steps_per_call = 2``: a stage of 3 steps (chunks of 2 and 1) lowers no more programs than
  one of 4 (2 and 2), and ends where ``steps_per_call = 1`` ends (the discarded step changes
  nothing)."""
  def run(name, steps, per_call):
    config = trained_config()
    config.stage = "operator"
    config.operator.update(num_steps=steps, steps_per_call=per_call)
    before = lowerings()
    train.train_and_evaluate(config, tmp_path / name)
    return lowerings() - before, load_run(tmp_path / name, which="latest").params

  run("warm-up", 4, 2)  # compiles what every run shares (validation, metrics)
  three, params = run("three", 3, 2)
  four, _ = run("four", 4, 2)
  assert three == four
  _, single = run("single", 3, 1)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), params, single)


def test_stage_two_alone_needs_a_prior(tmp_path):
  config = load_config("quickstart", "test,diffusion")
  with pytest.raises(FileNotFoundError, match="needs a trained prior.*train stage 1 first"):
    train.train_and_evaluate(config, tmp_path)
  config.diffusion.prior_checkpoint = str(tmp_path / "missing.pth")
  with pytest.raises(FileNotFoundError, match="missing.pth does not exist"):
    train.train_and_evaluate(config, tmp_path)


def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(trained_workdir, tmp_path,
                                                                  caplog):
  """The last stage-2 checkpoint of a finished run damaged (its largest data file lost): the rerun
  sets it aside in one line, resumes from the step before and ends bit-identical."""
  workdir = _copy(trained_workdir, tmp_path)
  _largest_data_file(checkpoints.checkpoint_dir(workdir, "diffusion") / "3").unlink()
  train.train_and_evaluate(trained_config(), workdir)
  warnings = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
  assert len(warnings) == 1 and "checkpoint step 3" in warnings[0], caplog.text[-3000:]
  assert "moved to" in warnings[0] and "resuming from step 2" in warnings[0]
  assert "\n" not in warnings[0]
  assert (workdir / "diffusion" / "damaged_checkpoints" / "3" / "state").is_dir()
  assert _latest(workdir, "diffusion") == 3
  _assert_same_as(workdir, trained_workdir, ("diffusion",))


def test_no_checkpoint_restores_is_one_line_and_moves_nothing(trained_workdir, tmp_path):
  workdir = _copy(trained_workdir, tmp_path)
  directory = checkpoints.checkpoint_dir(workdir, "operator")
  for step_dir in directory.iterdir():
    _largest_data_file(step_dir).unlink()
  with pytest.raises(checkpoints.DamagedCheckpointError) as info:
    train.train_and_evaluate(trained_config(), workdir)
  message = str(info.value)
  assert message.startswith("checkpoint step 3") and "no older checkpoint" in message, message
  assert "\n" not in message
  assert sorted(p.name for p in directory.iterdir()) == ["2", "3"]
  assert not (workdir / "operator" / "damaged_checkpoints").exists()
