"""Sampling speed: the compiled DDIM sampler against Python loops over the steps, in one process.

  python experiments/bench_sampling.py [--batch 1] [--steps 50] [--dtype float32] [--quick]
                                      [--student 1 2 4]

The paper-size model with random weights (a jitted init), ``--batch`` images of 64x64 -> 256x256
(``--quick``: the 'micro' model, 16x16 -> 64x64, a smoke run), DDIM with eta = 0, run three ways:

- ``compiled``: ``neurop_jax.super_resolve`` of a ``Run(model, params)`` (the paper's schedule and
  formulation) under ``jax.jit``, lowered and compiled apart (trace and compile times), then run
  once (``first_run_s``) and ``--repeats`` times: the prior once and one ``lax.scan`` over the
  steps, the program ``make_super_resolver`` runs;
- ``loop_prior_every_step``: as the original, a Python loop calling a jitted step (prior + UNet +
  DDIM update: ``formulation.split_prediction`` then ``samplers.ddim_update``) ``--steps`` times;
- ``loop_prior_once``: the jitted prior once, then a jitted step (UNet + DDIM update) ``--steps``
  times;
- ``student_N`` for each ``--student N``: ``super_resolve(..., sampler='student', steps=N)``
  compiled as the first, a distilled student of the same architecture (the UNet's random weights
  copied into ``params['params']['student']``: the cost, not the quality, of one to four network
  evaluations over the trailing spacing), its ``ratio_to_compiled`` the speed-up over the 50
  steps measured in the same process.

The loops' steps are compiled before the loop and warmed up with one call; the three start from
the same x_T (image b's drawn from ``image_key(rng, b)`` as ``super_resolve`` draws it) and must
give the same image (max |diff| recorded). FLOPs are XLA's cost analysis of
each compiled program. XLA counts the body of a ``lax.scan`` (a while loop) once, not once per
iteration (checked on CPU with a scan of 10 matmuls: the count of one); when the compiled
sampler's count is below half the cross-check (prior + steps x one UNet step, from the other two
programs) it is taken as counted once and corrected to prior + steps x (count - prior). Memory:
the process's peak RSS after each method (cumulative, so each value bounds the methods before
it), the device's peak bytes in use where the backend reports them (GPU), and XLA's memory
analysis of each program. Prints a table and writes experiments/results/bench_sampling.json
(``--quick``: bench_sampling_quick.json) with the ratios of the compiled sampler to the original's
171 s and to the target (43 s) on this machine kind (paper model, batch 1, 50 steps, float32), to
the previous JSON's, and the XLA flags in force. Process CPU seconds are recorded beside wall
seconds: other jobs may share the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from neurop_jax.diffusion import samplers
from neurop_jax.diffusion.formulation import split_prediction
from neurop_jax.inference import api as inference, tiles
from neurop_jax.inference.run import Run
from neurop_jax.models import NeurOpDiff, compute_prior, make_model, model_config
from neurop_jax.models.coords import make_cell, make_coord
from record import write_record

MIB = 2**20
# The 50-step DDIM of the paper model, 64x64 -> 256x256, batch 1, float32, on this machine kind
# (issue 13): the original PyTorch sampler, this port before models.conv, and the target.
REFERENCE = {"original_s": 171.0, "jax_before_s": 64.2, "target_s": 43.0}
# The 1-step student, same setting (issue 21): prior + one UNet evaluation.
STUDENT_TARGET_S = 2.5


def init_params(model: NeurOpDiff, levels: int) -> dict:
  """Random parameters ``{'params': {'operator': ..., 'unet': ...}}`` from a jitted init."""
  size = 2 ** (levels - 1)
  x = jnp.zeros((1, size, size, 3))
  coord = jnp.asarray(make_coord((size, size)))[None]
  cell = jnp.asarray(make_cell((size, size)))[None]
  return jax.jit(lambda rng: model.init(rng, x, jnp.ones((1,)), x, coord, cell))(jax.random.key(0))


def compile_timed(fn: Callable, *args: Any) -> tuple[Any, dict]:
  """``jax.jit(fn)`` lowered and compiled for ``args``: the executable and its timings and costs."""
  start = time.perf_counter()
  lowered = jax.jit(fn).lower(*args)
  traced = time.perf_counter()
  compiled = lowered.compile()
  done = time.perf_counter()
  memory = compiled.memory_analysis()
  info = {"trace_s": round(traced - start, 3), "compile_s": round(done - traced, 3),
          "xla_flops": float(compiled.cost_analysis().get("flops", 0.0))}
  if memory is not None:
    info["xla_memory_mib"] = {
        name: round(getattr(memory, f"{name}_size_in_bytes") / MIB, 1)
        for name in ("argument", "output", "temp", "generated_code")}
  return compiled, info


def memory_now() -> dict:
  """Peak RSS of this process so far (Linux: ru_maxrss in KiB) and the device's peak, in MiB."""
  record = {"peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
  stats = jax.local_devices()[0].memory_stats()
  if stats and "peak_bytes_in_use" in stats:
    record["device_peak_mib"] = round(stats["peak_bytes_in_use"] / MIB, 1)
  return record


def timed(run: Callable[[], jax.Array], repeats: int) -> tuple[jax.Array, dict]:
  """The last result of ``run`` (blocked on), the wall and process-CPU times of ``repeats`` calls."""
  times, cpus = [], []
  for _ in range(repeats):
    start, cpu = time.perf_counter(), time.process_time()
    out = jax.block_until_ready(run())
    times.append(time.perf_counter() - start)
    cpus.append(time.process_time() - cpu)
  return out, {"runs_s": [round(t, 3) for t in times], "best_s": round(min(times), 3),
               "median_s": round(statistics.median(times), 3),
               "cpu_median_s": round(statistics.median(cpus), 3)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--steps", type=int, default=50)
  parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
  parser.add_argument("--repeats", type=int, default=3, help="timed runs of the compiled sampler")
  parser.add_argument("--quick", action="store_true", help="the 'micro' model, 16x16 -> 64x64")
  parser.add_argument("--student", type=int, nargs="*", default=[1, 2, 4], metavar="N",
                      help="student step counts to time beside DDIM (none: skip)")
  parser.add_argument("--out", help="default: experiments/results/bench_sampling[_quick].json")
  args = parser.parse_args()
  load_before = os.getloadavg()

  cfg = model_config("micro" if args.quick else "paper")
  cfg.dtype = args.dtype
  model = make_model(cfg)
  lr_size, out_shape = (16, (64, 64)) if args.quick else (64, (256, 256))
  params = init_params(model, len(cfg.unet.channel_mults))
  lr = jax.random.uniform(jax.random.key(1), (args.batch, lr_size, lr_size, 3))
  rng = jax.random.key(2)
  run = Run(model, params)  # the paper's schedule, formulation (eps, image) and DDIM
  schedule = run.schedule
  t, t_next = samplers.timestep_pairs(samplers.timestep_sequence(schedule, args.steps))
  per_step = list(zip(np.asarray(samplers.noise_level_at(schedule, t)),
                      np.asarray(samplers.alpha_bar_at(schedule, t)),
                      np.asarray(samplers.alpha_bar_at(schedule, t_next))))
  # x_T as super_resolve draws it (image b's noise field from image_key(rng, b)), so that the
  # three methods compute the same image.
  x_T = jnp.concatenate([
      tiles.position_noise(jax.random.fold_in(inference.image_key(rng, b), 0),
                           jnp.zeros(2, jnp.int32), out_shape, 3) for b in range(args.batch)])
  print(f"XLA_FLAGS: {os.environ.get('XLA_FLAGS', '') or '(none)'}; neurop_jax sets none")
  print(f"{'quick (micro)' if args.quick else 'paper'} model, {args.dtype}, batch {args.batch}, "
        f"{lr_size}x{lr_size} -> {out_shape[0]}x{out_shape[1]}, {len(per_step)} DDIM steps, "
        f"{jax.local_devices()[0].device_kind}")

  def prior_fn(params, lr):
    return compute_prior(model, params, lr, out_shape)

  def ddim_update(params, prior, x, g, a_i, a_j):
    """One DDIM step (eta = 0) of ``x`` ``(B, H, W, 3)`` in the [-1, 1] scale at noise level g."""
    eps = model.apply(params, x, jnp.full((x.shape[0],), g), prior, method=model.denoise)
    x0, eps = split_prediction("eps", eps, x, a_i)
    return samplers.ddim_update(x0, eps, a_i, a_j, 0.0, jnp.zeros_like(x))

  def full_step(params, lr, x, g, a_i, a_j):
    return ddim_update(params, prior_fn(params, lr), x, g, a_i, a_j)

  def to_unit(x):
    """A final [-1, 1] state -> the [0, 1] image, as super_resolve returns it."""
    return jnp.clip((x + 1) / 2, 0, 1)

  def loop(step: Callable, first: tuple, name: str) -> jax.Array:
    x = x_T
    for g, a_i, a_j in tqdm(per_step, desc=name, leave=False):
      x = step(*first, x, g, a_i, a_j)
    return to_unit(x)

  results, images = {}, {}
  sample_fn = lambda params, lr, rng: inference.super_resolve(
      run, lr, out_shape=out_shape, rng=rng, sampler="ddim", steps=args.steps, skip="uniform",
      eta=0.0, params=params)
  compiled, info = compile_timed(sample_fn, params, lr, rng)
  _, first = timed(lambda: compiled(params, lr, rng), 1)
  images["compiled"], timing = timed(lambda: compiled(params, lr, rng), args.repeats)
  results["compiled"] = {**info, "first_run_s": first["best_s"], **timing, **memory_now()}

  prior_c, prior_info = compile_timed(prior_fn, params, lr)
  prior = prior_c(params, lr)
  step_c, step_info = compile_timed(ddim_update, params, prior, x_T, *per_step[0])
  full_c, full_info = compile_timed(full_step, params, lr, x_T, *per_step[0])

  jax.block_until_ready(full_c(params, lr, x_T, *per_step[0]))
  images["loop_prior_every_step"], timing = timed(
      lambda: loop(full_c, (params, lr), "prior every step"), 1)
  results["loop_prior_every_step"] = {
      "trace_s": full_info["trace_s"], "compile_s": full_info["compile_s"],
      "xla_flops": len(per_step) * full_info["xla_flops"],
      "xla_flops_per_step": full_info["xla_flops"],
      "xla_memory_mib": full_info.get("xla_memory_mib"), **timing, **memory_now()}

  jax.block_until_ready(step_c(params, prior, x_T, *per_step[0]))
  images["loop_prior_once"], timing = timed(
      lambda: loop(step_c, (params, prior_c(params, lr)), "prior once"), 1)
  results["loop_prior_once"] = {
      "trace_s": round(prior_info["trace_s"] + step_info["trace_s"], 3),
      "compile_s": round(prior_info["compile_s"] + step_info["compile_s"], 3),
      "xla_flops": prior_info["xla_flops"] + len(per_step) * step_info["xla_flops"],
      "xla_flops_prior": prior_info["xla_flops"], "xla_flops_per_step": step_info["xla_flops"],
      "xla_memory_mib": step_info.get("xla_memory_mib"), **timing, **memory_now()}

  student_params = {"params": {**params["params"], "student": params["params"]["unet"]}}
  student_run = Run(model, student_params, student_step=0)
  for n in args.student:
    student_fn = lambda params, lr, rng, n=n: inference.super_resolve(
        student_run, lr, out_shape=out_shape, rng=rng, sampler="student", steps=n, params=params)
    compiled_n, info = compile_timed(student_fn, student_params, lr, rng)
    _, first = timed(lambda: compiled_n(student_params, lr, rng), 1)
    _, timing = timed(lambda: compiled_n(student_params, lr, rng), args.repeats)
    # The scan over the student's steps is counted once by XLA, as the compiled sampler's.
    info["xla_flops_reported"] = info["xla_flops"]
    info["xla_flops"] = prior_info["xla_flops"] + n * (info["xla_flops"] - prior_info["xla_flops"])
    results[f"student_{n}"] = {**info, "first_run_s": first["best_s"], **timing, **memory_now(),
                               "network_evaluations": n, "steps": n}

  compiled_row = results["compiled"]
  cross_check = results["loop_prior_once"]["xla_flops"]
  counted_once = compiled_row["xla_flops"] < 0.5 * cross_check
  compiled_row["xla_flops_reported"] = compiled_row["xla_flops"]
  compiled_row["scan_body_counted_once"] = counted_once
  if counted_once:
    compiled_row["xla_flops"] = prior_info["xla_flops"] + len(per_step) * (
        compiled_row["xla_flops_reported"] - prior_info["xla_flops"])
  compiled_row["xla_flops_vs_cross_check"] = round(compiled_row["xla_flops"] / cross_check, 4)

  reference = results["compiled"]["median_s"]
  for name, row in results.items():
    row["s_per_image"] = round(row["median_s"] / args.batch, 3)
    row["steps_per_s"] = round(row.get("steps", len(per_step)) / row["median_s"], 3)
    row["gflop_per_s"] = round(row["xla_flops"] / row["median_s"] / 1e9, 2)
    row["ratio_to_compiled"] = round(row["median_s"] / reference, 3)
    print(f"{name:22s} {row['median_s']:8.2f} s (best {row['best_s']:.2f}, "
          f"{row['s_per_image']:.2f} s/image) {row['steps_per_s']:6.2f} steps/s "
          f"{row['gflop_per_s']:8.1f} GFLOP/s x{row['ratio_to_compiled']:.2f}  "
          f"compile {row['compile_s']:.1f} s (trace {row['trace_s']:.1f} s)  "
          f"peak RSS {row['peak_rss_mib']:.0f} MiB")

  out_path = Path(args.out or Path(__file__).parent / "results" /
                  f"bench_sampling{'_quick' if args.quick else ''}.json")
  previous = json.loads(out_path.read_text()) if out_path.exists() else None
  comparisons = {}
  if previous and (previous["model"], previous["batch"], previous["dtype"], previous["steps"]) == (
      "micro" if args.quick else "paper", args.batch, args.dtype, len(per_step)):
    comparisons["previous_json_median_s"] = previous["results"]["compiled"]["median_s"]
    comparisons["ratio_to_previous_json"] = round(
        compiled_row["median_s"] / comparisons["previous_json_median_s"], 3)
  if not args.quick and (args.batch, args.dtype, len(per_step)) == (1, "float32", 50):
    comparisons["reference"] = REFERENCE
    comparisons["ratio_to_original"] = round(compiled_row["median_s"] / REFERENCE["original_s"], 3)
    comparisons["ratio_to_jax_before"] = round(
        compiled_row["median_s"] / REFERENCE["jax_before_s"], 3)
    comparisons["meets_target"] = compiled_row["median_s"] <= REFERENCE["target_s"]
    if "student_1" in results:
      comparisons["student_1_target_s"] = STUDENT_TARGET_S
      comparisons["student_1_meets_target"] = (
          results["student_1"]["median_s"] <= STUDENT_TARGET_S)
  print("compiled sampler: " + ", ".join(f"{k} {v}" for k, v in comparisons.items()))

  max_diff = lambda a, b: float(jnp.max(jnp.abs(images[a] - images[b])))
  agreement = {"compiled_vs_loop_prior_once": max_diff("compiled", "loop_prior_once"),
               "loop_prior_every_step_vs_loop_prior_once":
                   max_diff("loop_prior_every_step", "loop_prior_once")}
  print("max |diff| of the images in [0, 1]: " +
        ", ".join(f"{k} {v:.2e}" for k, v in agreement.items()))
  record = {
      "model": "micro" if args.quick else "paper", "dtype": args.dtype, "batch": args.batch,
      "lr_shape": [args.batch, lr_size, lr_size, 3], "out_shape": list(out_shape),
      "sampler": "ddim", "eta": 0.0, "steps": len(per_step), "repeats": args.repeats,
      "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                  "device": jax.local_devices()[0].device_kind, "backend": jax.default_backend(),
                  "jax": jax.__version__, "xla_flags": os.environ.get("XLA_FLAGS", ""),
                  "xla_flags_set_by_neurop_jax": "none",
                  "load_avg_1_5_15_before": list(load_before),
                  "load_avg_1_5_15_after": list(os.getloadavg())},
      "note": ("median_s: the median of the timed runs, after a first run kept out of it (the "
               "compiled sampler's first_run_s) or a warm-up call of the loop's step (the loops "
               "run once); s_per_image = median_s / batch; steps_per_s = DDIM steps of the "
               "batch per second; ratio_to_compiled = median_s / the compiled sampler's. "
               "xla_flops: XLA cost analysis per program; the compiled sampler's scan body is "
               "counted once by XLA, corrected to prior + steps x (reported - prior) when "
               "scan_body_counted_once; the cross-check is loop_prior_once's prior + steps x one "
               "step. student_N: the distilled-student sampler at N trailing DDIM steps (random "
               "weights: timing only); its ratio_to_compiled is its time over DDIM's at --steps "
               "in this run. peak_rss_mib is cumulative over the methods run so far (in this order)."),
      "max_abs_diff": agreement,
      "comparisons": comparisons,
      "results": results,
  }
  write_record(record, out_path)


if __name__ == "__main__":
  main()
