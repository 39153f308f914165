"""Super-resolve image and raster files of any size: ``python -m neurop_jax.upsample``.

  python -m neurop_jax.upsample scene.png other.tif --scale 3.5 --out sr/ --workdir runs/ucm
  python -m neurop_jax.upsample scene.tif --size 2048x2048 --out sr/ \\
      --checkpoint NeurOp-Diff.pth --model-preset paper --sampler ddim --steps 50
  python -m neurop_jax.upsample S2_L2A.tif --bands 4,3,2 --values 0:10000 --scale 4 --out sr/ \\
      --workdir runs/ucm --samples 8

Outputs are ``<name>_x3.5.png`` or ``<name>_2048x2048.tif`` in the input's format; a TIFF gives a
Cloud-Optimized GeoTIFF with the input's dtype, units, bands, CRS, extent and nodata; ``--samples
K`` adds ``<name>_x4_std.tif``, the per-pixel spread of K draws. This module parses the flags; the
work is ``neurop_jax.cli.upsampling.upsample`` (see it for the details).
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Sequence

from neurop_jax.errors import InputError
from neurop_jax.io.rasters import parse_bands
from neurop_jax.cli.upsampling import parse_size, request_stop, upsample
from neurop_jax.models.config import PRESETS
from neurop_jax.diffusion.samplers import SAMPLER_NAMES


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
  parser.add_argument("--sampler", choices=SAMPLER_NAMES,
                      help="diffusion sampler; default: the run's (what a --workdir run "
                           "validated with, e.g. DDIM 20 steps for the quickstart; the paper's DDIM "
                           "50 for --checkpoint)")
  parser.add_argument("--steps", type=int,
                      help="diffusion sampling steps; default: the run's")
  parser.add_argument("--strength", type=float,
                      help="the fidelity dial in [0, 1]: 1 the whole diffusion chain from noise "
                           "(the paper), lower values start from the noised prior and run that "
                           "share of the steps (closer to the prior, cheaper), 0 the prior itself; "
                           "default: the run's")
  parser.add_argument("--consistency", action=argparse.BooleanOptionalAction,
                      help="correct each diffusion step's estimate so that it degrades (PIL "
                           "bicubic) to the input, tile by tile; default: the run's")
  parser.add_argument("--samples", type=int,
                      help="K diffusion draws: write their mean and their per-pixel standard "
                           "deviation (<name>_std)")
  parser.add_argument("--bands", help="1-based bands of a TIFF the model reads, e.g. 4,3,2 "
                                      "(default: the run's, else all)")
  parser.add_argument("--values", help="value mapping of a TIFF's units to the model's [0, 1], "
                                       "LOW:HIGH or one per band, e.g. 0:10000 (default: the "
                                       "run's, else 0:255 for uint8)")
  parser.add_argument("--no-cog", dest="cog", action="store_false",
                      help="write TIFFs as plain tiled GeoTIFFs, not Cloud-Optimized")
  parser.add_argument("--seed", type=int, default=0, help="seed of the diffusion noise")
  parser.add_argument("--tile", type=int, default=256, help="tile side in output pixels")
  parser.add_argument("--overlap", type=int, default=32, help="overlap of diffusion tiles")
  parser.add_argument("--tile_batch", type=int, default=1,
                      help="tiles per program (memory grows with it; GPUs want several)")
  return parser


def _terminate(signum: int, frame) -> None:
  """SIGTERM (a scheduler's time limit, ``kill``) as an exit that unwinds: the partial output
  being written is removed (``io.atomic``), as after Ctrl-C. Also recorded with
  ``upsampling.request_stop``, so that the exit happens before the next region even if this one
  is lost (raised inside a finaliser)."""
  request_stop(signum)
  raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
  """The command line; returns the exit status (0 done, 1 error, 2 bad usage; 143 after SIGTERM,
  with no partial file left)."""
  signal.signal(signal.SIGTERM, _terminate)
  try:
    args = _parser().parse_args(argv)
    size = None if args.size is None else parse_size(args.size)
    written = upsample(args.inputs, args.out, scale=args.scale, size=size,
                       workdir=args.workdir, checkpoint=args.checkpoint,
                       model_preset=args.model_preset, prior_only=args.prior_only,
                       sampler=args.sampler, steps=args.steps, strength=args.strength,
                       consistency=args.consistency, samples=args.samples,
                       bands=parse_bands(args.bands), values=args.values, cog=args.cog,
                       seed=args.seed, tile=args.tile, overlap=args.overlap,
                       tile_batch=args.tile_batch)
  except InputError as err:
    print(f"error: {err}", file=sys.stderr)
    return 1
  except OSError as err:  # the file system refused: a permission, a full disk, a lost mount
    print(f"error: {err}; check the inputs, --out and --workdir", file=sys.stderr)
    return 1
  for path in written:
    print(path)
  return 0

