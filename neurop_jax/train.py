"""Training of both stages: ``train_and_evaluate(config, workdir)``.

Stage 1 trains the neural operator (SRNO recipe, L1 on random-scale patches); stage 2 the SR3 UNet
conditioned on the frozen prior of stage 1's best checkpoint. Each stage resumes from its latest
checkpoint (train state and data position), so re-running the same command after a kill continues
and ends with the same parameters as an uninterrupted run; a finished stage is skipped.
Records go to ``<workdir>/<stage>/`` (see ``logging_utils`` and ``checkpoints``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from tqdm import tqdm

from neurop_jax import checkpoints, convert, samplers
from neurop_jax.config_base import STAGES
from neurop_jax.data import build_sources, diffusion_pipeline, operator_pipeline
from neurop_jax.diffusion import schedule_from_config
from neurop_jax.logging_utils import StageLogger, quiet_orbax
from neurop_jax.models import NeurOpDiff, make_model
from neurop_jax.train_state import (TrainState, create_train_state, make_optimizer,
                                    step_schedule, warmup_schedule)
from neurop_jax.train_steps import (batch_sharding, compile_prior, compile_steps, data_mesh,
                                    diffusion_step, operator_prior, operator_step, query_grid,
                                    replicated, to_device)
from neurop_jax.validation import OutputsFn, Validator


@dataclasses.dataclass
class _Stage:
  """What differs between the stages; ``_train_stage`` runs any of them."""

  name: str
  cfg: ml_collections.ConfigDict
  num_steps: int
  init_params: Callable[[jax.Array], Any]
  tx: optax.GradientTransformation
  step: Callable
  iterator: grain.DatasetIterator
  device_batch: Callable[[list[dict[str, np.ndarray]]], dict[str, jax.Array]]
  outputs_fn: Callable[[Any, jax.Array], OutputsFn]
  prior: Any = None


class _StepBudget:
  """Training steps this process may still take (``config.max_steps_per_run``, 0: no limit)."""

  def __init__(self, limit: int):
    self.left = limit if limit > 0 else math.inf

  def take(self, steps: int) -> None:
    self.left -= steps


def _process_data_config(data_cfg: ml_collections.ConfigDict,
                         batch_field: str) -> ml_collections.ConfigDict:
  """This process's data config: its share of the global batch and its own seed."""
  global_batch = data_cfg[batch_field]
  if global_batch % jax.device_count():
    raise ValueError(f"config.data.{batch_field}={global_batch} is not divisible by the "
                     f"{jax.device_count()} devices")
  local = ml_collections.ConfigDict(data_cfg.to_dict())
  local[batch_field] = global_batch // jax.process_count()
  local.seed = data_cfg.seed + 1000 * jax.process_index()
  return local


