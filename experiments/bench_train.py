"""Training-step speed and memory of both stages at the paper configuration.

  python experiments/bench_train.py [--stage both] [--batch N] [--steps N] [--dtype float32]

Times the project's compiled training step (``train_steps.compile_steps`` of ``operator_step`` /
``diffusion_step``, jitted over the ('data',) mesh with the state donated, one step per call as
the paper config's ``steps_per_call``) on random batches of the training shapes:

  stage 1 (operator): batch 4 of 48x48 LR patches in [0, 1], 48x48 = 2304 query points each.
  stage 2 (diffusion): batch 2 of 256x256 HR in [0, 1]; the frozen prior of a 64x64 LR (x4) is
    computed per step by ``train_steps.compile_prior``, as training does, and timed with the step.

Compilation (``lower().compile()``) is timed apart; then ``--warmup`` steps, then the median of
``--steps`` steps, each ended by ``block_until_ready``. Process CPU seconds per step are recorded
beside wall seconds because other jobs may share the machine. Peak memory: the process's peak RSS
after each stage (stages run in the order operator, diffusion, so the second peak covers both) and
``memory_stats()`` of the device where it has them (not on CPU). Prints a table and writes
experiments/results/bench_train.json, with the original's numbers on this machine as reference and
``input_to_step_ratio`` = (input batches/s of bench_input.json) / (train steps/s): above 1 the
input pipeline keeps up with training on one core of its own.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from neurop_jax.config_base import base_config
from neurop_jax.diffusion import schedule_from_config
from neurop_jax.models import make_model
from neurop_jax.train_state import (create_train_state, make_optimizer, step_schedule,
                                    warmup_schedule)
from neurop_jax.train_steps import (batch_sharding, compile_prior, compile_steps, data_mesh,
                                    diffusion_step, operator_step, query_grid, replicated,
                                    to_device)
from record import write_record

RESULTS = Path(__file__).parent / "results"
GIB = 2.0 ** 30
PATCH = 48
CROP, LR_SIDE = 256, 64
DEFAULT_BATCH = {"operator": 4, "diffusion": 2}
DEFAULT_STEPS = {"operator": 20, "diffusion": 5}
# The original PyTorch implementation on this machine: seconds per step (and peak memory), and
# the targets of this port.
REFERENCE = {
    ("operator", 4): {"s_per_step": 0.83, "target_s_per_step": 0.4},
    ("diffusion", 2): {"s_per_step": 15.7, "target_s_per_step": 7.0},
    ("diffusion", 10): {"s_per_step": 95.0, "peak_gib": 13.4},
}
# bench_input.json settings of the same shapes: (stage, batch) -> (batch field, size field, size).
INPUT_SETTINGS = {
    ("operator", 4): ("operator_batch_size", "patch_size", PATCH),
    ("diffusion", 2): ("diffusion_batch_size", "crop_size", CROP),
    ("diffusion", 10): ("diffusion_batch_size", "crop_size", CROP),
}


def peak_rss_gib() -> float:
  """Peak resident set size of this process so far (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


def device_memory() -> dict | None:
  """Peak and current bytes in use on device 0 (GiB), or None where it has no memory_stats."""
  stats = jax.devices()[0].memory_stats()
  if not stats:
    return None
  return {k: round(stats[k] / GIB, 3) for k in ("peak_bytes_in_use", "bytes_in_use") if k in stats}


def _random(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
  return rng.random(shape, dtype=np.float32)


def operator_setup(config, model, mesh, batch: int, rng: np.random.Generator):
  """Stage 1: (params, optimizer, step, batch maker), built as ``train`` builds them."""
  cfg = config.operator
  schedule = warmup_schedule(cfg.learning_rate, cfg.warmup_multiplier, 1000, 10_000, cfg.decay)
  tx = make_optimizer(cfg, schedule)
  coord, cell = query_grid(1, (PATCH, PATCH))
  params = model.init(jax.random.key(0), jnp.zeros((1, PATCH, PATCH, 3)), coord, cell,
                      method=model.prior)["params"]["operator"]
  step = functools.partial(operator_step, model=model, tx=tx, schedule=schedule,
                           ema_decay=cfg.ema_decay)
  coord, cell = query_grid(batch, (PATCH, PATCH))
  host = {"lr": _random(rng, (batch, PATCH, PATCH, 3)), "coord": np.asarray(coord),
          "cell": np.asarray(cell), "gt": _random(rng, (batch, PATCH, PATCH, 3))}
  stacked = to_device({k: v[None] for k, v in host.items()}, batch_sharding(mesh, stacked=True))
  return params, tx, step, lambda: stacked


def diffusion_setup(config, model, mesh, batch: int, rng: np.random.Generator):
  """Stage 2: the UNet step on hr and the frozen prior, the prior computed per step."""
  cfg = config.diffusion
  schedule = step_schedule(cfg.learning_rates, cfg.learning_rate_every)
  tx = make_optimizer(cfg, schedule)
  size = 2 ** (len(config.model.unet.channel_mults) - 1)
  x = jnp.zeros((1, size, size, 3))
  params = model.init(jax.random.key(0), x, jnp.ones((1,)), x,
                      method=model.denoise)["params"]["unet"]
  coord, cell = query_grid(1, (LR_SIDE, LR_SIDE))
  prior_params = jax.device_put(
      model.init(jax.random.key(1), jnp.zeros((1, LR_SIDE, LR_SIDE, 3)), coord, cell,
                 method=model.prior)["params"]["operator"], replicated(mesh))
  step = functools.partial(diffusion_step, model=model, tx=tx, schedule=schedule,
                           ema_decay=cfg.ema_decay, noise=schedule_from_config(cfg),
                           loss=cfg.loss, per_sample_t=cfg.per_sample_t)
  prior_fn = compile_prior(model, mesh)
  host = to_device({"hr": _random(rng, (batch, CROP, CROP, 3)),
                    "lr": _random(rng, (batch, LR_SIDE, LR_SIDE, 3))}, batch_sharding(mesh))
  stacked = batch_sharding(mesh, stacked=True)

  def make_batch():
    prior = prior_fn(prior_params, host["lr"], host["hr"])
    return {"hr": jax.device_put(host["hr"][None], stacked),
            "prior": jax.device_put(prior[None], stacked)}

  return params, tx, step, make_batch


def bench_stage(stage: str, batch: int, steps: int, warmup: int, dtype: str,
                preset: str = "paper") -> dict:
  """Compile time, then the median wall and CPU seconds of ``steps`` steps after ``warmup``."""
  config = base_config(preset, stage)
  config.model.dtype = dtype
  model = make_model(config.model)
  mesh = data_mesh()
  setup = operator_setup if stage == "operator" else diffusion_setup
  params, tx, step, make_batch = setup(config, model, mesh, batch, np.random.default_rng(0))
  n_params = sum(int(p.size) for p in jax.tree.leaves(params))
  state = jax.jit(lambda p: create_train_state(p, tx), out_shardings=replicated(mesh))(params)
  rng = jax.random.key(0)
  start = time.perf_counter()
  first = make_batch()
  run = compile_steps(step, mesh).lower(state, first, rng).compile()
  compile_s = time.perf_counter() - start
  print(f"  {stage}: compiled in {compile_s:.1f} s", flush=True)
  walls, cpus = [], []
  for i in range(warmup + steps):
    wall, cpu = time.perf_counter(), time.process_time()
    state, metrics = run(state, make_batch(), rng)
    jax.block_until_ready((state, metrics))
    print(f"  {stage} step {i + 1}/{warmup + steps}: {time.perf_counter() - wall:.2f} s",
          flush=True)
    if i >= warmup:
      walls.append(time.perf_counter() - wall)
      cpus.append(time.process_time() - cpu)
  median = statistics.median(walls)
  row = {
      "stage": stage, "preset": preset, "batch": batch, "dtype": dtype, "params": n_params,
      "shapes": (f"lr {PATCH}x{PATCH}, {PATCH * PATCH} queries" if stage == "operator" else
                 f"hr {CROP}x{CROP}, prior from lr {LR_SIDE}x{LR_SIDE} computed per step"),
      "compile_s": round(compile_s, 2), "warmup_steps": warmup, "steps": steps,
      "s_per_step": round(median, 4), "s_per_step_mean": round(statistics.mean(walls), 4),
      "s_per_step_min": round(min(walls), 4), "s_per_step_max": round(max(walls), 4),
      "cpu_s_per_step": round(statistics.median(cpus), 4),
      "images_per_s": round(batch / median, 3),
      "final_loss": float(np.asarray(metrics["loss"])[-1]),
      "peak_rss_gib": round(peak_rss_gib(), 3), "device_memory_gib": device_memory(),
  }
  reference = REFERENCE.get((stage, batch)) if preset == "paper" else None
  if reference:
    row["reference_original"] = reference
    row["speedup_vs_original"] = round(reference["s_per_step"] / median, 2)
    if "target_s_per_step" in reference:
      row["meets_target"] = median <= reference["target_s_per_step"]
  return row


def input_ratio(row: dict, input_json: Path) -> float | None:
  """(input batches/s) / (train steps/s) of the bench_input setting with this row's shapes."""
  setting = INPUT_SETTINGS.get((row["stage"], row["batch"]))
  if setting is None or not input_json.exists():
    return None
  batch_field, size_field, size = setting
  for r in json.loads(input_json.read_text())["results"]:
    if r["stage"] == row["stage"] and r.get(batch_field) == row["batch"] and r.get(
        size_field) == size:
      return round(r["batches_per_s"] * row["s_per_step"], 1)
  return None


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--stage", choices=("both", "operator", "diffusion"), default="both")
  parser.add_argument("--batch", type=int, default=0,
                      help="batch size (0: 4 for the operator, 2 for the diffusion stage)")
  parser.add_argument("--steps", type=int, default=0,
                      help="timed steps (0: 20 for the operator, 5 for the diffusion stage)")
  parser.add_argument("--warmup", type=int, default=2, help="untimed steps after compiling")
  parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                      help="compute dtype of the model (parameters stay float32)")
  parser.add_argument("--preset", default="paper", help="model preset (paper; micro to try it)")
  parser.add_argument("--input_json", default=str(RESULTS / "bench_input.json"))
  parser.add_argument("--out", default=str(RESULTS / "bench_train.json"))
  args = parser.parse_args()
  stages = ("operator", "diffusion") if args.stage == "both" else (args.stage,)
  load_before = os.getloadavg()
  results = []
  for stage in stages:
    row = bench_stage(stage, args.batch or DEFAULT_BATCH[stage], args.steps or DEFAULT_STEPS[stage],
                      args.warmup, args.dtype, args.preset)
    row["input_to_step_ratio"] = input_ratio(row, Path(args.input_json))
    results.append(row)
    print(f"{stage:9s} batch {row['batch']:2d} {row['dtype']}: compile {row['compile_s']:.1f} s, "
          f"{row['s_per_step']:.3f} s/step (CPU {row['cpu_s_per_step']:.3f} s), "
          f"{row['images_per_s']:.2f} images/s, peak RSS {row['peak_rss_gib']:.2f} GiB, "
          f"input/step ratio {row['input_to_step_ratio']}", flush=True)
  record = {
      "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                  "device": str(jax.devices()[0]), "jax": jax.__version__,
                  "xla_flags": os.environ.get("XLA_FLAGS", "")},
      "load_average_before": [round(x, 2) for x in load_before],
      "load_average_after": [round(x, 2) for x in os.getloadavg()],
      "note": (f"model_config({args.preset!r}); wall seconds are the median over the timed "
               "steps. The "
               "load average counts other jobs on the machine: with load above the core count "
               "wall times are inflated, CPU seconds less so. input_to_step_ratio = bench_input "
               "batches/s x train s/step (input batches produced per train step, workers 0)."),
      "results": results,
  }
  write_record(record, args.out)


if __name__ == "__main__":
  main()
