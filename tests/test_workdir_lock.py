"""``io.workdir_lock``: a second training of a workdir is refused with one line naming the holder;
a lock left by a process that was killed is taken over with a warning; a clean end removes it.
Two real processes: a holder, and the training command."""

from __future__ import annotations

import logging
import os
import pathlib
import signal
import socket
import subprocess
import sys

import pytest

from neurop_jax.io.workdir_lock import LOCK_NAME, WorkdirLockedError, workdir_lock

ROOT = pathlib.Path(__file__).resolve().parent.parent
HOLD = ("import sys, time\n"
        "from neurop_jax.io.workdir_lock import workdir_lock\n"
        "with workdir_lock(sys.argv[1]):\n"
        "  print('held', flush=True)\n"
        "  time.sleep(600)\n")


@pytest.fixture
def holder(tmp_path):
  """A process that holds ``tmp_path/run``'s lock: ``(workdir, process)``; killed at the end."""
  workdir = tmp_path / "run"
  workdir.mkdir()
  process = subprocess.Popen([sys.executable, "-c", HOLD, str(workdir)], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
  assert process.stdout.readline().strip() == "held"
  yield workdir, process
  process.kill()
  process.wait()


@pytest.mark.slow  # the training command in a process of its own
def test_a_second_training_is_refused_naming_the_holder(holder):
  workdir, process = holder
  result = subprocess.run(
      [sys.executable, "-m", "neurop_jax.main", "--config", "configs/quickstart.py:test",
       "--workdir", str(workdir)], cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"),
      capture_output=True, text=True, timeout=300)
  assert result.returncode == 1, result.stderr[-3000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith(f"error: workdir {workdir} is in use by another training (host "
                         f"{socket.gethostname()}, pid {process.pid}, started "), last
  assert sorted(p.name for p in workdir.iterdir()) == [LOCK_NAME]  # nothing written beside it


def test_a_lock_left_by_a_killed_process_is_taken_over_with_a_warning(holder, caplog):
  workdir, process = holder
  with pytest.raises(WorkdirLockedError, match=f"pid {process.pid}"):
    with workdir_lock(workdir):
      pass
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert (workdir / LOCK_NAME).exists()  # kill -9 leaves the file, and frees its flock
  with caplog.at_level(logging.WARNING):
    with workdir_lock(workdir) as record:
      assert record["pid"] == os.getpid()
  assert any("taking over the lock" in r.getMessage() and f"pid {process.pid}" in r.getMessage()
             for r in caplog.records), [r.getMessage() for r in caplog.records]
  assert not (workdir / LOCK_NAME).exists()  # a clean end removes it
