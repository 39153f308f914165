"""Pixel-centre coordinates and cells, the language of the neural operator.

A grid of ``n`` pixels over [-1, 1] has pixel size ``2/n`` and centres ``-1 + 1/n + 2i/n``. An image
of ``(H, W)`` pixels has coordinates of shape ``(H, W, 2)``: ``[..., 0]`` the row (y) and ``[..., 1]``
the column (x) centre ("ij" indexing), and its cell is ``(2/H, 2/W)``, the size of one pixel.

The arithmetic follows the original's ``make_coord`` in float32, so that coordinates made here equal
the original's bit for bit. Both functions work on NumPy (the input pipeline) and inside jit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def axis_centres(n: int) -> np.ndarray:
  """The ``n`` pixel-centre coordinates of one axis in (-1, 1), float32, shape ``(n,)``."""
  r = 1.0 / n
  return np.float32(-1.0 + r) + np.float32(2 * r) * np.arange(n, dtype=np.float32)


def make_coord(shape: tuple[int, int]) -> np.ndarray:
  """Pixel-centre coordinates of an ``(H, W)`` grid: float32 ``(H, W, 2)``, (row, col) in (-1, 1)."""
  h, w = shape
  ys, xs = np.meshgrid(axis_centres(h), axis_centres(w), indexing="ij")
  return np.stack([ys, xs], axis=-1)


def make_cell(shape: tuple[int, int]) -> np.ndarray:
  """The size of one pixel of an ``(H, W)`` grid in [-1, 1] units: float32 ``(2,)`` = (2/H, 2/W)."""
  h, w = shape
  return np.array([2.0 / h, 2.0 / w], dtype=np.float32)


def query_grid(batch: int, out_hw: tuple[int, int]) -> tuple[jax.Array, jax.Array]:
  """The queries of a whole ``out_hw`` output: ``coord`` ``(B, H, W, 2)`` and ``cell`` ``(B, 2)``."""
  coord = jnp.broadcast_to(jnp.asarray(make_coord(out_hw)), (batch, *out_hw, 2))
  cell = jnp.broadcast_to(jnp.asarray(make_cell(out_hw)), (batch, 2))
  return coord, cell
