"""Learning curves on a CPU-time budget: validation quality against process CPU minutes.

  XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \\
      python experiments/learning_curve.py [--config configs/ucm_dev.py:operator] \\
      [--workdir runs/ucm_dev_curve] [--minutes 40]
  XLA_FLAGS=... python experiments/learning_curve.py --config configs/ucm_dev.py:diffusion \\
      --prior runs/ucm_dev_prior --workdir runs/curve_x0_residual --minutes 60 \\
      --out experiments/results/learning_curve_diffusion_x0_residual.json
  python experiments/learning_curve.py --compare A.json B.json --out both.png

The stage is the config's (``:operator`` or ``:diffusion``). Runs the real trainer
(``neurop_jax.train_and_evaluate``) in chunks: chunk ``n`` sets ``config.<stage>.num_steps`` to the step
it ends at, so the trainer checkpoints there, and the next chunk resumes from that checkpoint
(exactly, data position included; the configs' learning rates are constant, so the changing
``num_steps`` does not change the schedule). The budget is this process's CPU time of training
(``time.process_time``: all its threads, compilation included), because other jobs share the
machine's cores; ``--clock wall`` makes it the wall time of training instead (on a GPU, where CPU
time says little). Chunks are sized from the seconds per step of the chunk before to about
``--chunk_minutes``.

Stage 1: the trainer validates PSNR at the end of each chunk (in the budget); at the end the last
parameters are evaluated on every val image. Stage 2 (the prior is the stage-1 run ``--prior``,
frozen): after each chunk the EMA parameters of the latest step (``load_run(workdir,
'latest')``) are evaluated outside the budget (its CPU time is recorded apart) on
``--val_images`` val images (their centre ``--val_crop`` pixels: whole 256x256 images cost a CPU
several minutes per point) at each of ``--scales``: PSNR, SSIM (RGB, no border crop: the paper's
protocol) and LPIPS of NeurOp-Diff samples (``--sampler``, ``--steps``, ``--skip``; the run's own
where not given), of the prior alone and of bicubic, on the same images.

Times are kept in ``<workdir>/curve_times.json``: a killed run re-run with the same arguments
continues (losing the CPU time of the unfinished chunk). Writes the JSON record ``--out`` and a
PNG beside it. The workdir must not hold a run of another origin (its CPU time would be
unaccounted for).
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import platform
import textwrap
import time
from pathlib import Path

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (after the backend is chosen)

from neurop_jax import load_run, prior_only, super_resolve, train_and_evaluate  # noqa: E402
from neurop_jax.data import build_sources  # noqa: E402
from neurop_jax.evaluation.evaluate import centre_crop  # noqa: E402
from neurop_jax.training.validation import Validator  # noqa: E402
from record import write_record  # noqa: E402

RESULTS = Path(__file__).parent / "results"
METHODS = {"": "NeurOp-Diff", "prior": "prior (operator)", "bicubic": "bicubic"}


def load_config(spec: str, overrides: list[str] = ()):
  """``get_config(arg)`` of a config file named as on the command line (``path.py[:arg]``), with
  ``field.sub=value`` overrides (values as Python literals, else strings)."""
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("experiment_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config(arg or None)
  for item in overrides:
    name, _, text = item.partition("=")
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    *parents, leaf = name.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    if leaf not in node:
      raise SystemExit(f"--set {item}: the config has no field {name!r}")
    node[leaf] = value
  return config


def read_metrics(path: Path) -> list[dict]:
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def operator_final(config, workdir: Path) -> dict[str, float]:
  """PSNR/SSIM of the latest operator and of bicubic on every val image, at the eval scale."""
  run = load_run(workdir, which="latest")  # a stage-1 workdir: the operator alone
  validator = Validator(build_sources(config.data)["val"], config.data, 0, 1)
  metrics, _ = validator(lambda lr, hr, index: {
      "": prior_only(run, lr, out_shape=hr.shape[1:3])})
  return {"step": run.step, "images": len(validator.source), **metrics}


class CentreCrops:
  """The centre ``size`` x ``size`` pixels of each image of a grain source (smaller ones whole)."""

  def __init__(self, source, size: int):
    self.source, self.size = source, size

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int):
    element = dict(self.source[index])
    element["image"] = centre_crop(element["image"], self.size)
    return element


class DiffusionProbe:
  """Stage 2's curve point: NeurOp-Diff, prior and bicubic at each scale on the same val images."""

  def __init__(self, config, args):
    source = build_sources(config.data)["val"]
    if args.val_crop:
      source = CentreCrops(source, args.val_crop)
    self.validators = {s: Validator(source, config.data, args.val_images, args.sample_images,
                                    scale=s, with_lpips=True) for s in args.scales}
    self.sampling = dict(sampler=args.sampler or None, steps=args.steps or None,
                         skip=args.skip or None)

  def __call__(self, workdir: Path, step: int) -> tuple[dict[str, dict[str, float]], dict]:
    # The latest step's EMA parameters, with the schedule and formulation it trained with.
    run = load_run(workdir, which="latest")
    key = jax.random.key(0)
    results, grids = {}, {}
    for scale, validator in self.validators.items():
      def outputs(lr, hr, index):
        out_shape = hr.shape[1:3]
        return {"prior": prior_only(run, lr, out_shape=out_shape),
                "": super_resolve(run, lr, out_shape=out_shape,
                                  rng=jax.random.fold_in(key, index), **self.sampling)}
      metrics, grids[scale] = validator(outputs)
      results[f"x{scale:g}"] = metrics
    return results, grids


