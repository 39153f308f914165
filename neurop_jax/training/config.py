"""The training config: every field ``training.loop.train_and_evaluate`` reads, with the paper's defaults.

Config files (``configs/<dataset>.py``) call ``base_config`` and change what differs; the suffix of
``--config configs/ucm.py:operator`` reaches their ``get_config(arg)`` and ``parse_arg`` reads it.
"""

from __future__ import annotations

import ml_collections

from neurop_jax.data.config import default_data_config
from neurop_jax.diffusion.config import default_diffusion_config
from neurop_jax.evaluation.config import default_evaluate_config
from neurop_jax.models.config import model_config

STAGES = ("operator", "diffusion")
DISTILL = "distill"
"""The stage that distils a trained stage 2 into a few-step student (``<workdir>/student``): named
alone (``--config <file>.py:distill``), never part of 'all'."""

# Stage 2 of the paper: Adam at these rates, stepping down every 100k iterations.
PAPER_DIFFUSION_LRS = (1e-4, 8e-5, 6e-5, 4e-5, 2e-5, 1e-5, 8e-6, 6e-6, 4e-6, 2e-6)


def parse_arg(arg: str | None, variants: tuple[str, ...] = ()) -> tuple[str, set[str]]:
  """The stage and the variants named by a config suffix such as ``'operator'`` or ``'test,diffusion'``.

  Returns ``(stage, variants)``: stage is 'all' when no stage is named. Unknown words raise
  ``ValueError`` listing what is accepted.
  """
  words = [w.strip() for w in (arg or "").split(",") if w.strip()]
  named = STAGES + (DISTILL,)
  unknown = [w for w in words if w not in named + variants]
  if unknown:
    raise ValueError(f"unknown config argument(s) {unknown}: use a stage {named} and/or a "
                     f"variant {variants}, comma separated")
  stages = [w for w in words if w in named]
  if len(stages) > 1:
    raise ValueError(f"name at most one stage in the config argument, got {stages}")
  return (stages[0] if stages else "all"), {w for w in words if w in variants}


def _loop_fields(**overrides) -> dict:
  """The training-loop fields shared by both stages (see ``base_config``)."""
  fields = dict(num_steps=0, ema_decay=0.0, grad_clip=0.0, adam_b1=0.9, adam_b2=0.999,
                adam_eps=1e-8, steps_per_call=1, log_every=100, eval_every=5000,
                checkpoint_every=1000, keep=2, val_images=0, sample_images=4, best_metric="psnr",
                best_mode="max")
  fields.update(overrides)
  return fields


