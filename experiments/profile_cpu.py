"""Where the CPU time of the training steps and the sampler goes, op by op (see profile_cpu.md).

  python experiments/profile_cpu.py [--work unet_train unet_forward sampler_prior operator_train]
      [--side 256]

Each program runs once under ``jax.profiler`` with XLA:CPU's per-thunk trace events
(``--xla_cpu_enable_xprof_traceme``, added to XLA_FLAGS here before JAX starts); the events are read
back with ``jax._src.lib._profile_data`` and summed by kind, each compiled op being classified from
the optimised HLO: convolutions (forward or input gradient / kernel gradient), matrix products
inside a convolution (``models.conv``'s 1x1 convolutions and kernel gradients) or outside (dense
layers, attention), concatenations, transposes, and the rest (normalisations, activations, adds,
optimizer). The seconds are the thunks' durations as the trace records them (a convolution that
XLA splits over threads counts once, for its duration); with other jobs on the machine they
include waiting, so compare the shares. Work: ``unet_train`` (forward + backward of the paper UNet, batch 2, the bulk
of the stage-2 step), ``unet_forward`` (batch 1: one step of the sampler), ``sampler_prior`` (the
operator's prior of a ``side / 4`` LR image at ``side``, batch 1: computed once per sampling),
``operator_train`` (the stage-1 step, batch 4 of 48x48). Writes experiments/results/profile_cpu.json.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import sys
import tempfile
import time
from pathlib import Path

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_cpu_enable_xprof_traceme=true").strip()

import jax  # noqa: E402  (after XLA_FLAGS)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax._src.lib import _profile_data  # noqa: E402

from neurop_jax.models import compute_prior, make_model, make_unet, model_config  # noqa: E402
from neurop_jax.models.coords import query_grid  # noqa: E402
from neurop_jax.training.config import base_config  # noqa: E402
from neurop_jax.training.state import create_train_state  # noqa: E402
from neurop_jax.training.steps import data_mesh, scan_steps  # noqa: E402
from record import write_record  # noqa: E402

INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (\S+) ([\w-]+)\((.*)$", re.M)


def _programs(work: str, side: int):
  """``(compiled, args)`` of one kind of work."""
  if work == "operator_train":
    sys.path.insert(0, str(Path(__file__).parent))
    import bench_train  # pylint: disable=import-outside-toplevel
    config = base_config("paper", "operator")
    model = make_model(config.model)
    mesh = data_mesh()
    params, tx, step, make_batch = bench_train.operator_setup(config, model, mesh, 4,
                                                              np.random.default_rng(0))
    state = create_train_state(params, tx)
    fn = jax.jit(lambda s, b, r: scan_steps(step, s, b, r))
    args = (state, make_batch(), jax.random.key(0))
    return fn.lower(*args).compile(), args
  if work == "sampler_prior":
    model = make_model(model_config("paper"))
    lr = jax.random.uniform(jax.random.key(1), (1, side // 4, side // 4, 3))
    coord, cell = query_grid(1, lr.shape[1:3])
    params = jax.jit(lambda: model.init(jax.random.key(0), lr, coord, cell, method=model.prior))()
    fn = jax.jit(lambda p, lr: compute_prior(model, p, lr, (side, side)))
    return fn.lower(params, lr).compile(), (params, lr)
  unet = make_unet(model_config("paper"))
  batch = 2 if work == "unet_train" else 1
  level = jnp.full((batch,), 0.5)
  params = jax.jit(lambda: unet.init(jax.random.key(0), jnp.zeros((1, 32, 32, 6)), level[:1]))()
  x = jax.random.normal(jax.random.key(1), (batch, side, side, 6))
  if work == "unet_train":
    loss = lambda p, x: jnp.mean(unet.apply(p, x, level, train=True,
                                            rngs={"dropout": jax.random.key(2)}) ** 2)
    fn = jax.jit(jax.grad(loss))
  else:
    fn = jax.jit(lambda p, x: unet.apply(p, x, level))
  return fn.lower(params, x).compile(), (params, x)


def _kind(name: str, hlo: str, instructions: dict) -> str:
  """What one compiled op does, from its optimised HLO."""
  if name not in instructions:
    return "runtime (while, call, ...)"
  shape, opcode, rest = instructions[name]
  body = ""
  called = re.search(r"calls=%([\w.\-]+)", rest)
  if called:
    found = re.search(r"%" + re.escape(called.group(1)) + r" .*?\{(.*?)\n\}", hlo, re.S)
    body = found.group(1) if found else ""
  dims = [int(d) for d in re.findall(r"\[([\d,]*)\]", shape)[0].split(",") if d] if "[" in shape \
      else []
  if opcode == "convolution" or "convolution(" in body:
    kernel_shaped = len(dims) == 4 and dims[1] == dims[2] and dims[1] <= 3 and dims[0] > 4
    return "convolution: kernel gradient" if kernel_shaped else "convolution: forward / input grad"
  if opcode == "dot" or "dot(" in body:
    op_name = re.search(r'op_name="([^"]*)"', rest)
    in_conv = op_name is not None and "conv" in op_name.group(1).rsplit("/", 3)[0]
    return ("matrix product: convolution (1x1, kernel gradient)" if in_conv else
            "matrix product: dense layers, attention")
  if "concatenate" in name:
    return "concatenations (skip connections, kernel-gradient operands)"
  if "transpose" in name:
    return "transposes"
  return "elementwise, reductions, optimizer"


def profile(work: str, side: int) -> dict:
  compiled, args = _programs(work, side)
  hlo = compiled.as_text()
  instructions = {m.group(1): m.group(2, 3, 4) for m in INSTRUCTION.finditer(hlo)}
  jax.block_until_ready(compiled(*args))
  wall, cpu = time.perf_counter(), time.process_time()
  jax.block_until_ready(compiled(*args))
  timing = {"wall_s": round(time.perf_counter() - wall, 3),
            "cpu_s": round(time.process_time() - cpu, 3)}
  with tempfile.TemporaryDirectory() as folder:
    with jax.profiler.trace(folder):
      jax.block_until_ready(compiled(*args))
    trace = _profile_data.ProfileData.from_file(
        glob.glob(f"{folder}/**/*.xplane.pb", recursive=True)[0])
  kinds, ops = collections.Counter(), collections.Counter()
  for plane in trace.planes:
    for line in plane.lines:
      if not line.name.startswith("tf_XLAEigen"):
        continue
      for event in line.events:
        if event.name.startswith(("ThunkExecutor", "SlinkyThreadPool", "Threadpool")):
          continue
        kinds[_kind(event.name, hlo, instructions)] += event.duration_ns / 1e9
        ops[event.name] += event.duration_ns / 1e9
  total = sum(kinds.values())
  print(f"{work} ({side}x{side}): wall {timing['wall_s']} s, CPU {timing['cpu_s']} s, "
        f"thunks {total:.2f} s")
  for kind, seconds in kinds.most_common():
    print(f"  {seconds:8.3f} s {100 * seconds / total:5.1f}%  {kind}")
  top = [{"op": op, "s": round(s, 4), "shape": instructions.get(op, ("?",))[0]}
         for op, s in ops.most_common(15)]
  return {"work": work, "side": side, **timing, "thunk_s": round(total, 3),
          "by_kind_s": {k: round(v, 3) for k, v in kinds.most_common()}, "top_ops": top}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  work = ["unet_train", "unet_forward", "sampler_prior", "operator_train"]
  parser.add_argument("--work", nargs="+", default=work, choices=work)
  parser.add_argument("--side", type=int, default=256, help="image side of the UNet work")
  parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "profile_cpu.json"))
  args = parser.parse_args()
  load = os.getloadavg()
  results = [profile(work, args.side) for work in args.work]
  write_record({"jax": jax.__version__, "cpus": os.cpu_count(),
                "xla_flags": os.environ["XLA_FLAGS"], "load_average_before": load,
                "load_average_after": os.getloadavg(), "results": results}, args.out)


if __name__ == "__main__":
  main()