def run_chunks(config, args, workdir: Path, probe=None) -> dict[int, dict]:
  """Trains ``config.stage`` chunk by chunk until the CPU budget is spent; returns the times."""
  stage = config.stage
  times_path = workdir / "curve_times.json"
  times = {int(k): v for k, v in json.loads(times_path.read_text()).items()} \
      if times_path.exists() else {}
  if (workdir / stage).exists() and not times:
    raise SystemExit(f"{workdir}/{stage} holds a run this script did not time: use a fresh "
                     "--workdir")
  budget_s = 60.0 * args.minutes
  step = max(times, default=0)
  spent = times[step] if times else {"cpu_minutes": 0.0, "train_wall_minutes": 0.0,
                                     "wall_minutes": 0.0}
  used = {"cpu": 60 * spent["cpu_minutes"], "wall": 60 * spent["train_wall_minutes"]}
  wall0 = time.time() - 60 * spent["wall_minutes"]
  chunk = args.first_chunk_steps
  while used[args.clock] < budget_s:
    config[stage].num_steps = step + chunk
    cpu_start, wall_start = time.process_time(), time.time()
    train_and_evaluate(config, workdir)
    chunk_s = {"cpu": time.process_time() - cpu_start, "wall": time.time() - wall_start}
    used = {k: used[k] + chunk_s[k] for k in used}
    step = config[stage].num_steps
    point = {"cpu_minutes": used["cpu"] / 60, "train_wall_minutes": used["wall"] / 60,
             "wall_minutes": (time.time() - wall0) / 60, "load": os.getloadavg()[0]}
    if probe is not None:
      probe_start = time.process_time()
      point["metrics"], grids = probe(workdir, step)
      point["probe_cpu_minutes"] = (time.process_time() - probe_start) / 60
      samples = workdir / "curve_samples"
      samples.mkdir(exist_ok=True)
      for scale, grid in grids.items():
        plt.imsave(samples / f"step_{step:06d}_x{scale:g}.png", grid)
    times[step] = point
    times_path.write_text(json.dumps(times, indent=1) + "\n")
    print(f"step {step}: {point['cpu_minutes']:.1f} CPU min, {point['wall_minutes']:.1f} wall "
          f"min, load {point['load']:.1f}" + (
              "" if probe is None else "; " + json.dumps(point["metrics"])), flush=True)
    per_step = chunk_s[args.clock] / chunk
    chunk = max(1, int(min(60 * args.chunk_minutes, budget_s - used[args.clock]) / per_step))
  return times


def machine() -> dict:
  return {"cpus": os.cpu_count(), "platform": platform.platform(), "jax": jax.__version__,
          "xla_flags": os.environ.get("XLA_FLAGS", "")}