def _stack(batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  return {k: np.stack([b[k] for b in batches]) for k in batches[0]}


def _operator_stage(config: ml_collections.ConfigDict, model: NeurOpDiff, sources: dict,
                    mesh: jax.sharding.Mesh) -> _Stage:
  cfg = config.operator
  batch_size = config.data.operator_batch_size
  steps_per_epoch = max(len(sources["train"]) // batch_size, 1)
  num_steps = cfg.num_steps if cfg.num_steps > 0 else cfg.epochs * steps_per_epoch
  warmup = min(cfg.warmup_epochs * steps_per_epoch, num_steps)
  schedule = warmup_schedule(cfg.learning_rate, cfg.warmup_multiplier, warmup, num_steps,
                             cfg.decay)
  tx = make_optimizer(cfg, schedule)
  p = config.data.patch_size

  def init_params(rng):
    coord, cell = query_grid(1, (p, p))
    return model.init(rng, jnp.zeros((1, p, p, 3)), coord, cell,
                      method=model.prior)["params"]["operator"]

  stacked = batch_sharding(mesh, stacked=True)
  sr = jax.jit(lambda params, lr, out_hw: jnp.clip(
      (operator_prior(model, params, lr, out_hw) + 1) / 2, 0.0, 1.0), static_argnums=2)
  data_cfg = _process_data_config(config.data, "operator_batch_size")
  return _Stage(
      name="operator", cfg=cfg, num_steps=num_steps, init_params=init_params, tx=tx,
      step=functools.partial(operator_step, model=model, tx=tx, schedule=schedule,
                             ema_decay=cfg.ema_decay),
      iterator=operator_pipeline(sources["train"], data_cfg),
      device_batch=lambda batches: to_device(_stack(batches), stacked),
      outputs_fn=lambda ema, rng: lambda lr, hr, i: {"": sr(ema, lr, hr.shape[1:3])})


def _load_prior(config: ml_collections.ConfigDict, workdir: Path) -> Any:
  """The frozen operator parameters of stage 2 (see ``config.diffusion.prior_checkpoint``)."""
  source = Path(config.diffusion.prior_checkpoint or workdir)
  if source.is_file():
    return convert.convert_checkpoint(source, config.model)["operator"]["params"]
  try:
    model_cfg, params, step = checkpoints.restore_operator(source)
  except FileNotFoundError as err:
    raise FileNotFoundError(
        f"stage 2 (diffusion) needs a trained prior and found none in {source.absolute()}: "
        "train stage 1 first (--config <file>.py:operator, or no suffix for both stages), or set "
        "--config.diffusion.prior_checkpoint to a workdir, a checkpoint folder or an original "
        "SRNO/NeurOp-Diff .pth/.npz file") from err
  if model_cfg.operator.to_dict() != config.model.operator.to_dict():
    raise ValueError(f"the prior in {source} was trained with model.operator="
                     f"{model_cfg.operator.to_dict()}, the config has "
                     f"{config.model.operator.to_dict()}")
  logging.info("stage 2 prior: %s step %d (EMA parameters)", source, step)
  return params


def _diffusion_stage(config: ml_collections.ConfigDict, model: NeurOpDiff, sources: dict,
                     mesh: jax.sharding.Mesh, prior_params: Any) -> _Stage:
  cfg = config.diffusion
  schedule = step_schedule(cfg.learning_rates, cfg.learning_rate_every)
  tx = make_optimizer(cfg, schedule)
  noise = schedule_from_config(cfg)
  size = 2 ** (len(config.model.unet.channel_mults) - 1)

  def init_params(rng):
    x = jnp.zeros((1, size, size, 3))
    return model.init(rng, x, jnp.ones((1,)), x, method=model.denoise)["params"]["unet"]

  prior_params = jax.device_put(prior_params, replicated(mesh))
  prior_fn = compile_prior(model, mesh)
  data = batch_sharding(mesh)
  stack = jax.jit(lambda *xs: jnp.stack(xs), out_shardings=batch_sharding(mesh, stacked=True))

  def device_batch(batches):
    hrs, priors = [], []
    for batch in batches:
      arrays = to_device(batch, data)
      hrs.append(arrays["hr"])
      priors.append(prior_fn(prior_params, arrays["lr"], arrays["hr"]))
    return {"hr": stack(*hrs), "prior": stack(*priors)}

  def sample(unet_params, operator_params, lr, rng, out_hw):
    prior = operator_prior(model, operator_params, lr, out_hw)
    eps_fn = lambda x, g: model.apply({"params": {"unet": unet_params}}, x, g, prior,
                                      method=model.denoise)
    x_T = jax.random.normal(jax.random.fold_in(rng, 0), prior.shape)
    x0 = samplers.sample(eps_fn, x_T, jax.random.fold_in(rng, 1), schedule=noise,
                         sampler=cfg.val_sampler, steps=cfg.val_steps, skip=cfg.val_skip)
    return jnp.clip((prior + 1) / 2, 0.0, 1.0), (x0 + 1) / 2

  sample = jax.jit(sample, static_argnums=4)

  def outputs_fn(ema, rng):
    def outputs(lr, hr, index):
      prior, x0 = sample(ema, prior_params, lr, jax.random.fold_in(rng, index), hr.shape[1:3])
      return {"prior": prior, "": x0}
    return outputs

  data_cfg = _process_data_config(config.data, "diffusion_batch_size")
  return _Stage(
      name="diffusion", cfg=cfg, num_steps=cfg.num_steps, init_params=init_params, tx=tx,
      step=functools.partial(diffusion_step, model=model, tx=tx, schedule=schedule,
                             ema_decay=cfg.ema_decay, noise=noise, loss=cfg.loss,
                             per_sample_t=cfg.per_sample_t),
      iterator=diffusion_pipeline(sources["train"], data_cfg),
      device_batch=device_batch, outputs_fn=outputs_fn, prior=prior_params)


def _due(step: int, previous: int, every: int) -> bool:
  """Whether a multiple of ``every`` lies in ``(previous, step]``."""
  return every > 0 and step // every > previous // every


def _train_stage(stage: _Stage, config: ml_collections.ConfigDict, workdir: Path,
                 mesh: jax.sharding.Mesh, validator: Validator, key: jax.Array,
                 budget: _StepBudget) -> TrainState:
  """Runs (or resumes) one stage up to ``stage.num_steps``; returns its final train state."""
  cfg = stage.cfg
  rep = replicated(mesh)
  init_state = jax.jit(lambda rng: create_train_state(stage.init_params(rng), stage.tx),
                       out_shardings=rep)
  manager = checkpoints.stage_manager(checkpoints.checkpoint_dir(workdir, stage.name), cfg.keep)
  latest = manager.latest_step()
  if latest is None:
    state = init_state(jax.random.fold_in(key, 0))
  else:
    abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep),
                            jax.eval_shape(init_state, jax.random.fold_in(key, 0)))
    state = checkpoints.restore_training(manager, latest, abstract, stage.iterator)
    logging.info("%s: resumed from step %d", stage.name, latest)
  step = int(state.step)
  if step >= stage.num_steps:
    logging.info("%s: already trained (%d steps)", stage.name, step)
    manager.close()
    return state

  logger = StageLogger(workdir / stage.name, step)
  run = compile_steps(stage.step, mesh)
  train_rng, val_rng = jax.random.fold_in(key, 1), jax.random.fold_in(key, 2)
  pending: list[dict[str, jax.Array]] = []
  since = (step, time.time(), 0.0)  # last logged step, its time, seconds spent off training
  bar = tqdm(total=stage.num_steps, initial=step, desc=stage.name, unit="step",
             disable=jax.process_index() != 0, dynamic_ncols=True)
  while step < stage.num_steps and budget.left > 0:
    k = int(min(cfg.steps_per_call, stage.num_steps - step, budget.left))
    state, metrics = run(state, stage.device_batch([next(stage.iterator) for _ in range(k)]),
                         train_rng)
    previous, step = step, step + k
    budget.take(k)
    pending.append(metrics)
    bar.update(k)
    if _due(step, previous, cfg.log_every) or step == stage.num_steps or budget.left <= 0:
      values = {name: float(np.mean(np.concatenate([np.asarray(m[name]) for m in pending])))
                for name in pending[0]}
      values["steps_per_s"] = (step - since[0]) / max(time.time() - since[1] - since[2], 1e-9)
      logger.scalars(step, "train", values)
      bar.set_postfix(loss=f"{values['loss']:.4f}")
      pending, since = [], (step, time.time(), 0.0)
    val_due = _due(step, previous, cfg.eval_every) or step == stage.num_steps
    if val_due or _due(step, previous, cfg.checkpoint_every) or budget.left <= 0:
      jax.block_until_ready(state)
      off_start, val_metrics = time.time(), None
      if val_due:
        val_metrics, grid = validator(stage.outputs_fn(state.ema_params, val_rng))
        logger.scalars(step, "val", val_metrics)
        logger.image(step, grid)
        bar.write(f"{stage.name} step {step}: " + ", ".join(
            f"{k} {v:.4f}" for k, v in sorted(val_metrics.items())))
      checkpoints.save(manager, step, state, stage.iterator, config, val_metrics, stage.prior)
      since = (since[0], since[1], since[2] + time.time() - off_start)
  bar.close()
  logger.close()
  manager.wait_until_finished()
  manager.close()
  return state


