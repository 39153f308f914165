"""Input-pipeline throughput: batches per second of both training stages on real images.

  python experiments/bench_input.py [--images ../shared/data/ucm-dev/train]

Reads every image under ``--images`` (a folder source, no split) with the default data config
(grain workers 0, ``read_threads`` reader threads), times ``--batches`` batches of each setting
after one warm-up batch, prints the table and writes experiments/results/bench_input.json. The
ratio to the training step is left null: the lead fills it in from bench_train.
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
)


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
  args = parser.parse_args()
  source = ImageFolderSource(args.images, list_images(args.images))
  results = []
  for stage, label, overrides, batches in SETTINGS:
    row = {"stage": stage, "setting": label, **overrides,
           **bench(source, stage, overrides, max(int(batches * args.batch_factor), 1))}
    row["train_step_ratio"] = None
    results.append(row)
    print(f"{stage:9s} {label:34s} {row['batches_per_s']:8.2f} batches/s "
          f"({row['ms_per_batch']:.0f} ms/batch)")
  record = {
      "images": args.images, "num_images": len(source),
      "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
      "note": ("numpy/grain on CPU, workers 0. operator p 48: scales capped at 256/48 = 5.33 so "
               "that the crop fits a 256 image. train_step_ratio = input ms per batch / train step "
               "ms, filled in from bench_train."),
      "results": results,
  }
  write_record(record, args.out)


if __name__ == "__main__":
  main()
