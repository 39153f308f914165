"""Super-resolve image and raster files of any size: what ``python -m neurop_jax.upsample`` runs.

PNG and JPEG are read and written with Pillow, as 8-bit RGB. TIFFs (GeoTIFF or not) are read and
written with rasterio (the 'geo' extra; without it, plain 8-bit RGB TIFFs still go through
Pillow): any band count and dtype, ``bands`` choosing the model's bands (1-based), ``values`` the
mapping from the file's units to the model's [0, 1] (``neurop_jax.io.values``: given, else the
model's own, else 0:255 for uint8; never guessed), nodata pixels filled for the model
(``neurop_jax.io.nodata``) and masked again in the output, which has the input's dtype, units,
band descriptions, CRS, ground extent, nodata and mask kind, as a Cloud-Optimized GeoTIFF unless
``cog=False``. Images are processed tile by tile (``neurop_jax.tiled``) and written region by
region: the operator exactly, the diffusion stage with blended tiles; ``prior_only`` skips the
diffusion stage; ``samples=K`` draws K diffusion samples in one program and writes their mean and,
beside it (``<name>_x2_std.tif``), their per-pixel standard deviation in the input's units (float32
for rasters, 8-bit levels for PNG/JPEG).

Outputs are written atomically: an error leaves no partial file. Bad inputs (missing or unreadable
files, images under ``MIN_SIDE`` pixels, scales outside ``SCALE_RANGE``, bands or a value mapping
that do not fit, missing checkpoints) stop the run with a message before the model is loaded (the
values of a raster are checked on up to ``CHECKED_PIXELS`` of its pixels; beyond that they are
clipped to the mapping); a file whose pixels turn out undecodable stops the run there, the files
before it written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Sequence

import jax
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from neurop_jax.errors import InputError
from neurop_jax.io import nodata, rasters, values
from neurop_jax.io.images import IMAGE_SUFFIXES, read_image, to_uint8, write_image
from neurop_jax.inference.api import DEFAULT_SKIP, default_schedule
from neurop_jax.models import make_model, model_config
from neurop_jax.models.config import PRESETS
from neurop_jax.diffusion.formulation import Formulation
from neurop_jax.diffusion.samplers import SAMPLERS
from neurop_jax.inference.tiled import super_resolve_regions

SCALE_RANGE = (1.0, 16.0)
"""Allowed upsampling factors per axis, ``1 < s <= 16``: the models train on (1, 8] and are
evaluated out of distribution up to 10; beyond 16 the operator's cell input is far outside what it
has seen."""
MIN_SIDE = 8
"""The smallest input side, in pixels."""
CHECKED_PIXELS = 1024 * 1024
"""Pixels of a raster (every k-th row and column) whose values are checked against the value
mapping before the model is loaded (``ValueMapping.check_fit``)."""


class UpsampleError(InputError):
  """A bad input, option or checkpoint, with a message meant for the user."""


def parse_size(text: str) -> tuple[int, int]:
  """``'HxW'`` (e.g. ``'1024x768'``: height 1024, width 768) as ``(H, W)``."""
  parts = text.lower().split("x")
  if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
    raise UpsampleError(f"--size must be HEIGHTxWIDTH in pixels, e.g. 1024x768; got {text!r}")
  return int(parts[0]), int(parts[1])


def check_scale(scale: float) -> None:
  """Raises ``UpsampleError`` unless ``1 < scale <= 16`` (``SCALE_RANGE``)."""
  lo, hi = SCALE_RANGE
  if not (math.isfinite(scale) and lo < scale <= hi):
    raise UpsampleError(f"scale {scale:g} is out of range: use {lo:g} < scale <= {hi:g} (the model "
                        "is trained up to 8 and extrapolates moderately beyond)")


def output_size(in_hw: tuple[int, int], scale: float | None,
                size: tuple[int, int] | None) -> tuple[int, int]:
  """The output ``(H, W)``: ``round(side * scale)`` or ``size``, each axis's factor checked."""
  if (scale is None) == (size is None):
    raise UpsampleError("give exactly one of --scale and --size")
  if scale is not None:
    check_scale(scale)
  out_hw = size if size is not None else tuple(int(round(n * scale)) for n in in_hw)
  for n, m in zip(in_hw, out_hw):
    check_scale(m / n if size is not None else scale)
  return out_hw