def _check_paths(config: ml_collections.ConfigDict) -> None:
  """Fails before any training on a data or prior path that cannot work."""
  if config.data.source == "folder" and not config.data.path:
    raise ValueError("config.data.source is 'folder' but config.data.path is empty: pass "
                     "--config.data.path=/path/to/images")
  prior = config.diffusion.prior_checkpoint
  if config.stage != "operator" and prior and not Path(prior).exists():
    raise FileNotFoundError(f"config.diffusion.prior_checkpoint {prior} does not exist")


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str | Path) -> dict[str, TrainState]:
  """Trains the stages named by ``config.stage`` ('all', 'operator' or 'diffusion') in ``workdir``.

  Stage 2 takes its frozen prior from ``config.diffusion.prior_checkpoint`` or, when that is
  empty, from this workdir's stage-1 best checkpoint (``FileNotFoundError`` if there is none).
  Returns the final train state of each stage run (their params are what checkpoints hold).
  """
  if config.distributed:
    jax.distributed.initialize()
  quiet_orbax()
  if config.stage not in STAGES + ("all",):
    raise ValueError(f"config.stage must be 'all' or one of {STAGES}, got {config.stage!r}")
  _check_paths(config)
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  mesh = data_mesh()
  model = make_model(config.model)
  sources = build_sources(config.data,
                          record_to=workdir / "split.json" if jax.process_index() == 0 else None)
  budget = _StepBudget(config.max_steps_per_run)
  key = jax.random.key(config.seed)
  states = {}
  for index, name in enumerate(STAGES):
    if config.stage not in ("all", name) or budget.left <= 0:
      continue
    cfg = config[name]
    validator = Validator(sources["val"], config.data, cfg.val_images, cfg.sample_images)
    if name == "operator":
      stage = _operator_stage(config, model, sources, mesh)
    else:
      stage = _diffusion_stage(config, model, sources, mesh, _stage2_prior(config, workdir))
    states[name] = _train_stage(stage, config, workdir, mesh, validator,
                                jax.random.fold_in(key, index), budget)
  return states


def _stage2_prior(config: ml_collections.ConfigDict, workdir: Path) -> Any:
  """The prior a stage-2 run resumes with (saved in its checkpoints), else ``_load_prior``."""
  directory = checkpoints.checkpoint_dir(workdir, "diffusion")
  if directory.is_dir():
    manager = checkpoints.stage_manager(directory, read_only=True)
    latest = manager.latest_step()
    if latest is not None:
      return checkpoints.restore_prior(manager, latest)
  return _load_prior(config, workdir)
