"""Tiled super-resolution: tiles in batches and the encoder run once, against tiles one at a time.

  python experiments/bench_tiled.py [--quick] [--lr 256] [--scale 4] [--steps 2] \
      [--batches 1 2 4] [--before REV]

The paper model with random weights (``--quick``: 'micro'), one ``--lr``-square image to
``--scale`` times its side (1024 x 1024 by default), 256-pixel tiles, diffusion tiles overlapping
by 32, DDIM in ``--steps`` steps (the time per step is what grows with steps; the operator's is
paid once). In one process, each of:

- ``one_at_a_time``: ``tile_batch=1`` with no feature map (``feature_cache_mib=0``): each tile
  encodes its LR window in each of the operator's passes (``blocks`` kv passes, then the render
  of each diffusion tile), the way the tiled path ran before batches and the feature map;
- ``before``: with ``--before REV``, ``neurop_jax/inference/tiled.py`` as it was at git revision
  REV, imported beside today's (the same computation, its code of then);
- ``batch_B``: ``tile_batch=B`` for each B of ``--batches``, with the feature map kept.

Each is timed for ``prior_only_tiled`` and ``super_resolve_tiled`` (``--what``), after a warm-up
call that compiles (its time reported apart), as the best of ``--repeats``; the outputs are
compared with ``one_at_a_time``'s. Writes ``--out`` (experiments/results/bench_tiled.json;
``--quick``: ..._quick.json). The target (issue 22): the paper model at 1024 x 1024 at least 1.5 times faster
than before. The committed records::

  python experiments/bench_tiled.py --what prior --batches 1 2 \
      --out experiments/results/bench_tiled_prior.json
  python experiments/bench_tiled.py --what diffusion --steps 1 --batches 1 \
      --out experiments/results/bench_tiled_diffusion.json
  python experiments/bench_tiled.py --quick --lr 64 --before 3eb8dfa --batches 1 2
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from bench_sampling import init_params
from neurop_jax.inference import tiled
from neurop_jax.inference.run import Run
from neurop_jax.models import make_model, model_config
from record import write_record


def tiled_at(rev: str):
  """``neurop_jax.inference.tiled`` as it was at git revision ``rev``, as a module of its own."""
  source = subprocess.run(["git", "show", f"{rev}:neurop_jax/inference/tiled.py"], check=True,
                          capture_output=True, text=True).stdout
  path = Path(tempfile.mkdtemp()) / f"tiled_{rev}.py"
  path.write_text(source)
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[path.stem] = module
  spec.loader.exec_module(module)
  return module


def timed(call, repeats: int) -> tuple[float, float, np.ndarray]:
  """``(first call's seconds, best of repeats' seconds, output)``."""
  start = time.perf_counter()
  out = call()
  first = time.perf_counter() - start
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    out = call()
    best = min(best, time.perf_counter() - start)
  return first, best, np.asarray(out)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="the micro model, a smoke run")
  parser.add_argument("--lr", type=int, default=256, help="LR side in pixels")
  parser.add_argument("--scale", type=int, default=4)
  parser.add_argument("--steps", type=int, default=2, help="DDIM steps")
  parser.add_argument("--tile", type=int, default=256)
  parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4])
  parser.add_argument("--before", default="", help="a git revision whose tiled.py to time too")
  parser.add_argument("--repeats", type=int, default=1)
  parser.add_argument("--what", nargs="+", default=["prior", "diffusion"],
                      choices=["prior", "diffusion"], help="which calls to time")
  parser.add_argument("--out", default="")
  args = parser.parse_args()
  cfg = model_config("micro" if args.quick else "paper")
  model = make_model(cfg)
  run = Run(model, jax.device_put(init_params(model, len(cfg.unet.channel_mults))))
  lr = np.random.default_rng(0).random((1, args.lr, args.lr, 3), dtype=np.float32)
  out_shape = (args.scale * args.lr,) * 2
  common = dict(out_shape=out_shape, tile=args.tile, progress=False)
  sampling = dict(rng=jax.random.key(0), sampler="ddim", steps=args.steps, overlap=32)

  variants = {"one_at_a_time": (tiled, dict(tile_batch=1, feature_cache_mib=0))}
  if args.before:
    variants["before"] = (tiled_at(args.before), {})
  variants.update({f"batch_{b}": (tiled, dict(tile_batch=b)) for b in args.batches})
  rows, reference = {}, {}
  for name, (module, options) in variants.items():
    row = rows[name] = {}
    calls = {"prior": lambda: module.prior_only_tiled(run, lr, **common, **options),
             "diffusion": lambda: module.super_resolve_tiled(run, lr, **common, **sampling,
                                                             **options)}
    for what in args.what:
      first, best, out = timed(calls[what], args.repeats)
      reference.setdefault(what, out)
      row[f"{what}_s"] = round(best, 2)
      row[f"{what}_first_call_s"] = round(first, 2)
      row[f"{what}_max_abs_diff"] = float(np.abs(out - reference[what]).max())
      print(f"{name:14s} {what:9s} {best:8.2f} s  (first call {first:7.2f} s)  "
            f"max |diff| {row[f'{what}_max_abs_diff']:.2e}", flush=True)
  for row in rows.values():
    for what in args.what:
      row[f"{what}_speedup"] = round(rows["one_at_a_time"][f"{what}_s"] / row[f"{what}_s"], 3)
      if "before" in rows:
        row[f"{what}_speedup_vs_before"] = round(rows["before"][f"{what}_s"] / row[f"{what}_s"], 3)
  record = {"model": "micro" if args.quick else "paper", "lr": [args.lr] * 2,
            "out": list(out_shape), "tile": args.tile, "overlap": 32, "sampler": "ddim",
            "steps": args.steps, "repeats": args.repeats, "before": args.before,
            "backend": jax.default_backend(),
            "jax": jax.__version__, "machine": platform.processor() or platform.machine(),
            "rows": rows, "target": "1024 x 1024, paper model: >= 1.5 x faster than before"}
  name = "bench_tiled_quick.json" if args.quick else "bench_tiled.json"
  write_record(record, args.out or f"experiments/results/{name}")


if __name__ == "__main__":
  main()