def check_out_dir(out_dir: Path) -> None:
  """Raises ``UpsampleError`` unless ``out_dir`` is a folder, or can be made one, that we may write.

  Nothing is created here: the folder is made when the first output is written.
  """
  if out_dir.exists() and not out_dir.is_dir():
    raise UpsampleError(f"--out {out_dir} is a file: give a folder (created if missing)")
  existing = out_dir
  while not existing.exists():
    existing = existing.parent
  if not existing.is_dir():
    raise UpsampleError(f"--out {out_dir} cannot be created: {existing} is a file, not a folder")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise UpsampleError(f"--out {out_dir}: no permission to write in {existing}; choose another "
                        "folder")


def output_path(path: Path, out_dir: Path, scale: float | None,
                size: tuple[int, int] | None, what: str = "") -> Path:
  """``out_dir/<stem>_x<scale><what><suffix>`` or ``out_dir/<stem>_<H>x<W><what><suffix>``
  (``what`` '_std' for the spread of the samples)."""
  tag = f"x{scale:g}" if scale is not None else f"{size[0]}x{size[1]}"
  return out_dir / f"{path.stem}_{tag}{what}{path.suffix.lower()}"


@dataclasses.dataclass(frozen=True)
class Plan:
  """One input: how it is read (``raster`` info, or None for Pillow) and its output size."""

  path: Path
  out_hw: tuple[int, int]
  raster: rasters.RasterInfo | None
  mapping: values.ValueMapping | None


def _uses_rasterio(path: Path) -> bool:
  """TIFFs go through rasterio; without it, only plain (not Geo) TIFFs that Pillow reads."""
  if path.suffix.lower() not in rasters.TIFF_SUFFIXES:
    return False
  try:
    import rasterio  # noqa: F401  (only checks that it is installed)
  except ImportError:
    return rasters.is_geotiff(path)
  return True


def plan_input(path: Path, scale: float | None, size: tuple[int, int] | None, channels: int,
               bands: Sequence[int] | None, given: str | None, trained: str | None) -> Plan:
  """The ``Plan`` of an input file, or ``UpsampleError`` saying what is wrong with it."""
  if not path.is_file():
    raise UpsampleError(f"input {path} does not exist or is not a file")
  if path.suffix.lower() not in IMAGE_SUFFIXES:
    raise UpsampleError(f"input {path}: unsupported suffix (use one of "
                        f"{', '.join(IMAGE_SUFFIXES)})")
  raster = mapping = None
  if _uses_rasterio(path):
    raster = rasters.open_raster(path, channels, bands)
    height, width = raster.height, raster.width
    mapping = values.choose(given, trained, raster.dtype, channels, str(path))
    mapping.check_fit(*rasters.read_bands(raster, max_pixels=CHECKED_PIXELS), str(path))
  else:
    if channels != 3 or bands is not None or given:
      raise UpsampleError(f"input {path}: --bands, --values and models of other than 3 bands "
                          "need a TIFF read with rasterio; convert it to GeoTIFF")
    try:
      with Image.open(path) as image:
        width, height = image.size
    except (OSError, SyntaxError) as err:
      raise UpsampleError(f"cannot read image {path}: {err}") from err
  if min(height, width) < MIN_SIDE:
    raise UpsampleError(f"image {path} is {height}x{width}: too small, both sides must be at least "
                        f"{MIN_SIDE} pixels")
  return Plan(path, output_size((height, width), scale, size), raster, mapping)


@contextlib.contextmanager
def _readable_run() -> Iterator[None]:
  """Turns a damaged checkpoint of a workdir into one ``UpsampleError`` line with the fix."""
  from neurop_jax.io.checkpoints import DamagedCheckpointError
  try:
    yield
  except DamagedCheckpointError as err:
    raise UpsampleError(f"{err}: move that step's folder aside to use the previous checkpoint (a "
                        "training run resumed in the workdir does so itself)") from err


def load_model(workdir: str | None = None, checkpoint: str | None = None,
               model_preset: str = "paper"):
  """``(model, params)`` from a training workdir or an original NeurOp-Diff/SRNO checkpoint."""
  if (workdir is None) == (checkpoint is None):
    raise UpsampleError("give exactly one of --workdir (a neurop_jax run) and --checkpoint (an "
                        "original .pth/.npz file)")
  if workdir is not None:
    from neurop_jax.io.checkpoints import restore_inference_params
    try:
      with _readable_run():
        cfg, params = restore_inference_params(workdir)
    except FileNotFoundError as err:
      raise UpsampleError(str(err)) from err
    return make_model(cfg), params
  if not Path(checkpoint).is_file():
    raise UpsampleError(f"checkpoint {checkpoint} does not exist")
  if model_preset not in PRESETS:
    raise UpsampleError(f"unknown --model-preset {model_preset!r}: choose one of {PRESETS}")
  from neurop_jax.models.convert import convert_checkpoint
  cfg = model_config(model_preset)
  try:
    converted = convert_checkpoint(checkpoint, cfg)
  except (ValueError, ImportError, OSError) as err:
    raise UpsampleError(f"cannot load checkpoint {checkpoint}: {err}") from err
  if "operator" not in converted:
    raise UpsampleError(f"checkpoint {checkpoint} holds a UNet alone: NeurOp-Diff needs its "
                        "operator too (an SRNO or NeurOp-Diff checkpoint)")
  return make_model(cfg), {"params": {k: v["params"] for k, v in converted.items()}}


