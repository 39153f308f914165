"""The table of a ``gpu_check.sh`` run: speed as a share of the device's peak, input against steps.

  python experiments/gpu_summary.py experiments/results/gpu [--peak_tflops 989]

Reads ``bench_sampling.json``, ``bench_train.json`` and ``bench_input.json`` from the folder that
``gpu_check.sh`` wrote, and writes ``summary.json`` there and prints it as a table:

- sampling: images/s and achieved TFLOP/s of the compiled sampler (XLA's FLOP count over the
  median wall time), and its share of the peak;
- training: the same for each stage's train step (stage 2: the UNet's passes);
- input: the stage-2 pipeline's images/s on one host core (bench_input at the largest 256x256
  batch it ran, grain workers 0), times ``--workers`` (8) for the projected host rate, over the
  stage-2 train step's images/s. The issue's target is 1.5. Stage 2's degradation to the LR size
  runs after batching in the training process and is not in bench_input's rate.

The peak is the dense TFLOP/s of the device's data sheet for the dtype the benchmarks ran in
(``PEAK_TFLOPS``, matched on ``jax.devices()[0].device_kind``), or ``--peak_tflops``; on a CPU, or
a device not in the table, the shares are null.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from record import write_record

# Dense tensor-core TFLOP/s from NVIDIA's data sheets (no sparsity): bfloat16, float32 (FP32 CUDA
# cores; TF32 is not used by default in float32 here).
PEAK_TFLOPS = {
    "H200": {"bfloat16": 989.0, "float32": 67.0},
    "H100": {"bfloat16": 989.0, "float32": 67.0},
    "A100": {"bfloat16": 312.0, "float32": 19.5},
    "L4": {"bfloat16": 121.0, "float32": 30.3},
}


def peak_of(device_kind: str, dtype: str) -> float | None:
  """The table's peak for ``device_kind`` (e.g. 'NVIDIA H200') and ``dtype``, or None."""
  for name, peaks in PEAK_TFLOPS.items():
    if name.lower() in device_kind.lower():
      return peaks.get(dtype)
  return None


def share(tflops: float | None, peak: float | None) -> float | None:
  return None if tflops is None or not peak else round(100 * tflops / peak, 2)


def summarize(folder: Path, peak_tflops: float | None = None, workers: int = 8) -> dict:
  """The summary of the JSONs in ``folder`` (see the module docstring)."""
  sampling = json.loads((folder / "bench_sampling.json").read_text())
  train = json.loads((folder / "bench_train.json").read_text())
  inputs = json.loads((folder / "bench_input.json").read_text())
  device = sampling["machine"].get("device", "")
  dtype = sampling["dtype"]
  peak = peak_tflops or peak_of(device, dtype)
  compiled = sampling["results"]["compiled"]
  tflops = compiled["gflop_per_s"] / 1e3
  rows = [{"what": f"sampling: {sampling['model']}, batch {sampling['batch']}, "
                   f"{sampling['steps']} DDIM steps, {dtype}",
           "images_per_s": round(sampling["batch"] / compiled["median_s"], 3),
           "tflop_per_s": round(tflops, 3), "percent_of_peak": share(tflops, peak)}]
  for name, result in sampling["results"].items():
    if name.startswith("student_"):
      rows.append({"what": f"sampling: student, {name.split('_')[1]} steps",
                   "images_per_s": round(sampling["batch"] / result["median_s"], 3)})
  steps = {}
  for row in train["results"]:
    steps[row["stage"]] = row
    rows.append({"what": f"training: {row['stage']}, {row['preset']}, batch {row['batch']}, "
                         f"{row['dtype']}",
                 "images_per_s": row["images_per_s"], "tflop_per_s": row.get("tflop_per_s"),
                 "percent_of_peak": share(row.get("tflop_per_s"),
                                          peak_tflops or peak_of(device, row["dtype"]))})
  stage2 = [r for r in inputs["results"] if r["stage"] == "diffusion" and r.get("crop_size") == 256]
  if stage2 and "diffusion" in steps:
    best = max(stage2, key=lambda r: r["diffusion_batch_size"])
    per_core = best["batches_per_s"] * best["diffusion_batch_size"]
    step_rate = steps["diffusion"]["images_per_s"]
    rows.append({"what": f"input: stage 2, 256x256, {workers} workers x "
                         f"{per_core:.1f} images/s per core, over the train step's "
                         f"{step_rate:.2f} images/s",
                 "input_images_per_s": round(per_core * workers, 1),
                 "input_to_step_ratio": round(per_core * workers / step_rate, 2),
                 "target": 1.5})
  return {"device": device, "dtype": dtype, "peak_tflops": peak, "rows": rows}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("folder", type=Path)
  parser.add_argument("--peak_tflops", type=float, default=None)
  parser.add_argument("--workers", type=int, default=8)
  args = parser.parse_args()
  summary = summarize(args.folder, args.peak_tflops, args.workers)
  print(f"device: {summary['device'] or '?'}  peak: {summary['peak_tflops'] or 'unknown'} TFLOP/s")
  for row in summary["rows"]:
    values = ", ".join(f"{k} {v}" for k, v in row.items() if k != "what")
    print(f"- {row['what']}: {values}")
  write_record(summary, args.folder / "summary.json")


if __name__ == "__main__":
  main()
