"""One trained run, as every entry point takes it: ``load_run(workdir)`` or ``Run(model, params)``.

A ``Run`` holds what sampling a model needs and what travels with it: the model and its config,
the EMA parameters on device, the noise schedule and the stage-2 formulation it trained with, its
sampling defaults (what its stage 2 validated with) and, for rasters, its bands and value mapping.
``super_resolve``, ``make_super_resolver``, ``prior_only``, the tiled calls, ``upsample`` and
``--mode evaluate`` take a ``Run`` and resolve their options against it in one place,
``Run.sampling_for``. A ``Run`` made from a model and parameters alone has the paper's defaults,
the ones written here: the original linear schedule of 2000 steps, eps-prediction on the image,
DDIM with 50 uniform steps and eta 0::

  run = load_run("runs/ucm")                        # a workdir of ours
  run = Run(model, params)                          # any parameters, the paper's defaults
  run = run_from_checkpoint("NeurOp-Diff.pth", "paper")  # an original checkpoint, likewise
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path

import jax
import ml_collections

from neurop_jax.diffusion.formulation import Formulation
from neurop_jax.diffusion.samplers import STUDENT, Sampling
from neurop_jax.diffusion.schedule import Schedule, make_schedule, schedule_from_config
from neurop_jax.errors import InputError
from neurop_jax.io import checkpoints
from neurop_jax.models import NeurOpDiff, make_model, model_config
from neurop_jax.models.config import PRESETS

PAPER_SAMPLING = Sampling()
"""The paper's sampling: DDIM, 50 steps spaced uniformly (range(0, 2000, 40)), eta 0."""


@functools.lru_cache(maxsize=None)
def paper_schedule() -> Schedule:
  """The original's linear schedule: 2000 steps, betas from 1e-6 to 0.01."""
  return make_schedule()


@dataclasses.dataclass(frozen=True, eq=False)
class Run:
  """A model with its parameters and everything its sampling needs (immutable).

  Attributes:
    model: the NeurOp-Diff module.
    params: ``{'params': {'operator': ..., 'unet': ...}}`` (no 'unet' for a stage-1 run), EMA
      weights, on device for ``load_run``.
    schedule: the noise schedule stage 2 trained with.
    formulation: what its UNet predicts and where it diffuses.
    sampling: the sampler, steps, spacing and eta that entry points use unless told otherwise.
    model_config: the model's config (frozen), None when the run was made from a module alone.
    bands: the 1-based raster bands the model reads, '' for all (``--bands`` of upsample).
    value_mapping: the mapping of raster values to [0, 1] it trained with ('' for none).
    workdir, step: where it was read from (None for a run made in memory), the stage-2 step
      (else the stage-1 step).
    student_step: the step of the distilled student in ``params['params']['student']`` (None:
      the run has none).
  """

  model: NeurOpDiff
  params: dict
  schedule: Schedule = dataclasses.field(default_factory=paper_schedule)
  formulation: Formulation = Formulation()
  sampling: Sampling = PAPER_SAMPLING
  model_config: ml_collections.FrozenConfigDict | None = None
  bands: str = ""
  value_mapping: str = ""
  workdir: Path | None = None
  step: int | None = None
  student_step: int | None = None

  @property
  def channels(self) -> int:
    """The bands of the images the model reads and writes."""
    return self.model.operator.channels

  @property
  def has_unet(self) -> bool:
    """Whether the run has a diffusion stage (else only the prior can be computed)."""
    return "unet" in self.params["params"]

  def sampling_for(self, sampler: str | None = None, steps: int | None = None,
                   skip: str | None = None, eta: float | None = None,
                   strength: float | None = None, consistency: bool | None = None) -> Sampling:
    """The run's sampling defaults with the caller's choices over them (``Sampling.with_overrides``:
    None keeps the run's; another sampler brings its own spacing and eta 0)."""
    return self.sampling.with_overrides(sampler, steps, skip, eta, strength, consistency)

  @property
  def has_student(self) -> bool:
    """Whether the run holds a distilled student (``sampler='student'``, ``training.distill``)."""
    return STUDENT in self.params["params"]

  def checked_sampling(self, sampler: str | None = None, steps: int | None = None,
                       skip: str | None = None, eta: float | None = None,
                       strength: float | None = None,
                       consistency: bool | None = None) -> Sampling:
    """``sampling_for``, raising ValueError when the run lacks the network it names: a UNet
    (stage 1 only) or the student."""
    if not self.has_unet:
      raise ValueError("the run has no diffusion UNet (stage 1 only): compute its prior alone "
                       "(prior_only, prior_only_tiled, upsample --prior-only)")
    sampling = self.sampling_for(sampler, steps, skip, eta, strength, consistency)
    if sampling.sampler == STUDENT and not self.has_student:
      raise ValueError("sampler='student' needs a distilled student and the run has none: "
                       "distil one with `python -m neurop_jax.main --config <file>.py:distill "
                       "--workdir RUN`, or choose another sampler")
    return sampling


