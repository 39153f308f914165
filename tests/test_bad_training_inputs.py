"""Bad data and settings for training: ``train_and_evaluate`` raises one ``InputError`` naming the
fix and leaves the workdir as it was (not created); through ``python -m neurop_jax.main`` that is
one line, exit status 1, no traceback."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import load_config
from neurop_jax.data import write_image
from neurop_jax.errors import InputError
from neurop_jax.training import loop as train

ROOT = pathlib.Path(__file__).resolve().parent.parent

CASES = {
    "empty folder": r"the train split of .* has no images .* --config.data.path",
    "missing folder": r"image folder .* does not exist .* --config.data.path",
    "zero batch": r"config.data.operator_batch_size is 0: set --config.data.operator_batch_size",
    "negative batch": r"config.data.diffusion_batch_size is -2: set",
    "indivisible batch": r"operator_batch_size=3 is not divisible by the 2 devices: set "
                         r"--config.data.operator_batch_size to a multiple of 2",
    "missing prior": r"prior_checkpoint .*absent does not exist: set "
                     r"--config.diffusion.prior_checkpoint",
}


def _main(workdir: pathlib.Path, *overrides: str, **env: str) -> subprocess.CompletedProcess:
  return subprocess.run(
      [sys.executable, "-m", "neurop_jax.main", "--config", "configs/quickstart.py:test",
       "--workdir", str(workdir), *overrides], cwd=ROOT,
      env=dict(os.environ, JAX_PLATFORMS="cpu", **env), capture_output=True, text=True,
      timeout=600)


def _images(folder: pathlib.Path, n: int) -> pathlib.Path:
  for split in ("train", "val"):
    for i in range(n):
      write_image(folder / split / "c" / f"{i}.png",
                  np.random.default_rng(i).random((48, 48, 3)))
  return folder


def _assert_one_error_line(result: subprocess.CompletedProcess) -> str:
  """The command failed as a bad input does; returns its last stderr line, ``error: ...``."""
  assert result.returncode == 1, result.stderr[-3000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: "), last
  return last


@pytest.mark.parametrize("case", CASES)
def test_bad_setting_raises_one_input_error_and_writes_nothing(case, tmp_path, monkeypatch):
  data = tmp_path / "data"
  config = load_config("quickstart", "test,diffusion" if case == "missing prior" else "test")
  config.data.update(source="folder", path=str(data))
  if case == "empty folder":
    (data / "train").mkdir(parents=True)
  elif case == "missing folder":
    config.data.path = str(tmp_path / "absent")
  else:
    _images(data, 2)
  if case == "zero batch":
    config.data.operator_batch_size = 0
  elif case == "negative batch":
    config.data.diffusion_batch_size = -2
  elif case == "indivisible batch":  # as on 2 devices (the command-line test below has them)
    config.data.operator_batch_size = 3
    monkeypatch.setattr(jax, "device_count", lambda: 2)
  elif case == "missing prior":
    config.diffusion.prior_checkpoint = str(tmp_path / "absent")
  workdir = tmp_path / "run"
  with pytest.raises(InputError, match=CASES[case]) as info:
    train.train_and_evaluate(config, workdir)
  assert "\n" not in str(info.value)
  assert not workdir.exists()


def test_bad_setting_on_the_command_line_is_one_line_and_writes_nothing(tmp_path):
  workdir = tmp_path / "run"
  result = _main(workdir, "--config.data.source=folder",
                 f"--config.data.path={_images(tmp_path / 'data', 2)}",
                 "--config.data.operator_batch_size=3",
                 XLA_FLAGS=" ".join([os.environ.get("XLA_FLAGS", ""),
                                     "--xla_force_host_platform_device_count=2"]).strip())
  last = _assert_one_error_line(result)
  assert re.search(CASES["indivisible batch"], last), last
  assert not workdir.exists()


@pytest.mark.slow  # trains until it meets the image, in a process of its own
def test_a_corrupt_image_names_the_skip_option(tmp_path):
  data = _images(tmp_path / "data", 3)
  (data / "train" / "c" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
  result = _main(tmp_path / "run", "--config.data.source=folder", f"--config.data.path={data}",
                 "--config.operator.num_steps=4")
  last = _assert_one_error_line(result)
  assert "1.png" in last and "--config.data.skip_bad_images=True" in last, last
