"""Tile geometry for large images: output tiles, the low-resolution windows they read, blending.

Everything here is per axis: a 2-D tiling is the product of a row tiling and a column tiling, so
tiles are ``(rows[i], cols[j])`` and a separable blending weight normalised per axis sums to one in
2-D as well. Tiles have one fixed size (edge tiles are moved inwards, not padded), so a jitted
per-tile function compiles once; the pixels a tile shares with an earlier one are told apart by the
tile's ``owned`` range.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

# LR pixels beyond the sampled position that a query can touch: the nearest neighbours of the
# four diagonal shifts lie within 1.5 pixels and the bilinear skip within 1; one more for float32.
_QUERY_MARGIN = 3


@dataclasses.dataclass(frozen=True)
class AxisTiles:
  """A tiling of one axis of ``size`` pixels by tiles of ``tile`` pixels.

  Attributes:
    size: the axis length.
    tile: the tile length (at most ``size``).
    starts: each tile's first pixel, increasing; the last tile ends at ``size``.
    owned: ``(lo, hi)`` per tile, the pixels it alone writes or counts: the owned ranges partition
      ``[0, size)``.
  """

  size: int
  tile: int
  starts: tuple[int, ...]
  owned: tuple[tuple[int, int], ...]

  def __len__(self) -> int:
    return len(self.starts)


def axis_tiles(size: int, tile: int, overlap: int = 0) -> AxisTiles:
  """Tiles of ``tile`` pixels (``size`` if smaller) every ``tile - overlap`` pixels over ``size``.

  The last tile is moved back to end at ``size``; a pixel covered by several tiles is owned by the
  tile whose centre is nearest (ties to the earlier).
  """
  if tile < 1:
    raise ValueError(f"tile must be positive, got {tile}")
  if not 0 <= overlap < tile:
    raise ValueError(f"overlap must be in [0, tile), got {overlap} with tile {tile}")
  tile = min(tile, size)
  stride = max(tile - overlap, 1)
  starts = list(range(0, size - tile + 1, stride))
  if starts[-1] + tile < size:
    starts.append(size - tile)
  bounds = [0] + [(a + b + tile + 1) // 2 for a, b in zip(starts[:-1], starts[1:])] + [size]
  return AxisTiles(size, tile, tuple(starts), tuple(zip(bounds[:-1], bounds[1:])))


def lr_window_size(tile: int, out_size: int, lr_size: int, radius: int) -> int:
  """The LR window length that serves any output tile of ``tile`` pixels, halo ``radius`` included.

  An output tile spans ``(tile - 1) * lr_size / out_size`` LR pixels between its first and last
  sample positions; the queries need ``_QUERY_MARGIN`` more on each side and the encoder
  ``radius`` beyond that. Capped at ``lr_size`` (the window is then the whole axis).
  """
  span = math.ceil((tile - 1) * lr_size / out_size)
  return min(lr_size, span + 2 * (_QUERY_MARGIN + radius) + 2)


def lr_window_start(start: int, tile: int, out_size: int, lr_size: int, radius: int) -> int:
  """The first LR pixel of the window of the output tile ``[start, start + tile)``.

  The window (``lr_window_size`` long, inside the image) holds the tile's LR neighbourhood with a
  halo of ``radius`` pixels, or reaches the image border, where the halo is not needed: the encoder
  zero-pads there exactly as on the whole image. Features inside it, ``radius`` pixels from a cut
  edge, equal the whole image's.
  """
  window = lr_window_size(tile, out_size, lr_size, radius)
  centre = lambda i: (i + 0.5) * lr_size / out_size - 0.5
  lo = max(math.floor(centre(start)) - _QUERY_MARGIN, 0)
  hi = min(math.floor(centre(start + tile - 1)) + _QUERY_MARGIN + 1, lr_size - 1)
  first = min(max(lo - radius, 0), lr_size - window)
  last = first + window - 1
  if not ((first == 0 or first <= lo - radius) and (last == lr_size - 1 or last >= hi + radius)):
    raise AssertionError(f"LR window [{first}, {last}] misses [{lo}, {hi}] +- {radius}")
  return first


def blend_weights(tiles: AxisTiles, overlap: int) -> list[np.ndarray]:
  """Per tile, float32 ``(tile,)`` blending weights that sum to one over the tiles at every pixel.

  Each tile ramps up over its first ``overlap`` pixels and down over its last ones with a raised
  cosine (sin^2; a ramp and the neighbour's opposite ramp sum to one), except at the image border;
  the weights are then divided by their sum over the tiles covering each pixel.
  """
  ramp = np.sin(0.5 * np.pi * (np.arange(overlap) + 0.5) / max(overlap, 1)) ** 2
  raw = []
  for i, start in enumerate(tiles.starts):
    w = np.ones(tiles.tile, np.float64)
    if overlap and i > 0:
      w[:overlap] = ramp
    if overlap and i < len(tiles) - 1:
      w[tiles.tile - overlap:] = np.minimum(w[tiles.tile - overlap:], ramp[::-1])
    raw.append((start, w))
  total = np.zeros(tiles.size, np.float64)
  for start, w in raw:
    total[start:start + tiles.tile] += w
  return [(w / total[start:start + tiles.tile]).astype(np.float32) for start, w in raw]


def position_noise(rng: jax.Array, origin: jax.Array, shape: tuple[int, int], channels: int = 3,
                   block: int = 64) -> jax.Array:
  """One fixed standard-normal field over the whole output grid, read at a tile.

  The field is drawn in ``block x block`` pieces, piece ``(r, c)`` from ``fold_in(fold_in(rng, r),
  c)``, so any window of it can be made alone: tiles that overlap see the same noise there, and the
  whole image (origin 0) is the same field. Works under jit with a traced ``origin``.

  Args:
    rng: a PRNG key.
    origin: ``(2,)`` int, the window's top-left pixel ``(row, col)``.
    shape: the window's ``(height, width)`` (static).
    channels: channels of the field (static).
    block: the piece size (static).

  Returns:
    ``(1, height, width, channels)`` float32.
  """
  origin = jnp.asarray(origin, jnp.int32)
  first = origin // block
  counts = [n // block + 2 for n in shape]

  def piece(r, c):
    key = jax.random.fold_in(jax.random.fold_in(rng, r), c)
    return jax.random.normal(key, (block, block, channels), jnp.float32)

  rows = first[0] + jnp.arange(counts[0])
  cols = first[1] + jnp.arange(counts[1])
  pieces = jax.vmap(lambda r: jax.vmap(lambda c: piece(r, c))(cols))(rows)
  field = pieces.transpose(0, 2, 1, 3, 4).reshape(counts[0] * block, counts[1] * block, channels)
  local = origin - first * block
  return jax.lax.dynamic_slice(field, (local[0], local[1], 0), (*shape, channels))[None]
