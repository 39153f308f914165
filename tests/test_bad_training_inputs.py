"""Bad data and settings for training through ``python -m neurop_jax.main``: one line naming the
fix, exit status 1, no traceback, and the workdir as it was (not created)."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from neurop_jax.data import write_image

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _main(workdir: pathlib.Path, *overrides: str, config: str = "configs/quickstart.py:test",
          **env: str):
  return subprocess.run(
      [sys.executable, "-m", "neurop_jax.main", "--config", config, "--workdir", str(workdir),
       *overrides], cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu", **env),
      capture_output=True, text=True, timeout=600)


def _images(folder: pathlib.Path, n: int) -> pathlib.Path:
  for split in ("train", "val"):
    for i in range(n):
      write_image(folder / split / "c" / f"{i}.png",
                  np.random.default_rng(i).random((48, 48, 3)))
  return folder


@pytest.mark.parametrize("case,message", [
    ("empty folder", r"the train split of .* has no images .* --config.data.path"),
    ("missing folder", r"image folder .* does not exist .* --config.data.path"),
    ("zero batch", r"config.data.operator_batch_size is 0: set --config.data.operator_batch_size"),
    ("negative batch", r"config.data.diffusion_batch_size is -2: set"),
    ("indivisible batch", r"operator_batch_size=3 is not divisible by the 2 devices: set "
                          r"--config.data.operator_batch_size to a multiple of 2"),
    ("missing prior", r"prior_checkpoint .*absent does not exist: set "
                      r"--config.diffusion.prior_checkpoint"),
])
def test_bad_setting_is_one_line_and_writes_nothing(case, message, tmp_path):
  workdir = tmp_path / "run"
  data = tmp_path / "data"
  overrides = ["--config.data.source=folder", f"--config.data.path={data}"]
  config, env = "configs/quickstart.py:test", {}
  if case == "empty folder":
    (data / "train").mkdir(parents=True)
  elif case == "missing folder":
    overrides[1] = f"--config.data.path={tmp_path / 'absent'}"
  else:
    _images(data, 2)
  if case == "zero batch":
    overrides.append("--config.data.operator_batch_size=0")
  elif case == "negative batch":
    overrides.append("--config.data.diffusion_batch_size=-2")
  elif case == "indivisible batch":
    overrides.append("--config.data.operator_batch_size=3")
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
  elif case == "missing prior":
    overrides.append(f"--config.diffusion.prior_checkpoint={tmp_path / 'absent'}")
    config += ",diffusion"
  result = _main(workdir, *overrides, config=config, **env)
  assert result.returncode == 1, result.stderr[-3000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  err = result.stderr.strip().splitlines()
  assert err[-1].startswith("error: ") and re.search(message, err[-1]), err
  assert not workdir.exists()


def test_a_corrupt_image_names_the_skip_option(tmp_path):
  data = _images(tmp_path / "data", 3)
  (data / "train" / "c" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
  result = _main(tmp_path / "run", "--config.data.source=folder", f"--config.data.path={data}",
                 "--config.operator.num_steps=4")
  assert result.returncode == 1, result.stderr[-3000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  last = result.stderr.strip().splitlines()[-1]
  assert "1.png" in last and "--config.data.skip_bad_images=True" in last, last
