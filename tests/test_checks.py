"""``training.checks``: every mistake in a config or its data is one ``InputError`` naming the field,
raised by ``train_and_evaluate`` before the first step and before the workdir is created (the
config file itself: ``cli.main.check_config_file``)."""

from __future__ import annotations

import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from conftest import load_config
from neurop_jax.cli.main import check_config_file
from neurop_jax.data import write_image
from neurop_jax.errors import InputError
from neurop_jax.training import loop as train

ROOT = pathlib.Path(__file__).resolve().parent.parent

CASES = {
    # name: (field, value, what the one line says)
    "negative operator steps": ("operator.num_steps", -5, r"config.operator.num_steps is -5: it "
                                r"must be an integer >= 0; set --config.operator.num_steps"),
    "negative diffusion steps": ("diffusion.num_steps", -3, r"config.diffusion.num_steps is -3: "
                                 r"it must be an integer >= 1"),
    "negative learning rate": ("operator.learning_rate", -1.0, r"config.operator.learning_rate is "
                               r"-1.0: it must be a finite number in \(0, inf\]"),
    "nan learning rate": ("operator.learning_rate", math.nan, r"config.operator.learning_rate is "
                          r"nan: it must be a finite number"),
    "nan diffusion rates": ("diffusion.learning_rates", (2e-4, math.nan),
                            r"config.diffusion.learning_rates is nan"),
    "zero patch": ("data.patch_size", 0, r"config.data.patch_size is 0: it must be an integer >= 1"),
    "zero steps per call": ("diffusion.steps_per_call", 0, r"config.diffusion.steps_per_call is 0"),
    "zero channels": ("model.channels", 0, r"config.model.channels is 0: it must be an integer >= 1"),
    "misspelt sampler": ("diffusion.val_sampler", "euler", r"config.diffusion.val_sampler.*unknown "
                         r"sampler 'euler'"),
    "too many val steps": ("diffusion.val_steps", 5000, r"config.diffusion.val_steps is 5000: it "
                           r"must be an integer >= 1 and <= 2000"),
    "strength out of range": ("diffusion.val_strength", 1.5, r"strength must be a number in"),
    "unknown source": ("data.source", "folders", r"config.data.source is 'folders': choose one of "
                       r"'sample', 'folder', 'tfds'"),
    "unknown split": ("data.split", "random", r"config.data.split is 'random': choose one of"),
    "unknown decay": ("operator.decay", "linear", r"config.operator.decay is 'linear'"),
    "ema of one": ("diffusion.ema_decay", 1.0, r"config.diffusion.ema_decay is 1.0: it must be a "
                   r"finite number in \[0, 1\)"),
    "fractions over one": ("data.val_fraction", 0.5, r"train_fraction \+ val_fraction must be at "
                           r"most 1"),
    "unknown best metric": ("diffusion.best_metric", "lpip", r"config.diffusion.best_metric is "
                            r"'lpip': choose one of"),
    "inverted betas": ("diffusion.beta_start", 0.5, r"config.diffusion.beta_start is 0.5: it must "
                       r"be below config.diffusion.beta_end"),
    "negative seed": ("seed", -1, r"config.seed is -1"),
}


def _set(config, field: str, value) -> None:
  *parents, name = field.split(".")
  node = config
  for part in parents:
    node = node[part]
  node[name] = value


def _images(folder: pathlib.Path, splits=("train", "val"), side: int = 48) -> pathlib.Path:
  for split in splits:
    for i in range(2):
      write_image(folder / split / "c" / f"{i}.png",
                  np.random.default_rng(i).random((side, side, 3)))
  return folder


@pytest.mark.parametrize("case", CASES)
def test_a_bad_value_names_its_field_before_anything_is_written(case, tmp_path):
  field, value, match = CASES[case]
  config = load_config("quickstart", "test")
  _set(config, field, value)
  workdir = tmp_path / "run"
  with pytest.raises(InputError, match=match) as info:
    train.train_and_evaluate(config, workdir)
  assert "\n" not in str(info.value)
  assert not workdir.exists()


