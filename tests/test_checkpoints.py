"""Orbax checkpoints of a stage: latest and best kept, exact restore, whole steps only, inference."""

import grain
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from neurop_jax.io import checkpoints
from neurop_jax.training.config import base_config
from neurop_jax.training.state import TrainState


def _state(step: int, value: float) -> TrainState:
  params = {"w": jnp.full((2, 3), value, jnp.float32)}
  return TrainState(step=jnp.asarray(step, jnp.int32), params=params,
                    ema_params={"w": params["w"] + 0.5}, opt_state=optax.adam(1e-3).init(params))


def _iterator(consumed: int) -> grain.DatasetIterator:
  iterator = iter(grain.MapDataset.range(100).to_iter_dataset())
  for _ in range(consumed):
    next(iterator)
  return iterator


def _save_steps(directory, psnrs: dict[int, float | None], prior=None) -> None:
  manager = checkpoints.stage_manager(directory, keep=2)
  for step, psnr in psnrs.items():
    metrics = None if psnr is None else {"psnr": psnr, "ssim": 0.5}
    checkpoints.save(manager, step, _state(step, float(step)), _iterator(step), base_config("micro"),
                     metrics, prior)
  manager.close()


def test_keeps_latest_and_best_and_restores_exactly(tmp_path):
  _save_steps(tmp_path, {1: 20.0, 2: 25.0, 3: None, 4: 22.0, 5: None})
  manager = checkpoints.stage_manager(tmp_path, keep=2)
  assert manager.all_steps() == [2, 4, 5]
  assert checkpoints.chosen_step(manager, "best") == 2
  assert checkpoints.chosen_step(manager, "latest") == 5
  iterator = _iterator(0)
  state = checkpoints.restore_training(manager, 4, _state(0, 0.0), iterator)
  assert int(state.step) == 4
  np.testing.assert_array_equal(state.params["w"], 4.0)
  np.testing.assert_array_equal(state.ema_params["w"], 4.5)
  assert next(iterator) == 4  # the data position saved with step 4
  with pytest.raises(ValueError, match="best"):
    checkpoints.chosen_step(manager, "first")


def test_unfinished_write_is_ignored(tmp_path):
  _save_steps(tmp_path, {1: None})
  (tmp_path / "2.orbax-checkpoint-tmp-123").mkdir()  # a save killed midway
  assert checkpoints.stage_manager(tmp_path).latest_step() == 1


def test_best_falls_back_to_latest_without_metrics(tmp_path):
  _save_steps(tmp_path, {1: None, 2: None})
  assert checkpoints.chosen_step(checkpoints.stage_manager(tmp_path, read_only=True)) == 2


def test_inference_params_of_each_stage(tmp_path):
  with pytest.raises(FileNotFoundError, match="neurop_jax.main"):
    checkpoints.restore_inference_params(tmp_path)
  _save_steps(checkpoints.checkpoint_dir(tmp_path, "operator"), {1: 20.0, 2: 19.0})
  model_cfg, params = checkpoints.restore_inference_params(tmp_path)
  assert model_cfg.to_dict() == base_config("micro").model.to_dict()
  assert list(params["params"]) == ["operator"]
  np.testing.assert_array_equal(params["params"]["operator"]["w"], 1.5)  # best: step 1's EMA

  prior = {"w": np.full((2, 3), 7.0, np.float32)}
  _save_steps(checkpoints.checkpoint_dir(tmp_path, "diffusion"), {3: 12.0, 4: 10.0}, prior)
  for which, ema in (("best", 3.5), ("latest", 4.5)):
    _, params = checkpoints.restore_inference_params(tmp_path, which)
    assert isinstance(params["params"]["unet"]["w"], np.ndarray)
    np.testing.assert_array_equal(params["params"]["unet"]["w"], ema)
    np.testing.assert_array_equal(params["params"]["operator"]["w"], 7.0)
  _, operator, step = checkpoints.restore_operator(tmp_path, "latest")
  assert step == 2
  np.testing.assert_array_equal(operator["w"], 2.5)