def _sampling_of(diffusion_cfg: ml_collections.ConfigDict) -> Sampling:
  """The sampling a stage-2 config validated with (the paper's when it predates those fields)."""
  if "val_sampler" not in diffusion_cfg:
    return PAPER_SAMPLING
  return Sampling(diffusion_cfg.val_sampler, int(diffusion_cfg.val_steps), diffusion_cfg.val_skip,
                  strength=float(diffusion_cfg.get("val_strength", 1.0)),
                  consistency=bool(diffusion_cfg.get("val_consistency", False)))


def load_run(workdir: str | os.PathLike, which: str = "best",
             sharding: jax.sharding.Sharding | None = None) -> Run:
  """The trained run in ``workdir``, read once: its stage-2 step with the prior saved beside it, or
  its stage-1 operator alone when stage 2 has no checkpoint.

  A workdir that holds a distilled student (``<workdir>/student``, ``--config <file>.py:distill``)
  gives it as ``params['params']['student']`` and samples with it by default: ``sampler='student'``
  at its ``distill.val_steps`` (every entry point; ``sampler='ddim'`` etc. for the teacher).

  Args:
    workdir: a training workdir (``python -m neurop_jax.main ... --workdir``).
    which: 'best' (by the stage's ``best_metric``: validation LPIPS in stage 2 where it was
      measured, else the latest step; PSNR in stage 1) or 'latest'.
    sharding: where the parameters go (e.g. ``NamedSharding(mesh, P())`` to replicate them over
      a mesh); None is the default device. They are restored straight onto it.

  Raises:
    MissingInputError: nothing trained in ``workdir``.
    DamagedCheckpointError: the chosen step's files are damaged.
  """
  student_step = None
  if which not in checkpoints.WHICH:
    raise InputError(f"which must be one of {checkpoints.WHICH}, got {which!r}")
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0]) if sharding is None else sharding
  read = checkpoints.read_stage(checkpoints.checkpoint_dir(workdir, "diffusion"), "diffusion",
                                which, sharding)
  if read is not None:
    params = {"operator": read.prior, "unet": read.params}
    diffusion = read.config.diffusion
    schedule, formulation = schedule_from_config(diffusion), Formulation.from_config(diffusion)
    sampling = _sampling_of(diffusion)
    student = checkpoints.read_stage(checkpoints.checkpoint_dir(workdir, STUDENT), STUDENT, which,
                                     sharding, section="distill")
    if student is not None:
      params[STUDENT] = student.params
      distill = student.config.distill
      sampling = Sampling(STUDENT, int(distill.val_steps),
                          consistency=bool(distill.val_consistency))
      student_step = student.step
  else:
    read = checkpoints.read_stage(checkpoints.checkpoint_dir(workdir, "operator"), "operator",
                                  which, sharding)
    if read is None:
      raise checkpoints.missing_run(workdir, "trained")
    params, schedule, formulation, sampling = ({"operator": read.params}, paper_schedule(),
                                               Formulation(), PAPER_SAMPLING)
  config = read.config
  return Run(model=make_model(config.model), params={"params": params}, schedule=schedule,
             formulation=formulation, sampling=sampling,
             model_config=ml_collections.FrozenConfigDict(config.model),
             bands=str(config.data.get("bands", "")),
             value_mapping=str(config.data.get("value_mapping", "")),
             workdir=Path(workdir).absolute(), step=read.step, student_step=student_step)


def run_from_checkpoint(path: str | os.PathLike, preset: str = "paper") -> Run:
  """A run of an original NeurOp-Diff or SRNO checkpoint (``.pth``, ``.npz``), with the paper's
  defaults; ``preset`` is the architecture it was trained with (``models.config.PRESETS``).

  Raises ``InputError`` naming the fix for a missing file, an unknown preset, a checkpoint that
  does not fit the preset or one that holds a UNet alone.
  """
  from neurop_jax.models.convert import convert_checkpoint  # Reading .pth files may import torch.

  if not Path(path).is_file():
    raise InputError(f"checkpoint {path} does not exist")
  if preset not in PRESETS:
    raise InputError(f"unknown model preset {preset!r}: choose one of {PRESETS}")
  cfg = model_config(preset)
  try:
    params = convert_checkpoint(path, cfg)
  except (ValueError, ImportError, OSError) as err:
    raise InputError(f"cannot load checkpoint {path}: {err}") from err
  if "operator" not in params["params"]:
    raise InputError(f"checkpoint {path} holds a UNet alone: NeurOp-Diff needs its operator too "
                     "(an SRNO or NeurOp-Diff checkpoint)")
  return Run(model=make_model(cfg), params=jax.device_put(params),
             model_config=ml_collections.FrozenConfigDict(cfg))
