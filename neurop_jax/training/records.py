"""Training records of a stage: metrics.jsonl, TensorBoard events and PNG sample grids.

Everything lands in ``<workdir>/<stage>/``: ``metrics.jsonl`` (one JSON object per line, with
``step``, ``kind`` 'train' or 'val', ``elapsed_s`` (wall) and ``cpu_s`` (this process's CPU time,
all threads, compilation included: what learning curves compare) since the stage started in this
process, and the values), ``tensorboard/`` (tensorboardX events, no TensorFlow) and
``samples/step_<step>.png``.
Only process 0 writes.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import jax
import numpy as np
from tensorboardX import SummaryWriter

from neurop_jax.data import write_image


class StageLogger:
  """Writes the records of one stage; resumed runs drop the lines past the restored step."""

  def __init__(self, stage_dir: str | os.PathLike, start_step: int):
    self.dir = Path(stage_dir)
    self.active = jax.process_index() == 0
    self.start, self.cpu_start = time.time(), time.process_time()
    self.writer = None
    if not self.active:
      return
    self.dir.mkdir(parents=True, exist_ok=True)
    self.jsonl = self.dir / "metrics.jsonl"
    if self.jsonl.exists():
      kept = [line for line in self.jsonl.read_text().splitlines()
              if line.strip() and json.loads(line)["step"] <= start_step]
      self.jsonl.write_text("".join(line + "\n" for line in kept))
    self.writer = SummaryWriter(str(self.dir / "tensorboard"))

  def scalars(self, step: int, kind: str, values: dict[str, float]) -> None:
    """One line of ``metrics.jsonl`` and a TensorBoard scalar ``<kind>/<name>`` per value."""
    if not self.active:
      return
    record = {"step": step, "kind": kind, "elapsed_s": round(time.time() - self.start, 2),
              "cpu_s": round(time.process_time() - self.cpu_start, 2),
              **{k: float(v) for k, v in values.items()}}
    with self.jsonl.open("a") as f:
      f.write(json.dumps(record) + "\n")
    for name, value in values.items():
      self.writer.add_scalar(f"{kind}/{name}", float(value), step)
    self.writer.flush()

  def image(self, step: int, grid: np.ndarray) -> Path | None:
    """Writes ``samples/step_<step>.png`` and a TensorBoard image; returns the PNG's path."""
    if not self.active:
      return None
    path = self.dir / "samples" / f"step_{step:08d}.png"
    write_image(path, grid)
    self.writer.add_image("samples", np.clip(grid, 0.0, 1.0), step, dataformats="HWC")
    self.writer.flush()
    return path

  def close(self) -> None:
    if self.writer is not None:
      self.writer.close()