def operator_curve(config, args, workdir: Path) -> None:
  config.operator.update(eval_every=0, checkpoint_every=0)
  times = run_chunks(config, args, workdir)
  records = read_metrics(workdir / "operator" / "metrics.jsonl")
  val = {r["step"]: r for r in records if r["kind"] == "val"}
  train_rows = [r for r in records if r["kind"] == "train"]
  points = [{"step": s, **times[s], "psnr": val[s]["psnr"], "ssim": val[s]["ssim"],
             "elapsed_s": val[s]["elapsed_s"]} for s in sorted(times) if s in val]
  first = val[points[0]["step"]]
  bicubic = {"psnr": first["bicubic_psnr"], "ssim": first["bicubic_ssim"]}
  final = operator_final(config, workdir)
  record = {
      "stage": "operator", "config": args.config, "overrides": args.set, "workdir": str(workdir),
      "model": config.model.to_dict(), "data": config.data.to_dict(),
      "operator": config.operator.to_dict(), "budget_minutes": args.minutes,
      "clock": args.clock,
      "machine": machine(),
      "protocol": (f"PSNR/SSIM RGB, no border crop (paper), at x{config.data.eval_scale} on "
                   f"{config.operator.val_images} val images during training; final on all"),
      "bicubic_val": bicubic, "points": points,
      "train_loss": [{"step": r["step"], "loss": r["loss"], "steps_per_s": r["steps_per_s"]}
                     for r in train_rows],
      "final_all_val": final, "beats_bicubic": bool(final["psnr"] > final["bicubic_psnr"]),
  }
  write_record(record, args.out)
  title = (f"stage 1, {Path(args.config.partition(':')[0]).stem}, batch "
           f"{config.data.operator_batch_size} p{config.data.patch_size}; final on "
           f"{final['images']} val: {final['psnr']:.2f} vs bicubic {final['bicubic_psnr']:.2f} dB")
  plot_operator(points, bicubic["psnr"], title, Path(args.out).with_suffix(".png"))
  print(json.dumps({"points": points, "final_all_val": final}, indent=1))


