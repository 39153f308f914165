"""Training records of a stage: metrics.jsonl, TensorBoard events and PNG sample grids.

Everything lands in ``<workdir>/<stage>/``: ``metrics.jsonl`` (one JSON object per line, with
``step``, ``kind`` 'train' or 'val', ``elapsed_s`` since the stage started in this process and the
values), ``tensorboard/`` (tensorboardX events, no TensorFlow) and ``samples/step_<step>.png``.
Only process 0 writes. ``quiet_orbax`` keeps Orbax's per-file INFO lines off the console.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import jax
import numpy as np
from absl import logging as absl_logging
from tensorboardX import SummaryWriter

from neurop_jax.data import write_image


def _not_orbax_info(record: logging.LogRecord) -> bool:
  if f"{os.sep}orbax{os.sep}" not in record.pathname:
    return True
  return (record.levelno >= logging.WARNING
          and not record.getMessage().startswith("Given directory is read only"))


def quiet_orbax() -> None:
  """Drops Orbax's INFO records (several per checkpoint written) from absl logging.

  Orbax logs through absl's single logger, so this filters by source file; its warnings and
  every other module's records stay, except the notice that a checkpoint folder opened for
  reading is read only (we open it so on purpose).
  """
  absl_logger = absl_logging.get_absl_logger()
  if _not_orbax_info not in absl_logger.filters:
    absl_logger.addFilter(_not_orbax_info)


def image_grid(rows: list[list[np.ndarray]], gap: int = 2) -> np.ndarray:
  """Tiles ``rows`` of ``(H, W, C)`` images in [0, 1] on a white ground, ``gap`` pixels apart.

  Cells take the largest height and width found; smaller images sit at their top-left corner.
  The first three bands are shown as RGB (of a red, green, blue, near-infrared model: the colours).
  Returns float32 ``(rows * (H + gap) - gap, cols * (W + gap) - gap, 3)``.
  """
  h = max(im.shape[0] for row in rows for im in row)
  w = max(im.shape[1] for row in rows for im in row)
  cols = max(len(row) for row in rows)
  grid = np.ones((len(rows) * (h + gap) - gap, cols * (w + gap) - gap, 3), np.float32)
  for i, row in enumerate(rows):
    for j, im in enumerate(row):
      y, x = i * (h + gap), j * (w + gap)
      grid[y:y + im.shape[0], x:x + im.shape[1]] = np.clip(im[..., :3], 0.0, 1.0)
  return grid


class StageLogger:
  """Writes the records of one stage; resumed runs drop the lines past the restored step."""

  def __init__(self, stage_dir: str | os.PathLike, start_step: int):
    self.dir = Path(stage_dir)
    self.active = jax.process_index() == 0
    self.start = time.time()
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
