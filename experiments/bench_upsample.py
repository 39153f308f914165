"""Time and peak memory of ``upsample`` on real scenes: file in, Cloud-Optimized GeoTIFF out.

  python experiments/bench_upsample.py [--scene SCENE.png] [--model-preset micro] [--scale 2]

The scene (the 2299x2472 NEON RGB image of ../shared/data) is written once as a GeoTIFF, and once
tiled 2x2 into one GeoTIFF of four times its pixels. Each run is ``neurop_jax.upsample`` (what
``python -m neurop_jax.upsample`` runs) on one of them in a fresh process, so that its peak RSS is
its own:

- ``scene``: the scene, the operator alone (``--prior-only``), at ``--scale``;
- ``scene-2x2``: the 4x larger scene, the same way. Both stream: the input (no mask) is read a
  window at a time (``rasters.WindowReader``) and the output written region by region, so the peak
  memory should not grow with the scene;
- ``diffusion``: a ``--diffusion-crop`` square of the scene with NeurOp-Diff and ``--sampler`` in
  ``--steps`` (``''`` / 0: the run's own, e.g. a workdir's distilled student), ``--samples`` draws
  (0: one, no spread);
- ``diffusion-teacher``: the same crop with the paper's sampler (DDIM 50, uniform), one draw: the
  50-step teacher of a distilled student;
- ``scene-diffusion``: the whole scene by diffusion with ``--sampler`` in ``--steps``, one draw.
  With ``diffusion`` and ``diffusion-teacher`` measured in the same run, the report extrapolates
  the teacher's whole-scene time as ``scene-diffusion`` seconds x (``diffusion-teacher`` /
  ``diffusion`` seconds), the two crops tiled alike.

Peak RSS is the kernel's high-water mark (VmHWM): ``setup_peak_rss_mib`` while the model is made,
``peak_rss_mib`` during the run (reset just before it). ``output_in_memory_mib`` is what the output
would take as one array (as before the streaming writer), ``input_mib`` the input in its dtype.
Random weights of ``--model-preset`` (``micro`` by default, for minutes rather than an hour on a
2-core CPU; the memory of a tile grows with the model, not with the scene; ``Run(model, params)``,
the paper's defaults), or ``--workdir`` (``load_run``: its best checkpoint and its defaults).
Writes ``--out`` (experiments/results/bench_upsample.json).

The distilled student's whole scene (issue 21: under 30 minutes and 3 GB on a 2-core CPU)::

  python experiments/bench_upsample.py --workdir runs/ucm_dev --sampler '' --steps 0 \
      --samples 0 --runs scene-diffusion,diffusion,diffusion-teacher \
      --out experiments/results/bench_upsample_student.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from record import write_record

SCENE = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "scenes"
            / "2019_YELL_2_528000_4978000_image_crop2.png")


# Diffusion runs and the input each reads (the others are --prior-only runs of their own input).
RUN_INPUTS = {"diffusion": "diffusion", "diffusion-teacher": "diffusion",
              "scene-diffusion": "scene"}


def _rss_mib(field: str) -> float:
  """``VmRSS`` or ``VmHWM`` (the peak) of this process in MiB."""
  for line in Path("/proc/self/status").read_text().splitlines():
    if line.startswith(field + ":"):
      return int(line.split()[1]) / 1024
  raise RuntimeError(f"{field} not in /proc/self/status")


def make_scenes(scene: str, folder: Path, crop: int) -> dict[str, Path]:
  """The scene as a GeoTIFF, tiled 2x2, and a ``crop`` square of it: uint8 RGB, 0.1 m UTM pixels."""
  import numpy as np
  import rasterio
  from PIL import Image
  from rasterio import Affine

  pixels = np.moveaxis(np.asarray(Image.open(scene).convert("RGB")), -1, 0)
  paths = {}
  for name, data in (("scene", pixels), ("scene-2x2", np.tile(pixels, (1, 2, 2))),
                     ("diffusion", pixels[:, :crop, :crop])):
    paths[name] = folder / f"{name}.tif"
    with rasterio.open(paths[name], "w", driver="GTiff", width=data.shape[2], height=data.shape[1],
                       count=3, dtype="uint8", crs="EPSG:32612",
                       transform=Affine(0.1, 0, 528000, 0, -0.1, 4978000), tiled=True,
                       compress="deflate", photometric="RGB") as dst:
      dst.write(data)
  return paths


def run_one(spec: dict) -> dict:
  """One upsample run in this process: seconds and memory, as a JSON-able dict."""
  import jax
  import numpy as np
  import rasterio

  from neurop_jax import Run, load_run, make_model, model_config, upsample
  from neurop_jax.models.coords import make_cell, make_coord

  if spec["workdir"]:
    run = load_run(spec["workdir"])  # its best checkpoint, with its sampling defaults
  else:
    model = make_model(model_config(spec["model_preset"]))
    coord, cell = make_coord((16, 16))[None], make_cell((16, 16))[None]
    params = jax.jit(model.init)(jax.random.key(0), np.zeros((1, 16, 16, 3), np.float32),
                                 np.ones((1,), np.float32), np.zeros((1, 8, 8, 3), np.float32),
                                 coord, cell)
    run = Run(model, params)  # the paper's schedule, formulation and sampling defaults
  with rasterio.open(spec["input"]) as src:
    lr_hw = (src.height, src.width)
  before, setup_peak = _rss_mib("VmRSS"), _rss_mib("VmHWM")
  Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
  start = time.perf_counter()
  [out, *_] = upsample([spec["input"]], spec["out"], scale=spec["scale"], run=run,
                       prior_only=spec["prior_only"], sampler=spec["sampler"] or None,
                       steps=spec["steps"] or None, skip=spec.get("skip"),
                       samples=spec["samples"] or None, tile=spec["tile"],
                       overlap=spec["overlap"], progress=True)
  seconds = time.perf_counter() - start
  peak = _rss_mib("VmHWM")
  with rasterio.open(out) as dst:
    out_hw = (dst.height, dst.width)
  mib = lambda hw: hw[0] * hw[1] * 3 / 2**20
  sampling = None if spec["prior_only"] else run.sampling_for(
      spec["sampler"] or None, spec["steps"] or None, spec.get("skip"))
  return {"lr_hw": list(lr_hw), "out_hw": list(out_hw), "seconds": round(seconds, 1),
          "sampling": None if sampling is None else
          {"sampler": sampling.sampler, "steps": sampling.steps, "skip": sampling.skip},
          "us_per_output_pixel": round(1e6 * seconds / (out_hw[0] * out_hw[1]), 2),
          "setup_peak_rss_mib": round(setup_peak, 1), "rss_before_mib": round(before, 1),
          "peak_rss_mib": round(peak, 1), "working_mib": round(peak - before, 1),
          "input_mib": round(mib(lr_hw), 1), "output_in_memory_mib": round(mib(out_hw), 1),
          "output_file_mib": round(Path(out).stat().st_size / 2**20, 1)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--scene", default=SCENE)
  parser.add_argument("--workdir", default="", help="a training run (default: random weights)")
  parser.add_argument("--model-preset", default="micro", help="architecture of random weights")
  parser.add_argument("--scale", type=float, default=2.0)
  parser.add_argument("--diffusion-crop", type=int, default=256)
  parser.add_argument("--sampler", default="ddim", help="'': the run's (the paper's: ddim)")
  parser.add_argument("--steps", type=int, default=10, help="0: the run's (the paper's: 50)")
  parser.add_argument("--samples", type=int, default=4)
  parser.add_argument("--tile", type=int, default=512, help="output tile side, pixels")
  parser.add_argument("--overlap", type=int, default=32)
  parser.add_argument("--runs", default="scene,scene-2x2,diffusion")
  parser.add_argument("--out", default=str(Path(__file__).parent / "results" /
                                           "bench_upsample.json"))
  parser.add_argument("--one", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.one:
    print(json.dumps(run_one(json.loads(args.one))))
    return
  results = {}
  with tempfile.TemporaryDirectory() as tmp:
    inputs = make_scenes(args.scene, Path(tmp), args.diffusion_crop)
    base = dict(workdir=args.workdir, model_preset=args.model_preset, scale=args.scale,
                sampler=args.sampler, steps=args.steps, tile=args.tile, overlap=args.overlap)
    for name in args.runs.split(","):
      spec = dict(base, input=str(inputs[RUN_INPUTS.get(name, name)]),
                  out=str(Path(tmp) / f"out-{name}"), prior_only=name not in RUN_INPUTS,
                  samples=args.samples if name == "diffusion" else None)
      if name == "diffusion-teacher":
        spec.update(sampler="ddim", steps=50, skip="uniform")
      child = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], check=True,
                             stdout=subprocess.PIPE, text=True)
      results[name] = dict(json.loads(child.stdout.strip().splitlines()[-1]), **spec)
      print(name, json.dumps(results[name]), flush=True)
  import jax
  ratio = lambda key: round(results["scene-2x2"][key] / results["scene"][key], 2)
  report = {"host": platform.node(), "cpus": os.cpu_count(), "backend": jax.default_backend(),
            "model": args.workdir or f"{args.model_preset} (random weights)", "runs": results}
  if {"scene", "scene-2x2"} <= set(results):
    report["scene_2x2_over_scene"] = {key: ratio(key) for key in
                                      ("output_in_memory_mib", "peak_rss_mib", "working_mib")}
    print("scene-2x2 / scene:", report["scene_2x2_over_scene"])
  if {"scene-diffusion", "diffusion", "diffusion-teacher"} <= set(results):
    crop_ratio = results["diffusion-teacher"]["seconds"] / results["diffusion"]["seconds"]
    scene = results["scene-diffusion"]
    report["scene_diffusion"] = {
        "seconds": scene["seconds"], "peak_rss_mib": scene["peak_rss_mib"],
        "teacher_over_sampler_on_crop": round(crop_ratio, 2),
        "teacher_scene_seconds_extrapolated": round(scene["seconds"] * crop_ratio, 1),
        "target": {"seconds": 1800, "peak_rss_mib": 3072},
        "meets_target": scene["seconds"] < 1800 and scene["peak_rss_mib"] < 3072}
    print("scene by diffusion:", report["scene_diffusion"])
  write_record(report, args.out, indent=2)


if __name__ == "__main__":
  main()