def plot_operator(points: list[dict], bicubic_psnr: float, title: str, path: Path) -> None:
  """Val PSNR against CPU minutes (wall minutes as labels), bicubic as a line."""
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  ax.plot([p["cpu_minutes"] for p in points], [p["psnr"] for p in points], "o-",
          label="operator, val x4")
  ax.axhline(bicubic_psnr, color="gray", linestyle="--", label=f"bicubic {bicubic_psnr:.2f} dB")
  ax.set_xlabel("process CPU minutes (2 cores: divide by 2 for machine minutes)")
  ax.set_ylabel("PSNR (dB, RGB)")
  ax.set_title(title, fontsize=9)
  for p in points:
    ax.annotate(f"{p['wall_minutes']:.0f}", (p["cpu_minutes"], p["psnr"]), fontsize=7,
                textcoords="offset points", xytext=(0, 6), ha="center")
  ax.text(0.99, 0.02, "labels: wall minutes", transform=ax.transAxes, ha="right", fontsize=7)
  ax.legend(loc="lower right", bbox_to_anchor=(1.0, 0.06), fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def formulation_label(record: dict) -> str:
  d = record["diffusion"]
  scale = f" x{d['residual_scale']:g}" if d["space"] == "residual" and d["residual_scale"] != 1 \
      else ""
  return f"{d['target']}/{d['space']}{scale}"


def diffusion_curve(config, args, workdir: Path) -> None:
  config.diffusion.prior_checkpoint = str(Path(args.prior).absolute())
  config.diffusion.update(val_images=1, sample_images=1, eval_every=0, checkpoint_every=0)
  times = run_chunks(config, args, workdir, DiffusionProbe(config, args))
  records = read_metrics(workdir / "diffusion" / "metrics.jsonl")
  points = [{"step": s, **times[s]} for s in sorted(times)]
  own = "the run's"
  sampling = (f"{args.sampler or own + ' sampler'} {args.steps or own} steps"
              + (f", {args.skip} spacing" if args.skip else ""))
  record = {
      "stage": "diffusion", "config": args.config, "overrides": args.set, "workdir": str(workdir),
      "prior": args.prior, "model": config.model.to_dict(), "data": config.data.to_dict(),
      "diffusion": config.diffusion.to_dict(), "budget_minutes": args.minutes,
      "clock": args.clock,
      "machine": machine(),
      "protocol": ("PSNR/SSIM RGB without border crop (paper) and LPIPS (AlexNet), "
                   + (f"centre {args.val_crop}x{args.val_crop} crops of " if args.val_crop
                      else "whole ")
                   + f"val images, {args.val_images} evenly spaced of the val split, at scales "
                   f"{args.scales}; NeurOp-Diff: {sampling}, the EMA parameters; "
                   f"{args.clock} minutes count training only (evaluation apart)"),
      "points": points,
      "train_loss": [{"step": r["step"], "loss": r["loss"], "steps_per_s": r["steps_per_s"]}
                     for r in records if r["kind"] == "train" and r["step"] <= points[-1]["step"]],
  }
  write_record(record, args.out)
  plot_diffusion([record], Path(args.out).with_suffix(".png"))


def plot_diffusion(records: list[dict], path: Path) -> None:
  """PSNR, SSIM and LPIPS against CPU minutes for each scale: NeurOp-Diff of every record (one
  colour each), with the prior and bicubic of the first record as horizontal lines (the prior is
  frozen and the images fixed, so they are the same at every point)."""
  scales = list(records[0]["points"][0]["metrics"])
  fig, axes = plt.subplots(len(scales), 3, figsize=(13, 3.6 * len(scales)), squeeze=False)
  for row, scale in enumerate(scales):
    for col, metric in enumerate(("psnr", "ssim", "lpips")):
      ax = axes[row][col]
      reference = records[0]["points"][0]["metrics"][scale]
      for method, style in (("prior", "--"), ("bicubic", ":")):
        value = reference[f"{method}_{metric}"]
        ax.axhline(value, color="gray", linestyle=style, label=f"{METHODS[method]} {value:.3f}")
      for record in records:
        clock = "cpu_minutes" if record.get("clock", "cpu") == "cpu" else "train_wall_minutes"
        ax.plot([p[clock] for p in record["points"]],
                [p["metrics"][scale][metric] for p in record["points"]], "o-", markersize=3,
                label=f"NeurOp-Diff {formulation_label(record)}")
      ax.set_title(f"{metric.upper()} at {scale} ({'lower' if metric == 'lpips' else 'higher'} "
                   "is better)", fontsize=9)
      ax.set_xlabel("stage-2 training, " + ("process CPU minutes" if records[0].get("clock", "cpu")
                                             == "cpu" else "wall minutes"))
      ax.grid(alpha=0.3)
      if row == 0 and col == 0:
        ax.legend(fontsize=7)
  first = records[0]
  fig.suptitle("\n".join(textwrap.wrap(f"stage 2 on ucm-dev: {first['protocol']}", 170)),
               fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  print(f"wrote {path}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", default="configs/ucm_dev.py:operator")
  parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                      help="config overrides, e.g. diffusion.target=v")
  parser.add_argument("--workdir", default="runs/ucm_dev_curve")
  parser.add_argument("--minutes", type=float, default=40.0, help="the training budget")
  parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                      help="what the budget counts: process CPU time (CPU) or wall time (GPU)")
  parser.add_argument("--chunk_minutes", type=float, default=4.0,
                      help="minutes between points (approximately)")
  parser.add_argument("--first_chunk_steps", type=int, default=10)
  parser.add_argument("--prior", help="stage 2: the stage-1 workdir whose operator is the prior")
  parser.add_argument("--val_images", type=int, default=12, help="stage 2: val images")
  parser.add_argument("--val_crop", type=int, default=128,
                      help="stage 2: evaluate the centre crop of this side (0: whole images)")
  parser.add_argument("--sample_images", type=int, default=3, help="stage 2: rows of the grids")
  parser.add_argument("--scales", type=float, nargs="+", default=[4.0, 8.0])
  parser.add_argument("--sampler", default="ddim", help="stage 2: '' for the run's own")
  parser.add_argument("--steps", type=int, default=50, help="stage 2: 0 for the run's own")
  parser.add_argument("--skip", default="",
                      help="stage 2: the spacing ('' : the run's for its own sampler, else the "
                           "sampler's: uniform for ddim)")
  parser.add_argument("--compare", nargs="+", metavar="JSON",
                      help="only plot these stage-2 records together into --out (a PNG)")
  parser.add_argument("--out", default=None,
                      help="the JSON record (its PNG beside it); default results/"
                           "learning_curve[_diffusion].json")
  args = parser.parse_args()
  if args.compare:
    plot_diffusion([json.loads(Path(p).read_text()) for p in args.compare], Path(args.out))
    return
  config = load_config(args.config, args.set)
  if config.stage not in ("operator", "diffusion"):
    raise SystemExit("name the stage in --config: path.py:operator or path.py:diffusion")
  if args.out is None:
    suffix = "" if config.stage == "operator" else "_diffusion"
    args.out = str(RESULTS / f"learning_curve{suffix}.json")
  workdir = Path(args.workdir)
  jax.config.update("jax_compilation_cache_dir", str(workdir.absolute() / "xla_cache"))
  if config.stage == "operator":
    operator_curve(config, args, workdir)
  else:
    if not args.prior:
      raise SystemExit("stage 2 needs --prior, a stage-1 workdir (e.g. from configs/ucm_dev.py:"
                       "operator)")
    diffusion_curve(config, args, workdir)


if __name__ == "__main__":
  main()