def _run_options(workdir: str | None) -> dict:
  """What a training workdir says about sampling and its inputs (defaults without one)."""
  options = dict(schedule=default_schedule(), formulation=Formulation(), sampler=None, channels=3,
                 values="", bands="")
  if workdir is None or not Path(workdir).is_dir():
    return options
  from neurop_jax.io.checkpoints import run_settings
  with _readable_run():
    try:
      run = run_settings(workdir)
    except FileNotFoundError as err:
      raise UpsampleError(str(err)) from err
  data = run.config.data
  options.update(schedule=run.schedule, formulation=run.formulation, sampler=run.val_sampler,
                 channels=int(run.config.model.get("channels", 3)),
                 values=data.get("value_mapping", ""), bands=data.get("bands", ""))
  return options


def _write_raster(plan: Plan, regions, target: Path, std_target: Path | None, cog: bool) -> None:
  """Reads ``plan``'s raster, runs ``regions(lr)`` and writes the output (and the spread).

  A raster without a mask is read a window at a time (``rasters.WindowReader``); one with a mask
  is held in its own dtype with its nodata pixels filled (``nodata.fill`` needs the whole image),
  seen through ``values.UnitView``.
  """
  info, mapping = plan.raster, plan.mapping
  spread_profile = rasters.output_profile(info, plan.out_hw, np.float32, nodata=np.nan)
  with contextlib.ExitStack() as stack:
    if info.mask == "none":
      lr, valid = stack.enter_context(rasters.WindowReader(info, mapping)), None
    else:
      data, valid = rasters.read_bands(info)
      lr = values.UnitView(nodata.fill(data, valid), mapping)
    out = stack.enter_context(rasters.RasterWriter(
        target, rasters.output_profile(info, plan.out_hw), cog))
    spread = None if std_target is None else stack.enter_context(
        rasters.RasterWriter(std_target, spread_profile, cog))
    for origin, mean, std in regions(lr):
      mask = (np.ones(mean.shape[:2], bool) if valid is None else
              nodata.upsample_mask(valid, origin, mean.shape[:2], plan.out_hw))
      out.write(origin, mapping.from_unit(mean, info.dtype), mask)
      if spread is not None:
        spread.write(origin, (std * mapping.span()).astype(np.float32), mask)


def _write_image(plan: Plan, regions, target: Path, std_target: Path | None) -> None:
  """Reads ``plan``'s PNG/JPEG/TIFF with Pillow, runs ``regions(lr)``, writes 8-bit images (the
  spread in 8-bit levels: std * 255, rounded)."""
  try:
    lr = read_image(plan.path)
  except ValueError as err:
    raise UpsampleError(str(err)) from err
  pixels = np.empty((*plan.out_hw, 3), np.uint8)
  levels = None if std_target is None else np.empty((*plan.out_hw, 3), np.uint8)
  for (y0, x0), mean, std in regions(lr):
    window = np.s_[y0:y0 + mean.shape[0], x0:x0 + mean.shape[1]]
    pixels[window] = to_uint8(mean)
    if levels is not None:
      levels[window] = to_uint8(std)
  write_image(target, pixels)
  if std_target is not None:
    write_image(std_target, levels)