def base_config(preset: str = "paper", stage: str = "all") -> ml_collections.ConfigDict:
  """The paper's two-stage recipe on the bundled sample images; datasets override ``data``.

  Top level:
    stage: 'all' (operator then diffusion), 'operator', 'diffusion' or 'distill'.
    seed: seed of initialisation, noise and dropout (the data order has ``data.seed``).
    distributed: call ``jax.distributed.initialize()`` first (multi-process runs: every process
      runs the same command and the same input pipeline, and puts its rows of each global batch
      on its devices; process 0 writes the records, all of them the checkpoints).
    coordinator_address, num_processes, process_id: its arguments ('host:port', the number of
      processes, this one's index); '', 0 and -1 leave them to JAX's cluster detection (SLURM,
      Open MPI, Kubernetes, Cloud TPU) and the JAX_COORDINATOR_ADDRESS variable.
    max_steps_per_run: stop after this many training steps in one process (0: no limit); the
      same command continues from the checkpoint written at the stop (time-sliced jobs, tests).
    transfer_guard: ``jax.transfer_guard`` level of the training steps ('allow'; 'log' or
      'disallow' to find implicit copies between host and device, which cost most on
      accelerators): the steps, their input and their train records run under it; the
      validations and checkpoints, which copy by design, do not.
    model: ``neurop_jax.models.model_config`` fields.
    data: ``neurop_jax.data.default_data_config`` fields (batch sizes are there).
  Both stages (``operator`` and ``diffusion``):
    num_steps: training steps (stage 1: 0 derives it from ``epochs``).
    ema_decay: EMA rate of the parameters kept in the train state (0: the EMA is the params).
    grad_clip: clip gradients to this global norm (0: no clipping, as the original; it reads a
      key that does not exist).
    adam_b1, adam_b2, adam_eps: Adam's constants (PyTorch's defaults, as the original).
    steps_per_call: training steps per compiled call (a ``lax.scan`` over stacked batches); a
      shorter last chunk (the stage's end, ``max_steps_per_run``) runs in the same program, its
      missing steps computed on a repeated batch and discarded.
    log_every, eval_every, checkpoint_every: in steps; every validation also checkpoints with its
      metrics, and the last step does both.
    keep: latest checkpoints kept, besides the best.
    best_metric, best_mode: the validation metric that makes a checkpoint the 'best' one (kept,
      and what ``load_run``, ``--mode evaluate`` and ``upsample`` read by default) and whether its
      'max' or 'min' is best; '' keeps the latest steps only ('best' is then the latest). Stage 1:
      'psnr', 'max'. Stage 2: 'lpips', 'min' (PSNR is where a diffusion refiner trails its prior,
      so it would pick the UNet closest to the prior); without LPIPS (``val_lpips`` off, its
      weights missing, or bands other than RGB) the latest.
    val_images: validation images, evenly spaced over the val split (0: all of them).
    sample_images: rows of the PNG sample grid written at each validation.
  Stage 1 (``operator``, the SRNO recipe):
    epochs, warmup_epochs: 500 and 50 (the paper; SRNO's warm-up length).
    learning_rate, warmup_multiplier: Adam starts at ``learning_rate`` (4e-5) and rises linearly
      to ``learning_rate * warmup_multiplier`` (4e-4) over the warm-up, as SRNO's
      GradualWarmupScheduler(multiplier=10, total_epoch=50).
    decay: after the warm-up, 'cosine' to 0 at the last step (SRNO's CosineAnnealingLR) or
      'constant'.
  Stage 2 (``diffusion``: ``default_diffusion_config`` fields plus):
    learning_rates, learning_rate_every: the step schedule (1e-4 ... 2e-6, every 100k steps).
    prior_checkpoint: the frozen prior: '' for this workdir's stage-1 best checkpoint, a workdir
      or checkpoint folder of ours, or an original SRNO / NeurOp-Diff file (.pth, .npz) read
      with ``neurop_jax.models.convert``.
    val_sampler, val_steps, val_skip, val_strength, val_consistency: the sampler of validation,
      and the sampling a trained run gives every entry point by default
      (``inference.run.Run.sampling``): the paper's DDIM with 50 uniform steps at strength 1 (the
      whole chain; the fidelity dial of ``diffusion.samplers.sample_conditioned``) without
      consistency (True: each step's estimate is projected onto the images that degrade to the
      LR input, ``inference.consistency``).
    lpips_weight: the weight of a perceptual term, the LPIPS of the clean image each step's
      prediction stands for against the HR, added to the regression loss (0: the paper; see
      ``training.steps.diffusion_step``; needs the ``lpips`` extra and RGB crops of >= 31 px).
    val_lpips: also measure LPIPS of the samples, the prior and bicubic at validation (needs the
      ``lpips`` extra; skipped with a warning when it is not installed).
  Distillation (``distill``, ``--config <file>.py:distill``; ``training.distill``): a student
  UNet, started from the teacher's EMA weights, that samples in 1 to 4 evaluations.
    teacher: the stage-2 checkpoint distilled, 'best' or 'latest'.
    steps: the student step counts trained together (one set of weights): (1, 2, 4).
    val_steps, val_consistency: the student's validation sampling, and the run's default
      sampling once a student exists (``sampler='student'``).
    pairs: the number of (x_T, prior, teacher output) training pairs made once (training crops).
    teacher_steps, teacher_skip: the teacher's deterministic DDIM (50 uniform steps: the paper's).
    teacher_weight, hr_weight, lpips_weight: the loss, teacher_weight L1(student, teacher) +
      hr_weight L1(student, HR) + lpips_weight LPIPS(student, HR).
    learning_rate: Adam's constant rate; the loop fields as the other stages.
  Evaluation (``--mode evaluate``): ``evaluate``, the fields of
  ``neurop_jax.evaluation.config.default_evaluate_config`` (scales, methods, sampler, images, crops).
  """
  config = ml_collections.ConfigDict()
  config.stage = stage
  config.seed = 0
  config.distributed = False
  config.coordinator_address = ""
  config.num_processes = 0
  config.process_id = -1
  config.max_steps_per_run = 0
  config.transfer_guard = "allow"
  config.model = model_config(preset)
  config.data = default_data_config()

  config.operator = ml_collections.ConfigDict(_loop_fields(
      epochs=500, warmup_epochs=50, learning_rate=4e-5, warmup_multiplier=10.0, decay="cosine",
      eval_every=2000))

  config.diffusion = default_diffusion_config()
  config.diffusion.update(_loop_fields(
      num_steps=1_000_000, ema_decay=0.999, learning_rates=PAPER_DIFFUSION_LRS,
      learning_rate_every=100_000, prior_checkpoint="", val_images=4, val_sampler="ddim",
      val_steps=50, val_skip="uniform", val_strength=1.0, val_consistency=False,
      val_lpips=True, lpips_weight=0.0,
      eval_every=10_000,
      checkpoint_every=5000, best_metric="lpips", best_mode="min"))
  config.distill = ml_collections.ConfigDict(_loop_fields(
      num_steps=2000, ema_decay=0.99, learning_rate=2e-5, teacher="best", steps=(1, 2, 4),
      val_images=4, val_steps=1, val_consistency=False, pairs=512, teacher_steps=50,
      teacher_skip="uniform", teacher_weight=1.0, hr_weight=0.0, lpips_weight=0.0,
      eval_every=500, checkpoint_every=500, best_metric="lpips", best_mode="min",
      val_lpips=True))
  config.evaluate = default_evaluate_config()
  return config
