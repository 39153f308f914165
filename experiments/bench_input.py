"""Input-pipeline throughput: batches per second of both training stages on real images.

  python experiments/bench_input.py [--images ../shared/data/ucm-dev/train]

Reads every image under ``--images`` (a folder source, no split) with the default data config
(``read_threads`` reader threads), times a number of batches of each setting after one warm-up
batch, prints the table and writes experiments/results/bench_input.json. Stage-2 batches include
their degradation to the LR size (``transforms.diffusion_batch``, in the pipeline: in the grain
workers when there are any). Each row gives images/s and images/s per host core (the process's
one core with workers 0, else per worker). The paper's stage-2 batch (16 of 256x256) is also run
with ``--workers`` grain workers, and the record projects what an H200 consumes: 498 GFLOP per
stage-2 training image (3 UNet passes of 126 GFLOP at 256x256 and the 120 GFLOP prior, XLA's
counts in bench_sampling) at 40% of 989 TFLOP/s (bf16 dense), against 8 host workers at the
measured per-core rate. The ratio to the training step is left null: the lead fills it in from
bench_train.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

from tqdm import tqdm

from neurop_jax.data import (ImageFolderSource, default_data_config, diffusion_pipeline,
                             list_images, operator_pipeline)
from record import write_record

SETTINGS = (
    ("operator", "paper-size bench: batch 4, p 48",
     dict(operator_batch_size=4, patch_size=48), 300),
    ("operator", "training recipe: batch 64, p 32",
     dict(operator_batch_size=64, patch_size=32), 20),
    ("diffusion", "batch 2, 256x256", dict(diffusion_batch_size=2, crop_size=256), 300),
    ("diffusion", "batch 10, 256x256", dict(diffusion_batch_size=10, crop_size=256), 60),
    ("diffusion", "paper: batch 16, 256x256", dict(diffusion_batch_size=16, crop_size=256), 40),
)
# Stage-2 images an H200 consumes per second (see the module docstring), and the target ratio.
H200_STAGE2_IMAGES_PER_S = 0.4 * 989e12 / 498e9
TARGET_RATIO = 1.5
HOST_WORKERS = 8


def bench(source, stage: str, overrides: dict, batches: int) -> dict:
  """Batches per second of one stage and config, after one warm-up batch."""
  config = default_data_config()
  config.update(overrides)
  make = operator_pipeline if stage == "operator" else diffusion_pipeline
  iterator = make(source, config)
  next(iterator)
  start = time.perf_counter()
  for _ in tqdm(range(batches), desc=f"{stage} {overrides}", leave=False):
    next(iterator)
  seconds = time.perf_counter() - start
  return {"batches": batches, "seconds": round(seconds, 3),
          "batches_per_s": round(batches / seconds, 3),
          "ms_per_batch": round(1e3 * seconds / batches, 1),
          "read_threads": config.read_threads, "workers": config.workers, "s_max": config.s_max}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--images", default=str(
      Path(__file__).resolve().parents[2] / "shared" / "data" / "ucm-dev" / "train"))
  parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_input.json"))
  parser.add_argument("--batch_factor", type=float, default=1.0, help="scales the batch counts")
  parser.add_argument("--workers", type=int, default=os.cpu_count(),
                      help="grain workers of the paper's stage-2 batch run with workers")
  args = parser.parse_args()
  source = ImageFolderSource(args.images, list_images(args.images))
  settings = list(SETTINGS)
  if args.workers > 0:
    settings.append(("diffusion", f"paper: batch 16, 256x256, {args.workers} workers",
                     dict(diffusion_batch_size=16, crop_size=256, workers=args.workers), 80))
  results = []
  for stage, label, overrides, batches in settings:
    row = {"stage": stage, "setting": label, "workers": 0, **overrides,
           **bench(source, stage, overrides, max(int(batches * args.batch_factor), 1))}
    batch = overrides.get("diffusion_batch_size", overrides.get("operator_batch_size"))
    row["images_per_s"] = round(row["batches_per_s"] * batch, 1)
    row["images_per_s_per_core"] = round(row["images_per_s"] / max(row["workers"], 1), 1)
    row["train_step_ratio"] = None
    results.append(row)
    print(f"{stage:9s} {label:34s} {row['batches_per_s']:8.2f} batches/s "
          f"({row['ms_per_batch']:.0f} ms/batch), {row['images_per_s_per_core']:.1f} images/s "
          "per core")
  paper = [r for r in results if r["setting"].startswith("paper")]
  per_core = min(r["images_per_s_per_core"] for r in paper)
  projection = {"h200_stage2_images_per_s": round(H200_STAGE2_IMAGES_PER_S, 1),
                "host_workers": HOST_WORKERS, "per_core_images_per_s": per_core,
                "host_images_per_s": round(HOST_WORKERS * per_core, 1),
                "ratio": round(HOST_WORKERS * per_core / H200_STAGE2_IMAGES_PER_S, 2),
                "target_ratio": TARGET_RATIO}
  print(f"stage 2 at the paper's batch: {HOST_WORKERS} workers x {per_core:.1f} images/s per core "
        f"= {projection['host_images_per_s']:.0f} images/s against an H200's "
        f"{projection['h200_stage2_images_per_s']:.0f}: ratio {projection['ratio']:.2f} "
        f"(target {TARGET_RATIO})")
  record = {
      "images": args.images, "num_images": len(source),
      "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
      "note": ("numpy/grain on CPU. operator p 48: scales capped at 256/48 = 5.33 so "
               "that the crop fits a 256 image. train_step_ratio = input ms per batch / train step "
               "ms, filled in from bench_train. The projection takes the slower per-core rate of "
               "the paper-batch rows."),
      "stage2_projection": projection,
      "results": results,
  }
  write_record(record, args.out)


if __name__ == "__main__":
  main()
