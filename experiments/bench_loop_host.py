"""Host work of the training loop: its seconds per step beyond the compiled step's own.

  python experiments/bench_loop_host.py [--steps 200] [--log_every 25]

The micro model (``configs/quickstart.py:test``, stage 1 on the bundled sample images, batch 2 of
8x8 patches), where the step's compute is small, so what the loop adds shows:

- ``loop``: ``train_and_evaluate`` for ``--steps`` steps, one per call, a train record every
  ``--log_every`` steps and one validation and checkpoint at the end. Its per-step time is the
  median over the records (after the first, which holds the compilation) of 1 / ``steps_per_s``,
  which the loop measures without the time spent validating and checkpointing.
- ``step``: the same compiled step (``_operator_stage``'s step through ``compile_steps``) called
  ``--steps`` times back to back on one batch already on the device, dispatched as the loop
  dispatches them (blocked once, at the end): the mean.

``host_ms_per_step`` = loop - step: reading and batching the input, copying it to the device,
the metrics and the progress bar. The target (issue 22) is 2 ms. Wall and process-CPU times are
both reported: other jobs may share the machine. Writes experiments/results/bench_loop_host.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from neurop_jax.data import build_sources
from neurop_jax.models import make_model
from neurop_jax.training import loop
from neurop_jax.training.state import create_train_state
from neurop_jax.training.steps import compile_steps, data_mesh, replicated
from record import write_record

ROOT = Path(__file__).resolve().parents[1]


def quickstart_test_config(steps: int, log_every: int):
  sys.path.insert(0, str(ROOT / "configs"))
  import quickstart  # noqa: E402  (the config file, as --config configs/quickstart.py:test)
  config = quickstart.get_config("operator,test")
  config.operator.update(num_steps=steps, log_every=log_every, eval_every=steps,
                         checkpoint_every=steps, steps_per_call=1)
  return config


def loop_seconds_per_step(config) -> tuple[float, list[float]]:
  with tempfile.TemporaryDirectory() as workdir:
    loop.train_and_evaluate(config, workdir)
    lines = (Path(workdir) / "operator" / "metrics.jsonl").read_text().splitlines()
  rates = [r["steps_per_s"] for r in map(json.loads, lines) if r["kind"] == "train"]
  per_step = [1 / r for r in rates[1:]]
  return statistics.median(per_step), per_step


def step_seconds(config, steps: int) -> tuple[float, float]:
  """Mean wall and CPU seconds of the compiled stage-1 step alone, on one device batch."""
  mesh = data_mesh()
  model = make_model(config.model)
  sources = build_sources(config.data, channels=config.model.channels)
  stage = loop._operator_stage(config, model, sources, mesh)
  state = jax.jit(lambda rng: create_train_state(stage.init_params(rng), stage.tx),
                  out_shardings=replicated(mesh))(jax.random.key(0))
  batch = stage.device_batch([next(stage.iterator)])
  run = compile_steps(stage.step, mesh)
  rng, count = jax.random.key(1), jax.device_put(np.int32(1), replicated(mesh))
  state, _ = jax.block_until_ready(run(state, batch, rng, count))
  wall, cpu = time.perf_counter(), time.process_time()
  for _ in range(steps):
    state, _ = run(state, batch, rng, count)
  jax.block_until_ready(state)
  return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=200)
  parser.add_argument("--log_every", type=int, default=25)
  parser.add_argument("--out", default=str(ROOT / "experiments" / "results" /
                                           "bench_loop_host.json"))
  args = parser.parse_args()
  config = quickstart_test_config(args.steps, args.log_every)
  load_before = os.getloadavg()
  loop_s, intervals = loop_seconds_per_step(config)
  step_s, step_cpu_s = step_seconds(config, args.steps)
  host_ms = 1e3 * (loop_s - step_s)
  print(f"loop {1e3 * loop_s:.2f} ms/step, step alone {1e3 * step_s:.2f} ms "
        f"(CPU {1e3 * step_cpu_s:.2f} ms): the loop adds {host_ms:.2f} ms per step (target 2)")
  write_record({
      "model": "micro", "stage": "operator", "batch": config.data.operator_batch_size,
      "patch": config.data.patch_size, "steps": args.steps, "log_every": args.log_every,
      "loop_ms_per_step": round(1e3 * loop_s, 3),
      "loop_ms_per_step_by_record": [round(1e3 * s, 3) for s in intervals],
      "step_ms": round(1e3 * step_s, 3), "step_cpu_ms": round(1e3 * step_cpu_s, 3),
      "host_ms_per_step": round(host_ms, 3), "target_ms": 2.0,
      "machine": {"cpus": os.cpu_count(), "backend": jax.default_backend(),
                  "load_avg_before": load_before, "load_avg_after": os.getloadavg()},
  }, args.out)


if __name__ == "__main__":
  main()
