"""The perception-distortion frontier of a trained run: LPIPS against PSNR, one point per method.

  python experiments/perception_distortion.py --workdir runs/quickstart \\
      --config configs/quickstart.py --scales 4 8 --images 8 --crop 128 \\
      --out experiments/results/perception_distortion_quickstart.json

Methods, on the centre ``--crop`` x ``--crop`` pixels of ``--images`` val images evenly spaced over
the val split of ``--config``'s data (each crop degraded at each scale as evaluation does,
``data.degrade.eval_pair``; whole 256x256 images cost a CPU minutes per point):

- bicubic; the prior, with and without ``consistency``;
- NeurOp-Diff at each of ``--strengths`` (the fidelity dial), with and without ``consistency``,
  with the run's sampler and steps (``--sampler``, ``--steps`` to override);
- the mean of ``--samples`` draws at strength 1;
- or, with ``--student 1 2 4``, the run's distilled student at those step counts beside its
  teacher at DDIM 50 and at plain DDIM with those step counts ('trailing' spacing, the student's).

Each point: PSNR and SSIM (RGB, no border crop: the paper's protocol), LPIPS, the held-out
spectral measures (``evaluation.metrics.spectral_distance``: dB from the HR's high-frequency power
spectrum, lower is better, and ``spectral_bias``: < 0 blurrier than the HR, > 0 grainier), the
consistency PSNR of the output's degradation against the LR (``inference.consistency``), the
per-band mean colour error against the HR (x 255) and the wall seconds per image (the first
image's compilation excluded). Writes the JSON ``--out`` and a PNG beside it (LPIPS against PSNR,
one polyline per recipe and scale) and a sample grid.

  python experiments/perception_distortion.py --compare A.json B.json --out both.png

plots the frontiers of several runs (stage-2 training recipes on one prior) together, each
recipe's name prefixed with its run's ``--tags`` entry (default: the JSON's name).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import sys
import time

import jax
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from neurop_jax.data import build_sources  # noqa: E402
from neurop_jax.data.degrade import eval_pair  # noqa: E402
from neurop_jax.data.sources import evenly_spaced  # noqa: E402
from neurop_jax.evaluation.evaluate import centre_crop  # noqa: E402
from neurop_jax.evaluation.metrics import (bicubic, measure, spectral_bias,  # noqa: E402
                                           spectral_distance)
from neurop_jax.inference.api import prior_only, super_resolve  # noqa: E402
from neurop_jax.inference.consistency import consistency_psnr  # noqa: E402
from neurop_jax.inference.run import load_run  # noqa: E402
from neurop_jax.io.images import image_grid, write_image  # noqa: E402


BASELINES = ("bicubic", "prior", "prior+consistency")
"""The methods that do not depend on the UNet (drawn once when runs are compared)."""


def _config(spec: str):
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("experiment_config", ROOT / path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def _methods(strengths: list[float], samples: int) -> list[tuple[str, str, dict]]:
  """``(recipe, label, options)``: ``options`` for ``super_resolve`` (None: the prior)."""
  methods = [("bicubic", "bicubic", None), ("prior", "prior", {"prior": True}),
             ("prior+consistency", "prior+c", {"prior": True, "consistency": True})]
  for consistency in (False, True):
    recipe = "NeurOp-Diff" + ("+consistency" if consistency else "")
    methods += [(recipe, f"s={s:g}", {"strength": s, "consistency": consistency})
                for s in strengths]
  methods.append((f"mean of {samples}", f"K={samples}", {"samples": samples}))
  return methods


def _student_methods(steps: list[int]) -> list[tuple[str, str, dict]]:
  """The distilled student at each of ``steps`` beside its teacher: DDIM 50 (uniform) and plain
  DDIM at the student's step counts on its 'trailing' steps."""
  methods = [("bicubic", "bicubic", None), ("prior", "prior", {"prior": True}),
             ("teacher DDIM", "50", {"sampler": "ddim", "steps": 50, "skip": "uniform"})]
  methods += [("teacher DDIM", f"{n}", {"sampler": "ddim", "steps": n, "skip": "trailing"})
              for n in steps]
  methods += [("student", f"{n}", {"sampler": "student", "steps": n}) for n in steps]
  return methods


