"""Orbax checkpoints of the two training stages, and the parameters they hold for inference.

Layout of a workdir::

  <workdir>/operator/checkpoints/<step>/{state, data, config, _CHECKPOINT_METADATA, metrics}
  <workdir>/diffusion/checkpoints/<step>/{state, data, config, prior, ...}

``state`` is the ``TrainState`` (params, EMA, Adam, step), ``data`` the grain iterator state (JSON per process),
``config`` the run's config (JSON) and, in stage 2, ``prior`` the frozen operator parameters it
trained with, so that a stage-2 checkpoint alone is a complete model. Each stage has one
``CheckpointManager`` keeping the ``keep`` latest steps and the best by validation PSNR (``metrics``
of a step are written with the checkpoint of a validation). Orbax writes a step to a temporary
folder and renames it when complete, so a run killed at any point leaves only whole checkpoints.
A step damaged later (a file lost or truncated) raises ``DamagedCheckpointError`` when read;
training then resumes from the newest step that restores and moves the damaged ones to
``<workdir>/<stage>/damaged_checkpoints/`` (``set_aside``).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import grain
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from neurop_jax.diffusion import schedule as diffusion
from neurop_jax.errors import InputError, MissingInputError
from neurop_jax.diffusion.formulation import Formulation

def _not_orbax_info(record: logging.LogRecord) -> bool:
  if f"{os.sep}orbax{os.sep}" not in record.pathname:
    return True
  return (record.levelno >= logging.WARNING
          and not record.getMessage().startswith("Given directory is read only"))


def quiet_orbax() -> None:
  """Drops Orbax's INFO records (several per checkpoint written) from absl logging.

  Orbax logs through absl's single logger, so this filters by source file; its warnings and
  every other module's records stay, except the notice that a checkpoint folder opened for
  reading is read only (we open it so on purpose).
  """
  absl_logger = absl_logging.get_absl_logger()
  if _not_orbax_info not in absl_logger.filters:
    absl_logger.addFilter(_not_orbax_info)


BEST_METRIC = "psnr"


def checkpoint_dir(workdir: str | os.PathLike, stage: str) -> Path:
  """``<workdir>/<stage>/checkpoints``."""
  return Path(workdir).absolute() / stage / "checkpoints"


def stage_manager(directory: str | os.PathLike, keep: int = 2,
                  read_only: bool = False) -> ocp.CheckpointManager:
  """The manager of one stage: the ``keep`` latest steps and the best by metric ``psnr`` (max).

  Saves are synchronous: the next training step donates the state's buffers.
  """
  quiet_orbax()
  best = lambda metrics: metrics[BEST_METRIC]
  policy = ocp.checkpoint_managers.AnyPreservationPolicy([
      ocp.checkpoint_managers.LatestN(n=keep),
      ocp.checkpoint_managers.BestN(get_metric_fn=best, n=1,
                                    keep_checkpoints_without_metrics=False),
  ])
  options = ocp.CheckpointManagerOptions(
      best_fn=best, best_mode="max", preservation_policy=policy, read_only=read_only,
      create=not read_only, save_interval_steps=0 if read_only else 1,
      enable_async_checkpointing=False)
  return ocp.CheckpointManager(Path(directory).absolute(), options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any, iterator: grain.DatasetIterator,
         config: ml_collections.ConfigDict, metrics: dict[str, float] | None = None,
         prior: Any = None) -> None:
  """Writes step ``step``: the train state, the data iterator's position, the config (and prior).

  The iterator state is one JSON file per process (grain's Orbax handler).
  """
  items = dict(state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(iterator),
               config=ocp.args.JsonSave(json.loads(config.to_json_best_effort())))
  if prior is not None:
    items["prior"] = ocp.args.StandardSave(prior)
  manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)


class DamagedCheckpointError(InputError):
  """A checkpoint step whose files cannot be read back (damaged, or of another model config)."""


@contextlib.contextmanager
def _reading(manager: ocp.CheckpointManager, step: int) -> Iterator[None]:
  """Turns any failure to read ``step`` into one ``DamagedCheckpointError`` line."""
  try:
    yield
  except Exception as err:  # Orbax, TensorStore and grain raise many types for damaged files.
    detail = (str(err).strip().splitlines() or [""])[0][:200]
    raise DamagedCheckpointError(
        f"checkpoint step {step} in {manager.directory} cannot be read ({type(err).__name__}: "
        f"{detail})") from err


def restore_training(manager: ocp.CheckpointManager, step: int, abstract_state: Any,
                     iterator: grain.DatasetIterator) -> Any:
  """The train state of ``step``, shaped and sharded like ``abstract_state``.

  ``iterator`` is moved to the position it had at that step (in place): this process's file of
  grain's handler, or process 0's when another number of processes wrote the step (every process
  runs the same input pipeline, so their files are equal). Raises ``DamagedCheckpointError`` when
  the step cannot be read.
  """
  data = Path(manager.directory) / str(step) / "data"
  own = data / f"process_{jax.process_index()}-of-{jax.process_count()}.json"
  with _reading(manager, step):
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state)))
    saved = own if own.exists() else min(data.glob("process_0-of-*.json"), default=own)
    iterator.set_state(json.loads(saved.read_text()))
  return restored["state"]


def set_aside(directory: str | os.PathLike, step: int) -> Path:
  """Moves step ``step`` of a checkpoint folder to ``<directory>/../damaged_checkpoints/``.

  Nothing is deleted; returns where it went (``<step>``, or ``<step>.<n>`` if that is taken).
  """
  source = Path(directory) / str(step)
  aside = Path(directory).parent / "damaged_checkpoints"
  aside.mkdir(exist_ok=True)
  target, n = aside / str(step), 1
  while target.exists():
    target, n = aside / f"{step}.{n}", n + 1
  os.replace(source, target)
  return target


def _numpy_restore(item_dir: Path) -> ocp.args.PyTreeRestore:
  """Restores the pytree saved in ``item_dir`` as NumPy arrays, whatever devices saved it."""
  tree = ocp.PyTreeCheckpointHandler().metadata(item_dir).tree
  as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
  return ocp.args.PyTreeRestore(restore_args=as_numpy)


def _restore_items(manager: ocp.CheckpointManager, step: int, names: tuple[str, ...]) -> dict:
  """Items of ``step`` as NumPy arrays (pytrees, as nested dicts) or JSON (config)."""
  step_dir = Path(manager.directory) / str(step)
  with _reading(manager, step):
    args = {name: ocp.args.JsonRestore() if name == "config" else _numpy_restore(step_dir / name)
            for name in names}
    restored = manager.restore(step, args=ocp.args.Composite(**args))
  return {name: restored[name] for name in names}


def _as_tuples(value: Any) -> Any:
  if isinstance(value, dict):
    return {k: _as_tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_as_tuples(v) for v in value)
  return value


def _model_config(saved_config: dict) -> ml_collections.ConfigDict:
  """The ``model`` part of a saved config, its JSON lists back to tuples (as ``model_config``)."""
  return ml_collections.ConfigDict(_as_tuples(saved_config["model"]))


def restore_prior(manager: ocp.CheckpointManager, step: int) -> Any:
  """The frozen operator parameters saved with stage-2 step ``step`` (NumPy)."""
  return _restore_items(manager, step, ("prior",))["prior"]


def chosen_step(manager: ocp.CheckpointManager, which: str = "best") -> int | None:
  """The 'best' step by validation PSNR (the latest when none has metrics) or the 'latest'."""
  if which not in ("best", "latest"):
    raise ValueError(f"which must be 'best' or 'latest', got {which!r}")
  best = manager.best_step() if which == "best" else None
  return manager.latest_step() if best is None else best


def _missing(workdir: str | os.PathLike, what: str) -> MissingInputError:
  return MissingInputError(
      f"no {what} checkpoint under {Path(workdir).absolute()}: train one with "
      f"`python -m neurop_jax.main --config configs/<dataset>.py --workdir {workdir}`")


def restore_operator(workdir: str | os.PathLike, which: str = "best"
                     ) -> tuple[ml_collections.ConfigDict, Any, int]:
  """Stage 1's EMA operator parameters: ``(model config, params, step)``.

  ``workdir`` is a training workdir or its ``operator/checkpoints`` folder. Raises
  ``FileNotFoundError`` naming it when it holds no stage-1 checkpoint.
  """
  directory = Path(workdir)
  if checkpoint_dir(workdir, "operator").is_dir():
    directory = checkpoint_dir(workdir, "operator")
  if not directory.is_dir():
    raise _missing(workdir, "stage-1 (operator)")
  manager = stage_manager(directory, read_only=True)
  step = chosen_step(manager, which)
  if step is None:
    raise _missing(workdir, "stage-1 (operator)")
  items = _restore_items(manager, step, ("state", "config"))
  model_cfg = _model_config(items["config"])
  return model_cfg, items["state"]["ema_params"], step


def restore_sampling(workdir: str | os.PathLike, which: str = "best"
                     ) -> tuple[diffusion.Schedule, Formulation]:
  """The noise schedule and formulation a run's stage 2 trained with: sample with these.

  ``(schedule, formulation)`` of the config saved with the chosen stage-2 step (``which`` as
  ``restore_inference_params``); the paper's (the original linear schedule, eps-prediction on the
  image) when the workdir has no stage-2 checkpoint or its config predates the formulation fields.
  """
  return _sampling(_saved_config(workdir, "diffusion", which))


def _sampling(saved: ml_collections.ConfigDict | None) -> tuple[diffusion.Schedule, Formulation]:
  """``restore_sampling`` of a config saved with a stage-2 step (None: there is none)."""
  if saved is None:
    return diffusion.make_schedule(), Formulation()
  return diffusion.schedule_from_config(saved.diffusion), Formulation.from_config(saved.diffusion)


def _saved_config(workdir: str | os.PathLike, stage: str,
                  which: str) -> ml_collections.ConfigDict | None:
  """The config saved with the chosen step of ``stage``, or None when it has none."""
  directory = checkpoint_dir(workdir, stage)
  if not directory.is_dir():
    return None
  manager = stage_manager(directory, read_only=True)
  step = chosen_step(manager, which)
  if step is None:
    return None
  return ml_collections.ConfigDict(_as_tuples(_restore_items(manager, step, ("config",))["config"]))


class RunSettings(NamedTuple):
  """What a run saved beside its weights, read once (``run_settings``).

  ``config``: the whole config saved with the chosen stage-2 step, else stage 1's (what travels
  with a model: ``model.channels``, ``data.value_mapping`` and ``data.bands`` of raster inputs);
  ``schedule`` and ``formulation``: as ``restore_sampling``; ``val_sampler``: ``(sampler, steps,
  skip)`` stage 2 validated with, None without a stage-2 run.
  """

  config: ml_collections.ConfigDict
  schedule: diffusion.Schedule
  formulation: Formulation
  val_sampler: tuple[str, int, str] | None


def run_settings(workdir: str | os.PathLike, which: str = "best") -> RunSettings:
  """The ``RunSettings`` of a run's chosen step (``which`` as ``restore_inference_params``); raises
  ``FileNotFoundError`` as ``restore_inference_params`` when nothing was trained."""
  stage2 = _saved_config(workdir, "diffusion", which)
  config = stage2 if stage2 is not None else _saved_config(workdir, "operator", which)
  if config is None:
    raise _missing(workdir, "trained")
  val = None if stage2 is None else stage2.diffusion
  val_sampler = ((val.val_sampler, int(val.val_steps), val.val_skip)
                 if val is not None and "val_sampler" in val else None)
  return RunSettings(config, *_sampling(stage2), val_sampler)


def restore_inference_params(workdir: str | os.PathLike, which: str = "best"
                             ) -> tuple[ml_collections.ConfigDict, dict]:
  """The model config and EMA parameters ``{'params': {'operator': ..., 'unet': ...}}`` of a run.

  With a stage-2 checkpoint, its UNet and the frozen operator it trained with; otherwise the
  stage-1 operator alone (no 'unet' key). ``which``: the 'best' step by validation PSNR (the
  latest when no step has metrics) or the 'latest'. Arrays are NumPy. Raises
  ``FileNotFoundError`` naming the workdir and the training command when nothing was trained.
  """
  directory = checkpoint_dir(workdir, "diffusion")
  if directory.is_dir():
    manager = stage_manager(directory, read_only=True)
    step = chosen_step(manager, which)
    if step is not None:
      items = _restore_items(manager, step, ("state", "config", "prior"))
      model_cfg = _model_config(items["config"])
      return model_cfg, {"params": {"operator": items["prior"],
                                    "unet": items["state"]["ema_params"]}}
  if not checkpoint_dir(workdir, "operator").is_dir():
    raise _missing(workdir, "trained")
  model_cfg, operator, _ = restore_operator(workdir, which)
  return model_cfg, {"params": {"operator": operator}}
