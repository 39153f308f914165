"""Time and peak memory of tiled super-resolution (``neurop_jax.tiled``) on a real scene.

  python experiments/bench_upsample.py [--scene SCENE.png] [--workdir RUN] [--tile 512]

Three runs of the paper-size model (random weights, ``--model-preset`` for another size, or the
checkpoint of ``--workdir``), each in a fresh process so that its peak RSS is its own:

- ``operator``: the whole scene (``--crop 0``) at ``--scale`` with the operator alone;
- ``operator-small``: a ``--small-crop`` square of it, the same way: the memory the tiling needs
  beyond the output array (peak RSS - RSS before the run - output bytes) should be the same for
  both, i.e. independent of the scene's size;
- ``diffusion``: a ``--diffusion-crop`` square with NeurOp-Diff and ``--sampler`` in ``--steps``.

Peak RSS is the kernel's high-water mark (VmHWM): ``setup_peak_rss_mib`` while the model is made
and the scene read, ``peak_rss_mib`` during the run (reset just before it; memory freed during
setup and kept by the allocator is reused, so ``working_mib`` = peak - RSS before - output is a
lower bound of what the run needs). Writes experiments/results/bench_upsample.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from record import write_record

SCENE = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "scenes"
            / "2019_YELL_2_528000_4978000_image_crop2.png")


def _rss_mib(field: str) -> float:
  """``VmRSS`` or ``VmHWM`` (the peak) of this process in MiB."""
  for line in Path("/proc/self/status").read_text().splitlines():
    if line.startswith(field + ":"):
      return int(line.split()[1]) / 1024
  raise RuntimeError(f"{field} not in /proc/self/status")


def run_one(spec: dict) -> dict:
  """One super-resolution run in this process: seconds and memory, as a JSON-able dict."""
  import jax
  import numpy as np

  from neurop_jax.coords import make_cell, make_coord
  from neurop_jax.data.images import read_image
  from neurop_jax.inference import default_schedule
  from neurop_jax.models import make_model, model_config
  from neurop_jax.tiled import super_resolve_tiled

  if spec["workdir"]:
    from neurop_jax.checkpoints import restore_inference_params
    cfg, params = restore_inference_params(spec["workdir"])
    model = make_model(cfg)
  else:
    model = make_model(model_config(spec["model_preset"]))
    coord, cell = make_coord((16, 16))[None], make_cell((16, 16))[None]
    params = jax.jit(model.init)(jax.random.key(0), np.zeros((1, 16, 16, 3), np.float32),
                                 np.ones((1,), np.float32), np.zeros((1, 8, 8, 3), np.float32),
                                 coord, cell)
  scene = read_image(spec["scene"])
  crop = spec["crop"] or max(scene.shape[:2])
  lr = np.ascontiguousarray(scene[:crop, :crop])
  del scene
  gc.collect()
  out_hw = tuple(round(n * spec["scale"]) for n in lr.shape[:2])
  before, setup_peak = _rss_mib("VmRSS"), _rss_mib("VmHWM")
  Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
  start = time.perf_counter()
  out = super_resolve_tiled(model, params, lr, out_hw, prior_only=spec["prior_only"],
                            rng=jax.random.key(0), schedule=default_schedule(),
                            sampler=spec["sampler"], steps=spec["steps"], tile=spec["tile"],
                            overlap=spec["overlap"], dtype=np.uint8, progress=True)
  seconds = time.perf_counter() - start
  peak = _rss_mib("VmHWM")
  output_mib = out.nbytes / 2**20
  return {"lr_hw": list(lr.shape[:2]), "out_hw": list(out_hw), "seconds": round(seconds, 1),
          "us_per_output_pixel": round(1e6 * seconds / (out_hw[0] * out_hw[1]), 2),
          "setup_peak_rss_mib": round(setup_peak, 1), "rss_before_mib": round(before, 1),
          "peak_rss_mib": round(peak, 1), "output_mib": round(output_mib, 1),
          "peak_minus_output_mib": round(peak - output_mib, 1),
          "working_mib": round(peak - before - output_mib, 1)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--scene", default=SCENE)
  parser.add_argument("--workdir", default="", help="a training run (default: random weights)")
  parser.add_argument("--model-preset", default="paper", help="architecture of random weights")
  parser.add_argument("--scale", type=float, default=2.0)
  parser.add_argument("--crop", type=int, default=0, help="operator run: 0 = the whole scene")
  parser.add_argument("--small-crop", type=int, default=512)
  parser.add_argument("--diffusion-crop", type=int, default=512)
  parser.add_argument("--sampler", default="dpm_solver_pp")
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--tile", type=int, default=512, help="output tile side, pixels")
  parser.add_argument("--overlap", type=int, default=32)
  parser.add_argument("--runs", default="operator,operator-small,diffusion")
  parser.add_argument("--out", default=str(Path(__file__).parent / "results" /
                                           "bench_upsample.json"))
  parser.add_argument("--one", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.one:
    print(json.dumps(run_one(json.loads(args.one))))
    return
  base = dict(scene=args.scene, workdir=args.workdir, model_preset=args.model_preset,
              scale=args.scale, sampler=args.sampler, steps=args.steps, tile=args.tile,
              overlap=args.overlap)
  specs = {"operator": dict(base, crop=args.crop, prior_only=True),
           "operator-small": dict(base, crop=args.small_crop, prior_only=True),
           "diffusion": dict(base, crop=args.diffusion_crop, prior_only=False)}
  results = {}
  for name in args.runs.split(","):
    child = subprocess.run([sys.executable, __file__, "--one", json.dumps(specs[name])],
                           check=True, stdout=subprocess.PIPE, text=True)
    results[name] = dict(json.loads(child.stdout.strip().splitlines()[-1]), **specs[name])
    print(name, json.dumps(results[name]), flush=True)
  import jax
  report = {"host": platform.node(), "cpus": os.cpu_count(), "backend": jax.default_backend(),
            "model": args.workdir or f"{args.model_preset} (random weights)",
            "runs": results}
  write_record(report, args.out, indent=2)


if __name__ == "__main__":
  main()
