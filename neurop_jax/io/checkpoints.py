"""Orbax checkpoints of the two training stages: writing them, resuming from them, reading a run.

Layout of a workdir::

  <workdir>/operator/checkpoints/<step>/{state, data, config, _CHECKPOINT_METADATA, metrics}
  <workdir>/diffusion/checkpoints/<step>/{state, data, config, prior, ...}

``state`` is the ``TrainState`` (params, EMA, Adam, step), ``data`` the grain iterator state (JSON
per process), ``config`` the run's config (JSON) and, in stage 2, ``prior`` the frozen operator
parameters it trained with, so that a stage-2 checkpoint alone is a complete model. Each stage has
one ``CheckpointManager`` keeping the ``keep`` latest steps and the best by the stage's
``best_metric`` (``best_mode`` 'max' or 'min'; '' keeps no best: 'best' is then the latest);
``metrics`` of a step are written with the checkpoint of a validation. Orbax writes a step to a
temporary folder and renames it when complete, so a run killed at any point leaves only whole
checkpoints. A step damaged later (a file lost, truncated or garbled) raises
``DamagedCheckpointError`` when read; training then resumes from the newest step that restores
and moves the damaged ones to ``<workdir>/<stage>/damaged_checkpoints/`` (``set_aside``). Any other
failure while reading (out of memory, a sharding that does not fit the devices, an interrupted
file system call) is raised as it is: it says nothing about the files.

Reading a run for inference is ``read_stage``: one manager per stage, the chosen step's EMA
parameters (never the optimizer state) and config, placed on device as they are read.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import grain
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging as absl_logging

from neurop_jax.errors import InputError, MissingInputError

BEST_MODES = ("max", "min")
WHICH = ("best", "latest")


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


def checkpoint_dir(workdir: str | os.PathLike, stage: str) -> Path:
  """``<workdir>/<stage>/checkpoints``."""
  return Path(workdir).absolute() / stage / "checkpoints"


def stage_manager(directory: str | os.PathLike, keep: int = 2, read_only: bool = False,
                  best_metric: str = "", best_mode: str = "max") -> ocp.CheckpointManager:
  """The manager of one stage: the ``keep`` latest steps, and the best by ``best_metric``.

  ``best_metric`` names a validation metric saved with the steps ('psnr', 'lpips', ...) and
  ``best_mode`` whether its 'max' or its 'min' is best; '' keeps the latest steps only, and
  ``best_step()`` is then the latest.

  Saves are asynchronous: ``save`` returns once the arrays are copied to host memory (so the
  next train step may donate or overwrite them) and the files are written by Orbax's background
  threads, to a temporary folder renamed when complete. The next ``save`` waits for the previous
  one, and so do ``wait_until_finished()`` and ``close()``, which training calls before each
  record it logs (so the logs never run ahead of a checkpoint being written) and before a
  stage ends (also on an error), and so before exit.
  """
  if best_mode not in BEST_MODES:
    raise InputError(f"best_mode must be one of {BEST_MODES}, got {best_mode!r}")
  quiet_orbax()
  policies = [ocp.checkpoint_managers.LatestN(n=keep)]
  best = None
  if best_metric:
    best = lambda metrics: metrics[best_metric]
    policies.append(ocp.checkpoint_managers.BestN(
        get_metric_fn=best, reverse=best_mode == "min", n=1,
        keep_checkpoints_without_metrics=False))
  options = ocp.CheckpointManagerOptions(
      best_fn=best, best_mode=best_mode, read_only=read_only, create=not read_only,
      preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
      save_interval_steps=0 if read_only else 1, enable_async_checkpointing=not read_only)
  return ocp.CheckpointManager(Path(directory).absolute(), options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any, iterator: grain.DatasetIterator,
         config: ml_collections.ConfigDict, metrics: dict[str, float] | None = None,
         prior: Any = None) -> None:
  """Starts writing step ``step``: the train state, the data iterator's position, the config (and
  prior), asynchronously (see ``stage_manager``).

  The iterator state is one JSON file per process (grain's Orbax handler), taken when called.
  """
  items = dict(state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(iterator),
               config=ocp.args.JsonSave(json.loads(config.to_json_best_effort())))
  if prior is not None:
    items["prior"] = ocp.args.StandardSave(prior)
  manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)


class DamagedCheckpointError(InputError):
  """A checkpoint step whose files cannot be read back (damaged, or of another model config)."""


# What the readers raise when a step's files are missing, truncated or garbled, or hold arrays of
# other shapes (a checkpoint of another model config), as seen from Orbax 0.12 and TensorStore:
# Python's file and JSON errors; TensorStore's ValueErrors, whose message starts with its status
# code; Orbax's KeyError for an item that is not there and ValueError for a stored shape; JAX's
# ValueError for a saved tree of another structure (a step whose _METADATA is lost reads back as
# plain dicts, not the train state).
_DAMAGE_TYPES = (FileNotFoundError, NotADirectoryError, EOFError, json.JSONDecodeError,
                 UnicodeDecodeError)
_DAMAGE_MESSAGES = re.compile(
    r"^(NOT_FOUND|DATA_LOSS|OUT_OF_RANGE|FAILED_PRECONDITION): Error (reading|opening)"
    r"|was not found in the checkpoint|is not compatible with the stored shape"
    r"|^pytree structure error")


def is_damage(err: BaseException) -> bool:
  """Whether ``err``, or an error it was raised from, says that a step's files are damaged.

  Damage: a missing file or item, bad JSON, a truncated or garbled array chunk, arrays or a tree
  of other shapes than the model's. Not damage, so raised as it is: memory, devices and shardings,
  permissions, a full disk, interrupted or timed-out file system calls, any other error.
  """
  seen = set()
  while err is not None and id(err) not in seen:
    seen.add(id(err))
    if isinstance(err, _DAMAGE_TYPES):
      return True
    if isinstance(err, (ValueError, KeyError)) and _DAMAGE_MESSAGES.search(str(err).strip("'\"")):
      return True
    err = err.__cause__ or err.__context__
  return False


@contextlib.contextmanager
def _reading(manager: ocp.CheckpointManager, step: int) -> Iterator[None]:
  """Turns a failure to read ``step`` that means damage (``is_damage``) into one
  ``DamagedCheckpointError`` line; any other failure passes unchanged."""
  try:
    yield
  except Exception as err:
    if not is_damage(err):
      raise
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
  the step's files are damaged.
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


def _as_tuples(value: Any) -> Any:
  if isinstance(value, dict):
    return {k: _as_tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_as_tuples(v) for v in value)
  return value


def _restore_args(item_dir: Path, subtree: str | None,
                  sharding: jax.sharding.Sharding | None) -> ocp.args.PyTreeRestore:
  """Restores the pytree saved in ``item_dir`` (or its ``subtree`` alone): as device arrays
  placed by ``sharding``, or as NumPy arrays when ``sharding`` is None."""
  tree = ocp.PyTreeCheckpointHandler().metadata(item_dir).tree
  if subtree is not None:
    tree = {subtree: tree[subtree]}
  if sharding is None:
    leaf = lambda _: ocp.RestoreArgs(restore_type=np.ndarray)
  else:
    leaf = lambda meta: ocp.ArrayRestoreArgs(sharding=sharding, global_shape=meta.shape,
                                             dtype=meta.dtype)
  return ocp.args.PyTreeRestore(item=tree, restore_args=jax.tree.map(leaf, tree),
                                partial_restore=subtree is not None)


def restore_items(manager: ocp.CheckpointManager, step: int, names: tuple[str, ...],
                  sharding: jax.sharding.Sharding | None = None) -> dict:
  """Items of ``step``: pytrees (nested dicts) as NumPy arrays, or as device arrays placed by
  ``sharding``; 'config' as a ConfigDict; 'ema_params' the EMA parameters of 'state' alone."""
  step_dir = Path(manager.directory) / str(step)
  args = {}
  with _reading(manager, step):
    for name in names:
      if name == "config":
        args[name] = ocp.args.JsonRestore()
      elif name == "ema_params":
        args["state"] = _restore_args(step_dir / "state", "ema_params", sharding)
      else:
        args[name] = _restore_args(step_dir / name, None, sharding)
    restored = manager.restore(step, args=ocp.args.Composite(**args))
  items = {name: restored[name] for name in args}
  if "config" in items:
    items["config"] = ml_collections.ConfigDict(_as_tuples(items["config"]))
  if "ema_params" in names:
    items["ema_params"] = items.pop("state")["ema_params"]
  return items


def steps_with_metrics(manager: ocp.CheckpointManager) -> dict[int, dict[str, float]]:
  """The validation metrics saved with each step of ``manager`` (``{}`` for a step without)."""
  return {step: dict(manager.metrics(step) or {}) for step in manager.all_steps()}


def chosen_step(manager: ocp.CheckpointManager, which: str = "best", best_metric: str = "",
                best_mode: str = "max") -> int | None:
  """The step to read: 'latest', or 'best' by ``best_metric`` (``best_mode``) over the steps
  that have it (the latest when none has or ``best_metric`` is ''). None: no step."""
  if which not in WHICH:
    raise InputError(f"which must be one of {WHICH}, got {which!r}")
  latest = manager.latest_step()
  if which == "latest" or not best_metric or latest is None:
    return latest
  scored = {step: metrics[best_metric] for step, metrics in steps_with_metrics(manager).items()
            if best_metric in metrics}
  if not scored:
    return latest
  pick = max if best_mode == "max" else min
  return pick(sorted(scored, reverse=True), key=scored.__getitem__)


def missing_run(workdir: str | os.PathLike, what: str) -> MissingInputError:
  """The error for a workdir without the checkpoint a reader needs."""
  return MissingInputError(
      f"no {what} checkpoint under {Path(workdir).absolute()}: train one with "
      f"`python -m neurop_jax.main --config configs/<dataset>.py --workdir {workdir}`")


class StageRead(NamedTuple):
  """What ``read_stage`` reads of one stage: the step, its config, its EMA parameters and (stage
  2) the prior saved with it."""

  step: int
  config: ml_collections.ConfigDict
  params: Any
  prior: Any


def default_best(stage: str) -> tuple[str, str]:
  """``(best_metric, best_mode)`` of a config saved before those fields: PSNR (max) in stage 1,
  LPIPS (min) in stage 2 (steps without LPIPS: the latest)."""
  return ("psnr", "max") if stage == "operator" else ("lpips", "min")


def read_stage(directory: str | os.PathLike, stage: str, which: str = "best",
               sharding: jax.sharding.Sharding | None = None,
               section: str | None = None) -> StageRead | None:
  """The chosen step of one stage's checkpoint folder, read once (None: no step there).

  ``which``: 'best' by the ``best_metric`` and ``best_mode`` of the stage's saved config (see
  ``chosen_step``) or 'latest'; ``section`` is the stage's config section (None: ``stage``; the
  student's is 'distill'). The EMA parameters (and the prior) are NumPy arrays, or device
  arrays placed by ``sharding``.
  """
  directory = Path(directory)
  if not directory.is_dir():
    return None
  manager = stage_manager(directory, read_only=True)
  latest = manager.latest_step()
  if latest is None:
    return None
  step = latest
  if which != "latest":
    config = restore_items(manager, latest, ("config",))["config"][section or stage]
    metric, mode = default_best(stage)
    step = chosen_step(manager, which, config.get("best_metric", metric),
                       config.get("best_mode", mode))
  names = ("config", "ema_params") + (("prior",) if stage == "diffusion" else ())
  items = restore_items(manager, step, names, sharding)
  return StageRead(step, items["config"], items["ema_params"], items.get("prior"))