def _output(run, lr, hr_hw, options, key, sampling):
  if options is None:
    return bicubic(lr, hr_hw)
  if options.get("prior"):
    return np.asarray(prior_only(run, lr, out_shape=hr_hw,
                                 consistency=options.get("consistency", False)))
  out = super_resolve(run, lr, out_shape=hr_hw, rng=key, **{**sampling, **options})
  return np.asarray(out[0] if isinstance(out, tuple) else out)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir")
  parser.add_argument("--which", default="best", choices=("best", "latest"),
                      help="the stage-2 checkpoint (best: by validation LPIPS, as load_run)")
  parser.add_argument("--compare", nargs="+", metavar="JSON")
  parser.add_argument("--tags", nargs="+", help="names of the --compare runs")
  parser.add_argument("--config", default="configs/quickstart.py")
  parser.add_argument("--scales", type=float, nargs="+", default=[4.0, 8.0])
  parser.add_argument("--images", type=int, default=8)
  parser.add_argument("--crop", type=int, default=128)
  parser.add_argument("--strengths", type=float, nargs="+",
                      default=[0.1, 0.2, 0.3, 0.5, 0.7, 1.0])
  parser.add_argument("--samples", type=int, default=4)
  parser.add_argument("--sampler")
  parser.add_argument("--steps", type=int)
  parser.add_argument("--student", type=int, nargs="+", metavar="N",
                      help="measure the run's distilled student at these step counts beside its "
                           "teacher (DDIM 50, and DDIM at these counts) instead of the strengths")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", required=True)
  args = parser.parse_args()
  if args.compare:
    tags = args.tags or [pathlib.Path(path).stem for path in args.compare]
    points = []
    for tag, path in zip(tags, args.compare):
      for point in json.loads(pathlib.Path(path).read_text())["points"]:
        if point["recipe"] not in BASELINES:
          points.append(dict(point, recipe=f"{tag}: {point['recipe']}"))
        elif tag == tags[0]:  # the same prior in every run compared
          points.append(point)
    _plot(points, pathlib.Path(args.out))
    print(args.out)
    return
  if not args.workdir:
    parser.error("give --workdir (or --compare)")
  run = load_run(args.workdir, args.which)
  config = _config(args.config)
  source = build_sources(config.data)["val"]
  indices = evenly_spaced(len(source), args.images)
  images = [centre_crop(np.asarray(source[int(i)]["image"], np.float32), args.crop)
            for i in indices]
  sampling = {k: v for k, v in (("sampler", args.sampler), ("steps", args.steps)) if v}
  resolved = run.sampling_for(args.sampler, args.steps)
  methods = (_student_methods(args.student) if args.student else
             _methods(args.strengths, args.samples))
  points, grid_rows = [], []
  for scale in args.scales:
    pairs = [eval_pair(image, scale) for image in images]
    for recipe, label, options in methods:
      rows, seconds = [], []
      for index, (hr, lr) in enumerate(pairs):
        key = jax.random.fold_in(jax.random.key(args.seed), index)
        start = time.perf_counter()
        out = _output(run, lr[None], hr.shape[:2], options, key, sampling)
        seconds.append(time.perf_counter() - start)
        values = measure(out, hr[None], scale, with_lpips=True)
        values.update(
            spectral_distance=spectral_distance(out[0], hr),
            spectral_bias=spectral_bias(out[0], hr),
            consistency_psnr=float(consistency_psnr(out, lr[None])[0]),
            colour_error=float(np.mean(np.abs(out[0].mean((0, 1)) - hr.mean((0, 1)))) * 255))
        rows.append(values)
        if index == 0 and scale == args.scales[0]:
          grid_rows.append(out[0])
      point = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
      point.update(recipe=recipe, label=label, scale=scale, options=options or {},
                   seconds_per_image=float(np.mean(seconds[1:] or seconds)))
      points.append(point)
      print(f"x{scale:g} {recipe:24s} {label:8s} PSNR {point['psnr_paper']:6.2f} SSIM "
            f"{point['ssim_paper']:.3f} LPIPS {point['lpips']:.3f} spec {point['spectral_distance']:5.2f}"
            f" ({point['spectral_bias']:+5.2f}) cons {point['consistency_psnr']:6.1f} dB "
            f"{point['seconds_per_image']:6.2f} s", flush=True)

  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  record = dict(workdir=str(args.workdir), which=args.which, step=run.step, config=args.config,
                scales=args.scales, images=args.images, crop=args.crop, sampling=dict(
                    sampler=resolved.sampler, steps=resolved.steps, skip=resolved.skip),
                names=[str(source[int(i)].get("name", i)) for i in indices], points=points)
  out.write_text(json.dumps(record, indent=1))
  _plot(points, out.with_suffix(".png"))
  hr0 = eval_pair(images[0], args.scales[0])[0]
  write_image(out.with_name(out.stem + "_grid.png"), image_grid([[*grid_rows, hr0]]))
  print(out)


def _plot(points: list[dict], path: pathlib.Path) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  scales = sorted({p["scale"] for p in points})
  fig, axes = plt.subplots(1, len(scales), figsize=(6 * len(scales), 4.5), squeeze=False)
  for ax, scale in zip(axes[0], scales):
    at = [p for p in points if p["scale"] == scale]
    for recipe in dict.fromkeys(p["recipe"] for p in at):
      line = [p for p in at if p["recipe"] == recipe]
      ax.plot([p["psnr_paper"] for p in line], [p["lpips"] for p in line],
              "o-" if len(line) > 1 else "s", label=recipe)
      for p in line:
        ax.annotate(p["label"], (p["psnr_paper"], p["lpips"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    ax.set(title=f"x{scale:g}", xlabel="PSNR (dB, higher is better)",
           ylabel="LPIPS (lower is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


if __name__ == "__main__":
  main()
