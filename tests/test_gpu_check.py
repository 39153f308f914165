"""``experiments/gpu_check.sh --smoke``: the first-GPU-run script end to end on the CPU, every size
shrunk, its records and summary written (the stage-2 curve, its longest step, left out with
CURVE=0: ``gpu_stage2_curve.sh`` documents its own smoke run)."""

import json
import os
import pathlib
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.slow  # four benchmark processes and a pytest run: about 3 minutes
def test_smoke_run_writes_the_records_and_the_summary(tmp_path):
  out = tmp_path / "gpu"
  env = dict(os.environ, OUT=str(out), CURVE="0", JAX_PLATFORMS="cpu",
             PATH=f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
  result = subprocess.run(["bash", "experiments/gpu_check.sh", "--smoke"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200)
  assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
  assert "gpu_check: done" in result.stdout
  suite = ET.parse(out / "tests.xml").getroot().find("testsuite")
  assert int(suite.get("tests")) >= 2 and suite.get("failures") == suite.get("errors") == "0"
  summary = json.loads((out / "summary.json").read_text())
  whats = [row["what"] for row in summary["rows"]]
  assert [w.split(":")[0] for w in whats].count("training") == 2
  assert any(w.startswith("sampling: micro") for w in whats)
  assert all(row.get("images_per_s", 1) > 0 for row in summary["rows"])
  (ratio,) = [row["input_to_step_ratio"] for row in summary["rows"] if "input_to_step_ratio" in row]
  assert ratio > 0
  assert summary["peak_tflops"] is None  # a CPU: no share of a peak is claimed


def test_a_bad_argument_is_one_line():
  result = subprocess.run(["bash", "experiments/gpu_check.sh", "--fast"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
  assert result.returncode == 1
  assert result.stderr.strip() == "usage: bash experiments/gpu_check.sh [--smoke]"
