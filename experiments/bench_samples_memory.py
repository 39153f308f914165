"""K-sample memory: XLA's temporary memory of the K-sample sampler, K draws in groups or all at once.

  python experiments/bench_samples_memory.py [--samples 1 4 16] [--quick]

The paper-size model with random weights, one 64x64 image -> 256x256 (``--quick``: the 'micro'
model, 24x24 -> 96x96), a 2-step DDIM (the memory of a scan does not grow with its length):
``super_resolve``'s program compiled (not run) for each K of ``--samples``, with the draws
``SAMPLE_GROUP`` at a time (``grouped``, today's program) and all K at once (``all_at_once``, the
vmap over K of before). Reports the temporary bytes of each (XLA's memory analysis of the
compiled program, on this backend), their ratio to K = 4 and the ratio of the two forms, and
writes experiments/results/bench_samples_memory.json (``--quick``: ..._quick.json). The target
(issue 22): 16 draws at most 1.3 times the memory of 4.
"""

from __future__ import annotations

import argparse
import platform

import jax
import jax.numpy as jnp

from bench_sampling import MIB, init_params
from neurop_jax.inference import api as inference
from neurop_jax.inference.run import Run
from neurop_jax.models import make_model, model_config
from record import write_record


def temp_mib(run: Run, lr: jax.Array, samples: int, group: int) -> float:
  """Temporary MiB of ``super_resolve``'s x4 program: ``samples`` draws, ``group`` at a time."""
  temp = inference.sampler_temp_bytes(run, lr, scale=4, samples=samples, group=group)
  return round(temp / MIB, 1)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--samples", type=int, nargs="+", default=[1, 4, 16])
  parser.add_argument("--quick", action="store_true", help="the micro model, a smoke run")
  args = parser.parse_args()
  cfg = model_config("micro" if args.quick else "paper")
  model = make_model(cfg)
  run = Run(model, init_params(model, len(cfg.unet.channel_mults)))
  side = 24 if args.quick else 64
  lr = jnp.zeros((1, side, side, 3), jnp.float32)
  rows = []
  for k in args.samples:
    grouped = temp_mib(run, lr, k, inference.SAMPLE_GROUP)
    at_once = temp_mib(run, lr, k, k)
    rows.append({"samples": k, "grouped_temp_mib": grouped, "all_at_once_temp_mib": at_once})
    print(f"K={k:3d}  grouped {grouped:9.1f} MiB  all at once {at_once:9.1f} MiB", flush=True)
  base = {form: next((r[f"{form}_temp_mib"] for r in rows if r["samples"] == 4), None)
          for form in ("grouped", "all_at_once")}
  for row in rows:
    for form, ref in base.items():
      if ref:
        row[f"{form}_ratio_to_k4"] = round(row[f"{form}_temp_mib"] / ref, 3)
  record = {"model": "micro" if args.quick else "paper", "lr": [side, side],
            "out": [4 * side, 4 * side], "sample_group": inference.SAMPLE_GROUP,
            "backend": jax.default_backend(), "jax": jax.__version__,
            "machine": platform.processor() or platform.machine(), "rows": rows,
            "target": "16 draws <= 1.3 x the temporary memory of 4"}
  name = "bench_samples_memory_quick.json" if args.quick else "bench_samples_memory.json"
  write_record(record, f"experiments/results/{name}")


if __name__ == "__main__":
  main()
