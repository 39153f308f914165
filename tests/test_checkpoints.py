"""Orbax checkpoints of a stage: latest and best kept, exact restore, whole steps only, damage told
apart from other read failures, a run read for inference."""

import errno
import shutil

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from conftest import trained_config
from neurop_jax.diffusion.formulation import Formulation
from neurop_jax.diffusion.samplers import Sampling
from neurop_jax.inference.run import load_run
from neurop_jax.io import checkpoints
from neurop_jax.training import loop
from neurop_jax.training.config import base_config
from neurop_jax.training.state import TrainState


def _state(step: int, value: float) -> TrainState:
  params = {"w": jnp.full((2, 3), value, jnp.float32)}
  return TrainState(step=jnp.asarray(step, jnp.int32), params=params,
                    ema_params={"w": params["w"] + 0.5}, opt_state=optax.adam(1e-3).init(params))


def _random_state(step: int) -> TrainState:
  """A state of 64x64 random weights: its array chunks are the largest files of a step."""
  params = {"w": jax.random.normal(jax.random.key(step), (64, 64))}
  return TrainState(step=jnp.asarray(step, jnp.int32), params=params,
                    ema_params=jax.tree.map(jnp.copy, params),
                    opt_state=optax.adam(1e-3).init(params))


def _iterator(consumed: int) -> grain.DatasetIterator:
  iterator = iter(grain.MapDataset.range(100).to_iter_dataset())
  for _ in range(consumed):
    next(iterator)
  return iterator


def _save_steps(directory, metrics: dict[int, dict[str, float] | None], prior=None,
                state=None, **manager_options) -> None:
  """Saves each step of ``metrics`` (its validation metrics, or None) with ``stage_manager``:
  ``state(step)``, by default ``_state(step, step)``."""
  state = state or (lambda step: _state(step, float(step)))
  manager = checkpoints.stage_manager(directory, keep=2, **manager_options)
  for step, values in metrics.items():
    checkpoints.save(manager, step, state(step), _iterator(step), base_config("micro"), values,
                     prior)
  manager.close()


def _psnr(value: float) -> dict[str, float]:
  return {"psnr": value, "ssim": 0.5}


def test_keeps_latest_and_best_and_restores_exactly(tmp_path):
  _save_steps(tmp_path, {1: _psnr(20.0), 2: _psnr(25.0), 3: None, 4: _psnr(22.0), 5: None},
              best_metric="psnr")
  manager = checkpoints.stage_manager(tmp_path, keep=2, best_metric="psnr")
  assert manager.all_steps() == [2, 4, 5]
  assert checkpoints.chosen_step(manager, "best", "psnr") == 2
  assert checkpoints.chosen_step(manager, "latest", "psnr") == 5
  iterator = _iterator(0)
  state = checkpoints.restore_training(manager, 4, _state(0, 0.0), iterator)
  assert int(state.step) == 4
  np.testing.assert_array_equal(state.params["w"], 4.0)
  np.testing.assert_array_equal(state.ema_params["w"], 4.5)
  assert next(iterator) == 4  # the data position saved with step 4
  with pytest.raises(ValueError, match="best"):
    checkpoints.chosen_step(manager, "first")


def test_a_save_keeps_its_state_when_the_next_step_donates_the_buffers(tmp_path):
  """Saves are asynchronous: ``save`` returns before the files are written, and the next train
  step donates (frees) the state's buffers; the step written is the state given to ``save``."""
  manager = checkpoints.stage_manager(tmp_path)
  state = _random_state(3)
  expected = jax.tree.map(lambda x: np.array(x, copy=True), state)  # no view of the buffers
  checkpoints.save(manager, 3, state, _iterator(3), base_config("micro"))
  jax.jit(lambda s: jax.tree.map(lambda x: x * 2, s), donate_argnums=0)(state)
  assert state.params["w"].is_deleted()
  manager.close()  # waits for the write
  restored = checkpoints.restore_training(checkpoints.stage_manager(tmp_path, read_only=True), 3,
                                          _random_state(0), _iterator(0))
  jax.tree.map(np.testing.assert_array_equal, restored, expected)


