"""The command line: a misspelt config field stops it with one line naming the field."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_config_typo_is_one_clear_line(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "neurop_jax.main", "--config", "configs/quickstart.py:test",
       "--config.operator.num_stepz=3", "--workdir", str(tmp_path / "run")],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode == 1
  assert "Traceback" not in result.stderr
  assert ("--config.operator.num_stepz: the config has no field 'num_stepz'. Did you mean "
          '"num_steps"') in result.stderr
  assert not (tmp_path / "run").exists()
