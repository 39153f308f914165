"""Super-resolve image files of any size: ``python -m neurop_jax.upsample``.

  python -m neurop_jax.upsample scene.png other.tif --scale 3.5 --out sr/ --workdir runs/ucm
  python -m neurop_jax.upsample scene.tif --size 2048x2048 --out sr/ \
      --checkpoint NeurOp-Diff.pth --model-preset paper --sampler ddim --steps 50
  python -m neurop_jax.upsample scene.tif --scale 2 --out sr/ --workdir runs/ucm --prior-only

PNG, JPEG and TIFF are read and written in their own format (``<name>_x3.5.png``,
``<name>_2048x2048.tif``); a GeoTIFF gives a GeoTIFF with the same CRS and the pixel size divided by
the scale (needs the 'geo' extra, rasterio). Images are processed tile by tile in bounded memory
(``neurop_jax.tiled``): the operator exactly, the diffusion stage with blended tiles;
``--prior-only`` skips the diffusion stage. Outputs are written atomically: an error leaves no
partial file. Bad inputs (missing or unreadable files, images under ``MIN_SIDE`` pixels, scales
outside ``SCALE_RANGE``, missing checkpoints) stop the run with a message before the model is
loaded; a file that turns out undecodable when read stops the run there, the files before it
written.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Sequence

import jax
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from neurop_jax import geotiff
from neurop_jax.data.images import IMAGE_SUFFIXES, read_image, write_image
from neurop_jax.errors import InputError
from neurop_jax.inference import DEFAULT_SKIP, default_schedule
from neurop_jax.models import make_model, model_config
from neurop_jax.models.config import PRESETS
from neurop_jax.parameterization import Formulation
from neurop_jax.samplers import SAMPLERS
from neurop_jax.tiled import super_resolve_tiled

SCALE_RANGE = (1.0, 16.0)
"""Allowed upsampling factors per axis, ``1 < s <= 16``: the models train on (1, 8] and are
evaluated out of distribution up to 10; beyond 16 the operator's cell input is far outside what it
has seen."""
MIN_SIDE = 8
"""The smallest input side, in pixels."""


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
                size: tuple[int, int] | None) -> Path:
  """``out_dir/<stem>_x<scale><suffix>`` or ``out_dir/<stem>_<H>x<W><suffix>``."""
  tag = f"x{scale:g}" if scale is not None else f"{size[0]}x{size[1]}"
  return out_dir / f"{path.stem}_{tag}{path.suffix.lower()}"


def check_input(path: Path) -> tuple[int, int]:
  """The ``(h, w)`` of an input file, or ``UpsampleError`` saying what is wrong with it."""
  if not path.is_file():
    raise UpsampleError(f"input {path} does not exist or is not a file")
  if path.suffix.lower() not in IMAGE_SUFFIXES:
    raise UpsampleError(f"input {path}: unsupported suffix (use one of "
                        f"{', '.join(IMAGE_SUFFIXES)})")
  try:
    with Image.open(path) as image:
      width, height = image.size
  except (OSError, SyntaxError) as err:
    raise UpsampleError(f"cannot read image {path}: {err}") from err
  if min(height, width) < MIN_SIDE:
    raise UpsampleError(f"image {path} is {height}x{width}: too small, both sides must be at least "
                        f"{MIN_SIDE} pixels")
  if geotiff.is_geotiff(path):
    try:
      import rasterio  # noqa: F401  (only checks that it is installed)
    except ImportError as err:
      raise UpsampleError(f"{path} is a GeoTIFF: keeping its georeference needs rasterio; "
                          f"install the 'geo' extra: {geotiff.GEO_EXTRA}") from err
  return height, width


@contextlib.contextmanager
def _readable_run() -> Iterator[None]:
  """Turns a damaged checkpoint of a workdir into one ``UpsampleError`` line with the fix."""
  from neurop_jax.checkpoints import DamagedCheckpointError
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
    from neurop_jax.checkpoints import restore_inference_params
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
  from neurop_jax.convert import convert_checkpoint
  cfg = model_config(model_preset)
  try:
    converted = convert_checkpoint(checkpoint, cfg)
  except (ValueError, ImportError, OSError) as err:
    raise UpsampleError(f"cannot load checkpoint {checkpoint}: {err}") from err
  if "operator" not in converted:
    raise UpsampleError(f"checkpoint {checkpoint} holds a UNet alone: NeurOp-Diff needs its "
                        "operator too (an SRNO or NeurOp-Diff checkpoint)")
  return make_model(cfg), {"params": {k: v["params"] for k, v in converted.items()}}


def upsample(inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *,
             scale: float | None = None, size: tuple[int, int] | None = None,
             model=None, params: dict | None = None, workdir: str | None = None,
             checkpoint: str | None = None, model_preset: str = "paper", prior_only: bool = False,
             sampler: str | None = None, steps: int | None = None, skip: str | None = None,
             seed: int = 0, tile: int = 256, overlap: int = 32,
             progress: bool = True) -> list[Path]:
  """Super-resolves image files into ``out_dir``; returns the paths written.

  Args:
    inputs: PNG, JPEG or TIFF (GeoTIFF) files.
    out_dir: the output folder (created).
    scale: the factor, ``1 < scale <= 16``; or
    size: the output ``(H, W)`` (each axis's factor in the same range).
    model, params: a NeurOp-Diff and its ``{'params': {'operator', 'unet'?}}``; or
    workdir: a neurop_jax training run (its schedule and formulation are used); or
    checkpoint, model_preset: an original checkpoint and the preset of its architecture.
    prior_only: the neural-operator prior alone (SRNO); else NeurOp-Diff, which needs a UNet.
    sampler, steps, skip: the diffusion sampler. None: what the ``workdir`` run validated with
      (e.g. DDIM 20 for configs/quickstart.py), else DPM-Solver++ with 10 steps; skip None is
      the sampler's default spacing.
    seed: seed of the diffusion noise; file ``i`` uses ``fold_in(key(seed), i)``.
    tile, overlap: output tile side and diffusion-tile overlap, in pixels.
    progress: show tqdm bars.

  Raises:
    UpsampleError: with a message for the user; nothing is written for the failing file.
  """
  if not inputs:
    raise UpsampleError("no input files given")
  schedule, formulation, run_sampler = default_schedule(), Formulation(), None
  if workdir is not None and Path(workdir).is_dir():
    from neurop_jax.checkpoints import restore_sampling, validation_sampler
    with _readable_run():
      schedule, formulation = restore_sampling(workdir)
      run_sampler = validation_sampler(workdir)
  if sampler is None and steps is None and skip is None and run_sampler is not None:
    sampler, steps, skip = run_sampler
  sampler = "dpm_solver_pp" if sampler is None else sampler
  steps = 10 if steps is None else steps
  if sampler not in SAMPLERS:
    raise UpsampleError(f"unknown --sampler {sampler!r}: choose one of {tuple(SAMPLERS)}")
  if not 1 <= steps <= schedule.num_timesteps:
    raise UpsampleError(f"--steps must be in [1, {schedule.num_timesteps}], got {steps}")
  if tile < MIN_SIDE or not 0 <= overlap < tile:
    raise UpsampleError(f"need --tile >= {MIN_SIDE} and 0 <= --overlap < --tile, got {tile}, "
                        f"{overlap}")
  out_dir = Path(out_dir)
  check_out_dir(out_dir)
  plans = [(Path(p), output_size(check_input(Path(p)), scale, size)) for p in inputs]
  targets = [output_path(path, out_dir, scale, size) for path, _ in plans]
  if len(set(targets)) < len(targets):
    raise UpsampleError("two inputs would be written to the same output file (same name in "
                        "different folders): upsample them in separate calls or --out folders")
  if model is None:
    model, params = load_model(workdir, checkpoint, model_preset)
  if not prior_only and "unet" not in params["params"]:
    raise UpsampleError("the checkpoint has no diffusion UNet (stage 1 only): use --prior-only")
  written = []
  key = jax.random.key(seed)
  desc = "upsample (prior only)" if prior_only else f"upsample ({sampler}, {steps} steps)"
  for index, ((path, out_hw), target) in enumerate(tqdm(list(zip(plans, targets)), desc=desc,
                                                        disable=not progress)):
    try:
      lr = read_image(path)
    except ValueError as err:
      raise UpsampleError(str(err)) from err
    pixels = super_resolve_tiled(
        model, params, lr, out_hw, prior_only=prior_only, rng=jax.random.fold_in(key, index),
        schedule=schedule, sampler=sampler, steps=steps,
        skip=DEFAULT_SKIP[sampler] if skip is None else skip, tile=tile, overlap=overlap,
        formulation=formulation, dtype=np.uint8, progress=progress)
    if geotiff.is_geotiff(path):
      profile = geotiff.scaled_profile(geotiff.read_profile(path), out_hw)
      geotiff.write_geotiff(target, pixels, profile)
    else:
      write_image(target, pixels)
    written.append(target)
  return written


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m neurop_jax.upsample", description=__doc__.split("\n")[0],
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument("inputs", nargs="+", metavar="INPUT", help="PNG, JPEG or (Geo)TIFF files")
  target = parser.add_mutually_exclusive_group(required=True)
  target.add_argument("--scale", type=float, help="upsampling factor, 1 < s <= 16")
  target.add_argument("--size", help="output size HEIGHTxWIDTH")
  parser.add_argument("--out", required=True, help="output folder")
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--workdir", help="a neurop_jax training workdir")
  source.add_argument("--checkpoint", help="an original NeurOp-Diff/SRNO .pth or .npz")
  parser.add_argument("--model-preset", default="paper", choices=PRESETS,
                      help="architecture of --checkpoint")
  parser.add_argument("--prior-only", action="store_true",
                      help="the neural-operator prior alone, no diffusion refinement")
  parser.add_argument("--sampler", choices=tuple(SAMPLERS),
                      help="diffusion sampler; default: the --workdir run's validation sampler "
                           "(DDIM 20 steps for the quickstart), else dpm_solver_pp")
  parser.add_argument("--steps", type=int,
                      help="diffusion sampling steps; default: the run's, else 10")
  parser.add_argument("--seed", type=int, default=0, help="seed of the diffusion noise")
  parser.add_argument("--tile", type=int, default=256, help="tile side in output pixels")
  parser.add_argument("--overlap", type=int, default=32, help="overlap of diffusion tiles")
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  """The command line; returns the exit status (0 done, 1 error, 2 bad usage)."""
  try:
    args = _parser().parse_args(argv)
    size = None if args.size is None else parse_size(args.size)
    written = upsample(args.inputs, args.out, scale=args.scale, size=size,
                       workdir=args.workdir, checkpoint=args.checkpoint,
                       model_preset=args.model_preset, prior_only=args.prior_only,
                       sampler=args.sampler, steps=args.steps, seed=args.seed, tile=args.tile,
                       overlap=args.overlap)
  except InputError as err:
    print(f"error: {err}", file=sys.stderr)
    return 1
  for path in written:
    print(path)
  return 0


if __name__ == "__main__":
  sys.exit(main())
