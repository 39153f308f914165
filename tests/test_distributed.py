"""Multi-process data parallelism: two processes on this machine (CPU devices, gloo collectives).

``configs/quickstart.py:test`` (micro model, 2 steps per stage, global batch 2) is trained by one
process, and again by one process, then two of one device each on localhost (through
``config.distributed``, as on several hosts), then one: each run resumes the checkpoint the other
number of processes wrote. Both stages must end with the parameters of the one-process run.
"""

import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from neurop_jax.io import checkpoints

ROOT = pathlib.Path(__file__).resolve().parent.parent
BASE = ("-m", "neurop_jax.main", "--config", "configs/quickstart.py:test")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _start(workdir: pathlib.Path, processes: int, *overrides: str) -> list[subprocess.Popen]:
  """One run of ``processes`` processes, started."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  command = [sys.executable, *BASE, "--workdir", str(workdir), *overrides]
  if processes > 1:
    port = _free_port()
    commands = [command + ["--config.distributed=True",
                           f"--config.coordinator_address=localhost:{port}",
                           f"--config.num_processes={processes}", f"--config.process_id={i}"]
                for i in range(processes)]
  else:
    commands = [command]
  return [subprocess.Popen(c, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True) for c in commands]


def _wait(runs: list[subprocess.Popen]) -> None:
  """Waits for all processes of a run; fails with their stderr."""
  errors = [run.communicate(timeout=900)[1] for run in runs]
  for run, err in zip(runs, errors):
    assert run.returncode == 0, err[-4000:]


def _final(workdir: pathlib.Path, stage: str) -> dict:
  manager = checkpoints.stage_manager(checkpoints.checkpoint_dir(workdir, stage), read_only=True)
  return checkpoints._restore_items(manager, 2, ("state",))["state"]


def _assert_same_training(a: np.ndarray, b: np.ndarray) -> None:
  """Equal to float32 rounding, but for Adam's amplification of it: Adam's first steps move a
  weight by about the learning rate (at most 4e-4 here) times the sign of its gradient, so where a
  gradient is within rounding of 0 the step differs by up to twice that. Other weights agree to
  1e-5 (relative)."""
  assert np.mean(np.isclose(a, b, rtol=1e-5, atol=1e-7)) > 0.999
  np.testing.assert_allclose(a, b, rtol=0, atol=2 * 2 * 4e-4)


@pytest.mark.slow  # four training runs in subprocesses, the reference beside the others
def test_two_processes_equal_one_and_resume_either_way(tmp_path):
  """Steps 1 (one process), 2-3 (two: stage 1 ends, stage 2 starts) and 4 (one again)."""
  reference = _start(tmp_path / "one", 1)
  for processes, stop in ((1, 1), (2, 2), (1, 0)):
    _wait(_start(tmp_path / "mixed", processes, f"--config.max_steps_per_run={stop}"))
  _wait(reference)
  for stage in ("operator", "diffusion"):
    jax.tree.map(_assert_same_training, _final(tmp_path / "mixed", stage),
                 _final(tmp_path / "one", stage))
