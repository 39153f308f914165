"""Super-resolve image and raster files of any size: what ``python -m neurop_jax.upsample`` runs.

PNG and JPEG are read and written with Pillow, as 8-bit RGB. TIFFs (GeoTIFF or not) are read and
written with rasterio (the 'geo' extra; without it, plain 8-bit RGB TIFFs still go through
Pillow): any band count and dtype, ``bands`` choosing the model's bands (1-based), ``values`` the
mapping from the file's units to the model's [0, 1] (``neurop_jax.io.values``: given, else the
model's own, else 0:255 for uint8; never guessed), nodata pixels filled for the model
(``neurop_jax.io.nodata``) and masked again in the output, which has the input's dtype, units,
band descriptions, CRS, ground extent, nodata and mask kind, as a Cloud-Optimized GeoTIFF unless
``cog=False``. Images are processed tile by tile (``neurop_jax.inference.tiled``) and written region
by
region: the operator exactly, the diffusion stage with blended tiles; ``prior_only`` skips the
diffusion stage; ``samples=K`` draws K diffusion samples in one program and writes their mean and,
beside it (``<name>_x2_std.tif``), their per-pixel standard deviation in the input's units (float32
for rasters, 8-bit levels for PNG/JPEG).

The model and its defaults come from a ``Run`` (``neurop_jax.inference.run``): a training
``workdir`` (its schedule, formulation, validation sampler, bands and value mapping), an original
``checkpoint`` (the paper's defaults), or a ``run`` made in Python; ``sampler``, ``steps`` and
``skip`` override the run's sampling as in ``super_resolve``. File ``i`` is sampled with the key
``fold_in(key(seed), i)``, as ``super_resolve_tiled(run, lr[None], rng=fold_in(key(seed), i))``
(and ``--mode evaluate``, image ``i``) would: the same image, key, sampler and steps give the same
output through every entry point.

Outputs are written atomically: an error, Ctrl-C or SIGTERM (``neurop_jax.upsample``) leaves no
partial file. Bad inputs (missing or unreadable files, images under ``MIN_SIDE`` pixels, scales
outside ``SCALE_RANGE``, bands or a value mapping that do not fit, missing checkpoints, unknown
samplers) stop the run with a message before any output is computed (the values of a raster are
checked on up to ``CHECKED_PIXELS`` of its pixels; beyond that they are clipped to the mapping); a
file whose pixels turn out undecodable stops the run there, the files before it written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
from pathlib import Path
from typing import Sequence

import jax
import numpy as np
from tqdm.auto import tqdm

from neurop_jax.diffusion.samplers import STUDENT
from neurop_jax.errors import InputError
from neurop_jax.inference.api import output_size
from neurop_jax.inference.run import Run, load_run, run_from_checkpoint
from neurop_jax.inference.tiled import super_resolve_regions
from neurop_jax.io import nodata, rasters, values
from neurop_jax.io.atomic import check_writable_dir
from neurop_jax.io.checkpoints import DamagedCheckpointError
from neurop_jax.io.images import (IMAGE_SUFFIXES, image_size, read_image, to_uint8,
                                  write_image)

SCALE_RANGE = (1.0, 16.0)
"""Allowed upsampling factors per axis, ``1 < s <= 16``: the models train on (1, 8] and are
evaluated out of distribution up to 10; beyond 16 the operator's cell input is far outside what it
has seen."""
MIN_SIDE = 8
"""The smallest input side, in pixels."""
CHECKED_PIXELS = 1024 * 1024
"""Pixels of a raster (every k-th row and column) whose values are checked against the value
mapping before the model is loaded (``ValueMapping.check_fit``)."""


def parse_size(text: str) -> tuple[int, int]:
  """``'HxW'`` (e.g. ``'1024x768'``: height 1024, width 768) as ``(H, W)``."""
  parts = text.lower().split("x")
  if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
    raise InputError(f"--size must be HEIGHTxWIDTH in pixels, e.g. 1024x768; got {text!r}")
  return int(parts[0]), int(parts[1])


def check_scale(scale: float) -> None:
  """Raises ``InputError`` unless ``1 < scale <= 16`` (``SCALE_RANGE``)."""
  lo, hi = SCALE_RANGE
  if not (math.isfinite(scale) and lo < scale <= hi):
    raise InputError(f"scale {scale:g} is out of range: use {lo:g} < scale <= {hi:g} (the model "
                     "is trained up to 8 and extrapolates moderately beyond)")


def _output_hw(in_hw: tuple[int, int], scale: float | None,
               size: tuple[int, int] | None) -> tuple[int, int]:
  """The output ``(H, W)`` (``api.output_size``: ``round(side * scale)``, or ``size``), the
  factor of each axis checked against ``SCALE_RANGE`` first."""
  if (scale is None) == (size is None):
    raise InputError("give exactly one of --scale and --size")
  for factor in ([scale] if size is None else [m / n for n, m in zip(in_hw, size)]):
    check_scale(factor)
  return output_size((1, *in_hw, 1), scale=scale, out_shape=size)


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
  """The ``Plan`` of an input file (checked by ``check_files``), or ``InputError`` saying what is
  wrong with it."""
  raster = mapping = None
  if _uses_rasterio(path):
    raster = rasters.open_raster(path, channels, bands)
    height, width = raster.height, raster.width
    mapping = values.choose(given, trained, raster.dtype, channels, str(path))
    mapping.check_fit(*rasters.read_bands(raster, max_pixels=CHECKED_PIXELS), str(path))
  else:
    if channels != 3 or bands is not None or given:
      raise InputError(f"input {path}: --bands, --values and models of other than 3 bands "
                       "need a TIFF read with rasterio; convert it to GeoTIFF")
    try:
      height, width = image_size(path)
    except ValueError as err:
      raise InputError(str(err)) from err
  if min(height, width) < MIN_SIDE:
    raise InputError(f"image {path} is {height}x{width}: too small, both sides must be at least "
                     f"{MIN_SIDE} pixels")
  return Plan(path, _output_hw((height, width), scale, size), raster, mapping)


def check_files(inputs: Sequence[str | os.PathLike]) -> list[Path]:
  """The input paths, each an existing file of a supported suffix (else ``InputError``)."""
  if not inputs:
    raise InputError("no input files given")
  paths = [Path(p) for p in inputs]
  for path in paths:
    if not path.is_file():
      raise InputError(f"input {path} does not exist or is not a file")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
      raise InputError(f"input {path}: unsupported suffix (use one of "
                       f"{', '.join(IMAGE_SUFFIXES)})")
  return paths


def open_run(run: Run | None = None, workdir: str | None = None, checkpoint: str | None = None,
             model_preset: str = "paper") -> Run:
  """The ``Run`` to upsample with: ``run`` itself, ``load_run(workdir)`` or
  ``run_from_checkpoint(checkpoint, model_preset)``; exactly one of the three (``InputError``).
  A damaged checkpoint of a workdir is one line naming the fix."""
  if sum(x is not None for x in (run, workdir, checkpoint)) != 1:
    raise InputError("give exactly one of --workdir (a neurop_jax run) and --checkpoint (an "
                     "original .pth/.npz file)")
  if run is not None:
    return run
  if checkpoint is not None:
    return run_from_checkpoint(checkpoint, model_preset)
  if Path(workdir).is_dir() and not os.access(workdir, os.R_OK | os.X_OK):
    raise InputError(f"--workdir {workdir}: no permission to read it; give a workdir you may read")
  try:
    return load_run(workdir)
  except DamagedCheckpointError as err:
    raise InputError(f"{err}: move that step's folder aside to use the previous checkpoint (a "
                     "training run resumed in the workdir does so itself)") from err


_STOPS: list[int] = []  # the signals received (``request_stop``), checked between output regions


def request_stop(signum: int) -> None:
  """Asks a running ``upsample`` to stop: it raises ``SystemExit(128 + signum)`` before its next
  output region, which removes the partial output (``io.atomic``). A signal handler calls this
  before raising the same exit itself: an exception raised by a handler is lost when the signal
  lands in a finaliser (``__del__``), and the work would then run on to the end."""
  _STOPS.append(signum)


def _regions_until_stopped(regions):
  for region in regions:
    if _STOPS:
      raise SystemExit(128 + _STOPS[0])
    yield region


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
    for origin, mean, std in _regions_until_stopped(regions(lr)):
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
    raise InputError(str(err)) from err
  pixels = np.empty((*plan.out_hw, 3), np.uint8)
  levels = None if std_target is None else np.empty((*plan.out_hw, 3), np.uint8)
  for (y0, x0), mean, std in _regions_until_stopped(regions(lr)):
    window = np.s_[y0:y0 + mean.shape[0], x0:x0 + mean.shape[1]]
    pixels[window] = to_uint8(mean)
    if levels is not None:
      levels[window] = to_uint8(std)
  write_image(target, pixels)
  if std_target is not None:
    write_image(std_target, levels)


def upsample(inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *,
             scale: float | None = None, size: tuple[int, int] | None = None,
             run: Run | None = None, workdir: str | None = None, checkpoint: str | None = None,
             model_preset: str = "paper", prior_only: bool = False, sampler: str | None = None,
             steps: int | None = None, skip: str | None = None, strength: float | None = None,
             consistency: bool | None = None, samples: int | None = None,
             bands: Sequence[int] | None = None, values: str | None = None, cog: bool = True,
             seed: int = 0, tile: int = 256, overlap: int = 32, tile_batch: int = 1,
             progress: bool = True) -> list[Path]:
  """Super-resolves image files into ``out_dir``; returns the paths written.

  Args:
    inputs: PNG, JPEG or TIFF (GeoTIFF) files.
    out_dir: the output folder (created).
    scale: the factor, ``1 < scale <= 16``; or
    size: the output ``(H, W)`` (each axis's factor in the same range).
    run: a ``Run`` (``load_run``, ``Run(model, params, ...)``); or
    workdir: a neurop_jax training run; or
    checkpoint, model_preset: an original checkpoint and the preset of its architecture.
    prior_only: the neural-operator prior alone (SRNO); else NeurOp-Diff, which needs a UNet.
    sampler, steps, skip: the diffusion sampler; None: the run's (``Run.sampling_for``: what a
      workdir's stage 2 validated with, e.g. DDIM 20 for configs/quickstart.py; the paper's DDIM
      50 for an original checkpoint).
    strength: the fidelity dial in [0, 1] (``inference.api.super_resolve``); None: the run's.
    consistency: make every diffusion step's estimate degrade to the input (tile by tile, see
      ``inference.consistency``); None: the run's (off for the paper and original checkpoints).
    samples: K diffusion draws: the output is their mean and ``<name>_std`` their per-pixel
      standard deviation; None for one draw and no spread.
    bands: the 1-based bands of TIFF inputs the model reads (default: the run's, else all).
    values: the value mapping of TIFF inputs, ``'LOW:HIGH'`` (``neurop_jax.io.values``); default:
      the run's, else 0:255 for uint8 files (others need it).
    cog: write TIFF outputs as Cloud-Optimized GeoTIFFs (else tiled GeoTIFFs).
    seed: seed of the diffusion noise; file ``i`` uses the key ``fold_in(key(seed), i)``.
    tile, overlap: output tile side and diffusion-tile overlap, in pixels.
    tile_batch: tiles per program (memory grows with it; accelerators want several).
    progress: show tqdm bars.

  Raises:
    InputError: with a message for the user; nothing is written for the failing file.
  """
  paths = check_files(inputs)
  if samples is not None and (samples < 1 or prior_only):
    raise InputError(f"--samples {samples}: give K >= 1 diffusion draws, without --prior-only "
                     "(the prior is deterministic)")
  if tile < MIN_SIDE or not 0 <= overlap < tile:
    raise InputError(f"need --tile >= {MIN_SIDE} and 0 <= --overlap < --tile, got {tile}, "
                     f"{overlap}")
  if tile_batch < 1:
    raise InputError(f"--tile_batch must be a positive number of tiles, got {tile_batch}")
  if strength is not None and not (math.isfinite(strength) and 0 <= strength <= 1):
    raise InputError(f"--strength must be in [0, 1], got {strength:g}")
  out_dir = Path(out_dir)
  check_writable_dir(out_dir, "--out")
  run = open_run(run, workdir, checkpoint, model_preset)
  if not prior_only and not run.has_unet:
    raise InputError("the checkpoint has no diffusion UNet (stage 1 only): use --prior-only")
  if steps is not None and not 1 <= steps <= run.schedule.num_timesteps:
    raise InputError(f"--steps must be in [1, {run.schedule.num_timesteps}], got {steps}")
  try:
    sampling = run.checked_sampling(sampler, steps, skip, strength=strength,
                                    consistency=consistency) if not prior_only else run.sampling
  except ValueError as err:
    raise InputError(f"--sampler: {err}") from err
  if not prior_only and sampler is None and sampling.sampler == STUDENT:
    print(f"upsample: the distilled student of {run.workdir} ({sampling.steps} steps, step "
          f"{run.student_step}); --sampler ddim for its teacher", file=sys.stderr)
  bands = rasters.parse_bands(run.bands) if bands is None else tuple(bands)
  plans = [plan_input(path, scale, size, run.channels, bands, values, run.value_mapping)
           for path in paths]
  targets = [output_path(plan.path, out_dir, scale, size) for plan in plans]
  if len(set(targets)) < len(targets):
    raise InputError("two inputs would be written to the same output file (same name in "
                     "different folders): upsample them in separate calls or --out folders")
  written = []
  key = jax.random.key(seed)
  desc = ("upsample (prior only)" if prior_only else
          f"upsample ({sampling.sampler}, {sampling.steps} steps)")
  for index, (plan, target) in enumerate(tqdm(list(zip(plans, targets)), desc=desc,
                                              disable=not progress)):
    regions = lambda lr: super_resolve_regions(
        run, lr, plan.out_hw, prior_only=prior_only, rng=jax.random.fold_in(key, index),
        sampler=sampling.sampler, steps=sampling.steps, skip=sampling.skip, eta=sampling.eta,
        strength=sampling.strength, consistency=sampling.consistency, samples=samples, tile=tile,
        overlap=overlap, tile_batch=tile_batch, progress=progress)
    std_target = None if samples is None else output_path(plan.path, out_dir, scale, size, "_std")
    if plan.raster is not None:
      _write_raster(plan, regions, target, std_target, cog)
    else:
      _write_image(plan, regions, target, std_target)
    written += [target] if std_target is None else [target, std_target]
  return written
