"""Stage-1 learning curve on a CPU-time budget: validation PSNR at x4 against minutes, and bicubic.

  XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \
      python experiments/learning_curve.py [--config configs/ucm_dev.py:operator] \
      [--workdir runs/ucm_dev_curve] [--cpu_minutes 40]

Runs the real trainer (``train.train_and_evaluate``) in chunks: chunk ``n`` sets
``config.operator.num_steps`` to the step it ends at, so the trainer validates and checkpoints
there, and the next chunk resumes from that checkpoint (exactly, data position included; the
config's learning rate is constant, so the changing ``num_steps`` does not change the schedule).
The budget is this process's CPU time (``time.process_time``: all its threads, compilation and
validation included), because other jobs share the machine's cores; each validation point records
CPU and wall minutes. Chunks are sized from the CPU seconds per step of the chunk before to about
``--chunk_cpu_minutes``. At the end the last parameters are evaluated on every val image (the
trainer validates on ``config.operator.val_images`` of them). Times are kept in
``<workdir>/curve_times.json``: a killed run re-run with the same arguments continues (losing the
CPU time of the unfinished chunk) and a finished one only writes the results again.

Writes experiments/results/learning_curve.json and learning_curve.png. The workdir must not hold
a stage-1 run of another origin (its CPU time would be unaccounted for).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import time
from pathlib import Path

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (after the backend is chosen)

from neurop_jax import checkpoints, train  # noqa: E402
from neurop_jax.data import build_sources  # noqa: E402
from neurop_jax.inference import prior_only  # noqa: E402
from neurop_jax.models import make_model  # noqa: E402
from neurop_jax.validation import Validator  # noqa: E402
from record import write_record  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def load_config(spec: str):
  """``get_config(arg)`` of a config file named as on the command line: ``path.py[:arg]``."""
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("experiment_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def read_metrics(path: Path) -> list[dict]:
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def final_evaluation(config, workdir: Path) -> dict[str, float]:
  """PSNR/SSIM of the latest operator and of bicubic on every val image, at the eval scale."""
  model_cfg, params, step = checkpoints.restore_operator(workdir, which="latest")
  model = make_model(model_cfg)
  variables = {"params": {"operator": params}}
  validator = Validator(build_sources(config.data)["val"], config.data, 0, 1)
  metrics, _ = validator(lambda lr, hr, index: {
      "": prior_only(model, variables, lr, out_shape=hr.shape[1:3])})
  return {"step": step, "images": len(validator.source), **metrics}


def plot(points: list[dict], bicubic_psnr: float, title: str, path: Path) -> None:
  """Val PSNR against CPU minutes (and wall minutes on a second x axis), bicubic as a line."""
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


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", default="configs/ucm_dev.py:operator")
  parser.add_argument("--workdir", default="runs/ucm_dev_curve")
  parser.add_argument("--cpu_minutes", type=float, default=40.0, help="process CPU budget")
  parser.add_argument("--chunk_cpu_minutes", type=float, default=4.0,
                      help="CPU minutes between validations (approximately)")
  parser.add_argument("--first_chunk_steps", type=int, default=10)
  parser.add_argument("--out", default=str(RESULTS / "learning_curve.json"))
  args = parser.parse_args()

  workdir = Path(args.workdir)
  times_path = workdir / "curve_times.json"
  times = {int(k): v for k, v in json.loads(times_path.read_text()).items()} \
      if times_path.exists() else {}
  if (workdir / "operator").exists() and not times:
    raise SystemExit(f"{workdir}/operator holds a run this script did not time: use a fresh "
                     "--workdir")
  config = load_config(args.config)
  config.stage = "operator"
  config.operator.update(eval_every=0, checkpoint_every=0)
  budget_s = 60.0 * args.cpu_minutes
  step = max(times, default=0)
  spent = times[step] if times else {"cpu_minutes": 0.0, "wall_minutes": 0.0}
  cpu0 = time.process_time() - 60 * spent["cpu_minutes"]
  wall0 = time.time() - 60 * spent["wall_minutes"]
  chunk = args.first_chunk_steps
  while time.process_time() - cpu0 < budget_s:
    config.operator.num_steps = step + chunk
    cpu_start = time.process_time()
    train.train_and_evaluate(config, workdir)
    step = config.operator.num_steps
    cpu_used = time.process_time() - cpu0
    times[step] = {"cpu_minutes": cpu_used / 60, "wall_minutes": (time.time() - wall0) / 60,
                   "load": os.getloadavg()[0]}
    times_path.write_text(json.dumps(times, indent=1) + "\n")
    print(f"step {step}: {cpu_used / 60:.1f} CPU min, {times[step]['wall_minutes']:.1f} wall min, "
          f"load {times[step]['load']:.1f}", flush=True)
    per_step = (time.process_time() - cpu_start) / chunk
    chunk = max(1, int(min(60 * args.chunk_cpu_minutes, budget_s - cpu_used) / per_step))

  records = read_metrics(workdir / "operator" / "metrics.jsonl")
  val = {r["step"]: r for r in records if r["kind"] == "val"}
  train_rows = [r for r in records if r["kind"] == "train"]
  points = [{"step": s, **times[s], "psnr": val[s]["psnr"], "ssim": val[s]["ssim"],
             "elapsed_s": val[s]["elapsed_s"]} for s in sorted(times) if s in val]
  first = val[points[0]["step"]]
  bicubic = {"psnr": first["bicubic_psnr"], "ssim": first["bicubic_ssim"]}
  final = final_evaluation(config, workdir)
  record = {
      "config": args.config, "workdir": str(workdir),
      "model": config.model.to_dict(), "data": config.data.to_dict(),
      "operator": config.operator.to_dict(),
      "budget_cpu_minutes": args.cpu_minutes,
      "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                  "jax": jax.__version__, "xla_flags": os.environ.get("XLA_FLAGS", "")},
      "protocol": (f"PSNR/SSIM RGB, no border crop (paper), at x{config.data.eval_scale} on "
                   f"{config.operator.val_images} val images during training; final on all"),
      "bicubic_val": bicubic,
      "points": points,
      "train_loss": [{"step": r["step"], "loss": r["loss"], "steps_per_s": r["steps_per_s"]}
                     for r in train_rows],
      "final_all_val": final,
      "beats_bicubic": bool(final["psnr"] > final["bicubic_psnr"]),
  }
  write_record(record, args.out)
  title = (f"stage 1, {Path(args.config.partition(':')[0]).stem}, batch "
           f"{config.data.operator_batch_size} p{config.data.patch_size}; final on "
           f"{final['images']} val: {final['psnr']:.2f} vs bicubic {final['bicubic_psnr']:.2f} dB")
  plot(points, bicubic["psnr"], title, Path(args.out).with_suffix(".png"))
  print(json.dumps({"points": points, "final_all_val": final}, indent=1))
  print(f"wrote {args.out} and {Path(args.out).with_suffix('.png')}")


if __name__ == "__main__":
  main()