def test_the_quickstart_and_paper_configs_pass():
  """The shipped configs pass (the paper's with the data folder their users give)."""
  from neurop_jax.training.checks import check_config
  for name, arg in (("quickstart", None), ("quickstart", "test"), ("ucm", None), ("aid", None),
                    ("rsscn7", "diffusion")):
    config = load_config(name, arg)
    if config.data.source == "folder":
      config.data.path = "/data/images"
    check_config(config)


def test_an_image_smaller_than_the_patch_is_named_before_training(tmp_path):
  data = _images(tmp_path / "data")
  write_image(data / "train" / "c" / "small.png", np.zeros((20, 12, 3)))
  config = load_config("quickstart", "test")
  config.data.update(source="folder", path=str(data), patch_size=16)
  with pytest.raises(InputError, match=r"training image train/c/small.png is 20x12 pixels, "
                                       r"smaller than config.data.patch_size=16: .*at most 12"):
    train.train_and_evaluate(config, tmp_path / "run")
  assert not (tmp_path / "run").exists()


def test_a_folder_with_train_only_names_the_split(tmp_path):
  config = load_config("quickstart", "test")
  config.data.update(source="folder", path=str(_images(tmp_path / "data", ("train",))),
                     split="folders")
  with pytest.raises(InputError, match=r"config.data.split 'folders': split 'folders' needs train/ "
                                       r"and val/ or test/ .*--config.data.split"):
    train.train_and_evaluate(config, tmp_path / "run")
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_a_workdir_that_cannot_be_a_folder_is_refused(where, tmp_path):
  (tmp_path / "file").write_text("x")
  workdir = tmp_path / "file" if where == "a file" else tmp_path / "file" / "run"
  with pytest.raises(InputError, match=r"--workdir .*(is a file: give a folder|cannot be created)"):
    train.train_and_evaluate(load_config("quickstart", "test"), workdir)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in a read-only folder")
def test_a_read_only_workdir_is_refused(tmp_path):
  tmp_path.chmod(0o500)
  try:
    with pytest.raises(InputError, match=r"--workdir .*: no permission to write"):
      train.train_and_evaluate(load_config("quickstart", "test"), tmp_path / "run")
  finally:
    tmp_path.chmod(0o700)


CONFIG_FILES = {
    "absent": (None, r"--config .*absent.py: no such file"),
    "broken": ("def get_config(:\n", r"--config .*broken.py, line 1: invalid syntax; fix"),
    "no get_config": ("X = 1\n", r"--config .*no get_config.py defines no get_config\(\)"),
    "refusing suffix": ("def get_config(arg=None):\n  raise ValueError(f'unknown {arg!r}')\n",
                        r"--config .*refusing suffix.py:bogus: unknown 'bogus'"),
}


@pytest.mark.parametrize("case", CONFIG_FILES)
def test_a_config_file_that_cannot_be_read_is_one_line(case, tmp_path):
  text, match = CONFIG_FILES[case]
  path = tmp_path / f"{case}.py"
  if text is not None:
    path.write_text(text)
  with pytest.raises(SystemExit, match=r"^error: " + match) as info:
    check_config_file(f"{path}:bogus" if case == "refusing suffix" else str(path))
  assert "\n" not in str(info.value.code)


@pytest.mark.slow  # two processes of the command line
def test_through_the_command_line_a_mistake_is_one_line_and_writes_nothing(tmp_path):
  """The command's contract for config values and config files: exit status 1, one line, no
  traceback, no workdir."""
  (tmp_path / "broken.py").write_text("def get_config(:\n")
  for config, match in ((["configs/quickstart.py:test", "--config.operator.num_steps=-5"],
                         "config.operator.num_steps is -5"),
                        ([str(tmp_path / "broken.py")], "broken.py, line 1")):
    result = subprocess.run(
        [sys.executable, "-m", "neurop_jax.main", "--workdir", str(tmp_path / "run"), "--config",
         *config], cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True,
        text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and match in last, last
    assert not (tmp_path / "run").exists()
