"""The notebooks of experiments/notebooks run headless, top to bottom, on their FAST settings."""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import ROOT

NOTEBOOKS = ROOT.parent / "experiments" / "notebooks"
NAMES = ("quickstart", "training")
CELL_TIMEOUT_S = 240


def run_notebook(name: str) -> nbformat.NotebookNode:
  """Executes ``<name>.ipynb`` in a fresh kernel from its folder; raises on any cell's error."""
  nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
  client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                          resources={"metadata": {"path": str(NOTEBOOKS)}})
  return client.execute()


@pytest.mark.parametrize("name", NAMES)
def test_committed_without_outputs(name):
  nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
  nbformat.validate(nb)
  for cell in nb.cells:
    if cell.cell_type == "code":
      assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


def _figures(nb: nbformat.NotebookNode) -> int:
  return sum("image/png" in out.get("data", {}) for cell in nb.cells if cell.cell_type == "code"
             for out in cell.outputs)


def test_quickstart_runs(trained_workdir, monkeypatch):
  monkeypatch.setenv("NEUROP_JAX_FAST", "1")
  monkeypatch.setenv("NEUROP_JAX_WORKDIR", str(trained_workdir))
  assert _figures(run_notebook("quickstart")) == 1


@pytest.mark.slow  # trains, in a kernel of its own
def test_training_runs(monkeypatch):
  monkeypatch.setenv("NEUROP_JAX_FAST", "1")
  monkeypatch.delenv("NEUROP_JAX_WORKDIR", raising=False)
  assert _figures(run_notebook("training")) == 1