def test_best_by_lowest_lpips_even_where_another_step_has_the_highest_psnr(tmp_path):
  _save_steps(tmp_path, {1: dict(psnr=30.0, lpips=0.5), 2: dict(psnr=20.0, lpips=0.1),
                         3: dict(psnr=25.0, lpips=0.4), 4: dict(psnr=22.0, lpips=0.3), 5: None},
              best_metric="lpips", best_mode="min")
  manager = checkpoints.stage_manager(tmp_path, best_metric="lpips", best_mode="min")
  assert manager.all_steps() == [2, 4, 5]  # the latest two and the lowest LPIPS; not step 1
  assert manager.best_step() == 2
  assert checkpoints.chosen_step(manager, "best", "lpips", "min") == 2
  assert checkpoints.chosen_step(manager, "best", "psnr", "max") == 4  # of the steps kept
  assert checkpoints.chosen_step(manager, "latest", "lpips", "min") == 5


def test_best_is_the_latest_when_no_step_has_the_metric(tmp_path):
  _save_steps(tmp_path, {1: _psnr(30.0), 2: _psnr(20.0)}, best_metric="psnr")
  manager = checkpoints.stage_manager(tmp_path, read_only=True)
  assert checkpoints.chosen_step(manager, "best", "psnr", "max") == 1
  assert checkpoints.chosen_step(manager, "best", "lpips", "min") == 2
  assert checkpoints.chosen_step(manager, "best", "", "max") == 2


def test_unfinished_write_is_ignored(tmp_path):
  _save_steps(tmp_path, {1: None})
  (tmp_path / "2.orbax-checkpoint-tmp-123").mkdir()  # a save killed midway
  assert checkpoints.stage_manager(tmp_path).latest_step() == 1


def test_best_falls_back_to_latest_without_metrics(tmp_path):
  _save_steps(tmp_path, {1: None, 2: None}, best_metric="psnr")
  assert checkpoints.chosen_step(checkpoints.stage_manager(tmp_path, read_only=True), "best",
                                 "psnr") == 2


def test_load_run_reads_each_stage_at_its_best_step(tmp_path):
  with pytest.raises(FileNotFoundError, match="neurop_jax.main"):
    load_run(tmp_path)
  _save_steps(checkpoints.checkpoint_dir(tmp_path, "operator"), {1: _psnr(20.0), 2: _psnr(19.0)},
              best_metric="psnr")
  run = load_run(tmp_path)
  assert run.model_config.to_dict() == base_config("micro").model.to_dict()
  assert (run.step, run.has_unet, run.formulation, run.sampling) == (1, False, Formulation(),
                                                                     Sampling())
  assert list(run.params["params"]) == ["operator"]
  assert isinstance(run.params["params"]["operator"]["w"], jax.Array)
  np.testing.assert_array_equal(run.params["params"]["operator"]["w"], 1.5)  # step 1's EMA

  prior = {"w": np.full((2, 3), 7.0, np.float32)}
  _save_steps(checkpoints.checkpoint_dir(tmp_path, "diffusion"),
              {3: dict(psnr=10.0, lpips=0.2), 4: dict(psnr=12.0, lpips=0.3)}, prior,
              best_metric="lpips", best_mode="min")
  for which, step in (("best", 3), ("latest", 4)):  # best: the lower LPIPS, not the higher PSNR
    run = load_run(tmp_path, which)
    assert (run.step, run.has_unet, run.workdir) == (step, True, tmp_path.absolute())
    assert isinstance(run.params["params"]["unet"]["w"], jax.Array)
    np.testing.assert_array_equal(run.params["params"]["unet"]["w"], step + 0.5)
    np.testing.assert_array_equal(run.params["params"]["operator"]["w"], 7.0)
  read = checkpoints.read_stage(checkpoints.checkpoint_dir(tmp_path, "operator"), "operator",
                                "latest")
  assert read.step == 2 and isinstance(read.params["w"], np.ndarray)
  np.testing.assert_array_equal(read.params["w"], 2.5)


def _array_files(step_dir):
  return [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]