def upsample(inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *,
             scale: float | None = None, size: tuple[int, int] | None = None,
             model=None, params: dict | None = None, workdir: str | None = None,
             checkpoint: str | None = None, model_preset: str = "paper", prior_only: bool = False,
             sampler: str | None = None, steps: int | None = None, skip: str | None = None,
             samples: int | None = None, bands: Sequence[int] | None = None,
             values: str | None = None, cog: bool = True, seed: int = 0, tile: int = 256,
             overlap: int = 32, progress: bool = True) -> list[Path]:
  """Super-resolves image files into ``out_dir``; returns the paths written.

  Args:
    inputs: PNG, JPEG or TIFF (GeoTIFF) files.
    out_dir: the output folder (created).
    scale: the factor, ``1 < scale <= 16``; or
    size: the output ``(H, W)`` (each axis's factor in the same range).
    model, params: a NeurOp-Diff and its ``{'params': {'operator', 'unet'?}}``; or
    workdir: a neurop_jax training run (its schedule, formulation, bands and value mapping are
      used); or
    checkpoint, model_preset: an original checkpoint and the preset of its architecture.
    prior_only: the neural-operator prior alone (SRNO); else NeurOp-Diff, which needs a UNet.
    sampler, steps, skip: the diffusion sampler. None: what the ``workdir`` run validated with
      (e.g. DDIM 20 for configs/quickstart.py), else DPM-Solver++ with 10 steps; skip None is
      the sampler's default spacing.
    samples: K diffusion draws: the output is their mean and ``<name>_std`` their per-pixel
      standard deviation; None for one draw and no spread.
    bands: the 1-based bands of TIFF inputs the model reads (default: the run's, else all).
    values: the value mapping of TIFF inputs, ``'LOW:HIGH'`` (``neurop_jax.io.values``); default:
      the run's, else 0:255 for uint8 files (others need it).
    cog: write TIFF outputs as Cloud-Optimized GeoTIFFs (else tiled GeoTIFFs).
    seed: seed of the diffusion noise; file ``i`` uses ``fold_in(key(seed), i)``.
    tile, overlap: output tile side and diffusion-tile overlap, in pixels.
    progress: show tqdm bars.

  Raises:
    UpsampleError (an InputError): with a message for the user; nothing is written for the
      failing file.
  """
  if not inputs:
    raise UpsampleError("no input files given")
  run = _run_options(workdir)
  if model is not None:
    run["channels"] = model.operator.channels
  if sampler is None and steps is None and skip is None and run["sampler"] is not None:
    sampler, steps, skip = run["sampler"]
  sampler = "dpm_solver_pp" if sampler is None else sampler
  steps = 10 if steps is None else steps
  if sampler not in SAMPLERS:
    raise UpsampleError(f"unknown --sampler {sampler!r}: choose one of {tuple(SAMPLERS)}")
  if not 1 <= steps <= run["schedule"].num_timesteps:
    raise UpsampleError(f"--steps must be in [1, {run['schedule'].num_timesteps}], got {steps}")
  if samples is not None and (samples < 1 or prior_only):
    raise UpsampleError(f"--samples {samples}: give K >= 1 diffusion draws, without --prior-only "
                        "(the prior is deterministic)")
  if tile < MIN_SIDE or not 0 <= overlap < tile:
    raise UpsampleError(f"need --tile >= {MIN_SIDE} and 0 <= --overlap < --tile, got {tile}, "
                        f"{overlap}")
  out_dir = Path(out_dir)
  check_out_dir(out_dir)
  bands = rasters.parse_bands(run["bands"]) if bands is None else tuple(bands)
  plans = [plan_input(Path(p), scale, size, run["channels"], bands, values, run["values"])
           for p in inputs]
  targets = [output_path(plan.path, out_dir, scale, size) for plan in plans]
  if len(set(targets)) < len(targets):
    raise UpsampleError("two inputs would be written to the same output file (same name in "
                        "different folders): upsample them in separate calls or --out folders")
  if model is None:
    model, params = load_model(workdir, checkpoint, model_preset)
  if model.operator.channels != run["channels"]:
    raise UpsampleError(f"the model reads {model.operator.channels} bands, not {run['channels']}")
  if not prior_only and "unet" not in params["params"]:
    raise UpsampleError("the checkpoint has no diffusion UNet (stage 1 only): use --prior-only")
  written = []
  key = jax.random.key(seed)
  desc = "upsample (prior only)" if prior_only else f"upsample ({sampler}, {steps} steps)"
  for index, (plan, target) in enumerate(tqdm(list(zip(plans, targets)), desc=desc,
                                              disable=not progress)):
    regions = lambda lr: super_resolve_regions(
        model, params, lr, plan.out_hw, prior_only=prior_only, rng=jax.random.fold_in(key, index),
        schedule=run["schedule"], sampler=sampler, steps=steps,
        skip=DEFAULT_SKIP[sampler] if skip is None else skip, tile=tile, overlap=overlap,
        formulation=run["formulation"], samples=samples, progress=progress)
    std_target = None if samples is None else output_path(plan.path, out_dir, scale, size, "_std")
    if plan.raster is not None:
      _write_raster(plan, regions, target, std_target, cog)
    else:
      _write_image(plan, regions, target, std_target)
    written += [target] if std_target is None else [target, std_target]
  return written