def _largest_array_file(step_dir):
  return max(_array_files(step_dir), key=lambda p: p.stat().st_size)


def _remove_array_files(step_dir):
  """Removes every array chunk file: which file holds which array varies between saves."""
  for path in _array_files(step_dir):
    path.unlink()


def _truncate(path):
  path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


DAMAGE = {
    "removed array files": _remove_array_files,
    "truncated array chunk": lambda step_dir: _truncate(_largest_array_file(step_dir)),
    "garbled config JSON": lambda step_dir: (step_dir / "config" / "metadata").write_text('{"m'),
    "garbled data position": lambda step_dir: (
        step_dir / "data" / "process_0-of-1.json").write_text("{"),
    "removed array metadata": lambda step_dir: (step_dir / "state" / "_METADATA").unlink(),
}


def _read(reader: str, manager: ocp.CheckpointManager, step: int):
  """Reads ``step`` as a resume does (``restore_training``) or as inference does (the others)."""
  if reader == "restore_training":
    return checkpoints.restore_training(manager, step, _random_state(0), _iterator(0))
  if reader == "read_stage":
    return checkpoints.read_stage(manager.directory, "operator")
  return checkpoints.restore_items(manager, step, (reader,))


# Orbax leaves the reads of the other arrays of a failed restore unawaited (a warning at exit).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("damage, reader", [
    ("removed array files", "restore_training"),
    ("removed array files", "ema_params"),
    ("truncated array chunk", "restore_training"),
    ("truncated array chunk", "state"),
    ("garbled config JSON", "config"),
    ("garbled config JSON", "read_stage"),
    ("garbled data position", "restore_training"),
    ("removed array metadata", "ema_params"),
    ("removed array metadata", "restore_training"),
])
def test_damaged_files_are_a_damaged_checkpoint_error(damage, reader, tmp_path):
  _save_steps(tmp_path, {1: _psnr(20.0)}, state=_random_state, best_metric="psnr")
  DAMAGE[damage](tmp_path / "1")
  manager = checkpoints.stage_manager(tmp_path, read_only=True)
  with pytest.raises(checkpoints.DamagedCheckpointError, match="checkpoint step 1 in .* cannot be "
                     "read") as info:
    _read(reader, manager, 1)
  assert checkpoints.is_damage(info.value.__cause__)


@pytest.mark.parametrize("error", [
    MemoryError(), RuntimeError("RESOURCE_EXHAUSTED: out of memory allocating 1 GiB"),
    OSError(errno.EIO, "Input/output error"), ValueError("sharding mismatch"),
    PermissionError(errno.EACCES, "Permission denied"),
], ids=lambda err: type(err).__name__)
@pytest.mark.parametrize("reader", ["restore_training", "ema_params", "read_stage"])
def test_a_read_failure_that_is_not_damage_propagates_unchanged(error, reader, tmp_path,
                                                                monkeypatch):
  _save_steps(tmp_path, {1: _psnr(20.0)}, state=_random_state, best_metric="psnr")
  manager = checkpoints.stage_manager(tmp_path, read_only=True)

  def fail(*args, **kwargs):
    raise error

  monkeypatch.setattr(ocp.CheckpointManager, "restore", fail)
  with pytest.raises(type(error)) as info:
    _read(reader, manager, 1)
  assert info.value is error and not checkpoints.is_damage(error)


def test_a_resume_that_runs_out_of_memory_raises_it_and_moves_nothing(trained_workdir, tmp_path,
                                                                       monkeypatch):
  workdir = tmp_path / "run"
  shutil.copytree(trained_workdir, workdir)
  listing = lambda: sorted(str(p.relative_to(workdir)) for p in workdir.glob("*/*/*"))
  before = listing()

  def fail(*args, **kwargs):
    raise MemoryError("out of host memory")

  monkeypatch.setattr(ocp.CheckpointManager, "restore", fail)
  with pytest.raises(MemoryError, match="out of host memory"):
    loop.train_and_evaluate(trained_config(), workdir)
  assert listing() == before
  assert not list(workdir.glob("*/damaged_checkpoints"))
