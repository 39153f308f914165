"""The neural operator prior (SRNO): an image at any output coordinates from a low-resolution input.

Shapes (NHWC): ``lr`` ``(B, h, w, 3)`` in [-1, 1]; ``coord`` ``(B, H, W, 2)`` pixel-centre (row, col)
coordinates in (-1, 1) (``neurop_jax.coords.make_coord``); ``cell`` ``(B, 2)`` the output pixel size
``(2/H, 2/W)``. The output ``(B, H, W, 3)`` is in the [-1, 1] scale (not clipped). ``H x W`` is any
size: non-square, non-integer scales, smaller or larger than ``h x w``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from neurop_jax.models.coords import axis_centres
from neurop_jax.models.edsr import make_encoder
from neurop_jax.models.galerkin import GalerkinBlock

_SHIFT_EPS = 1e-6
_SHIFTS = ((-1, -1), (-1, 1), (1, -1), (1, 1))


def _unnormalize(c: jnp.ndarray, n: int) -> jnp.ndarray:
  """grid_sample's pixel position of coordinate ``c`` on an ``n``-pixel axis (align_corners=False)."""
  return ((c + 1) * n - 1) / 2


def _gather(images: jnp.ndarray, iy: jnp.ndarray, ix: jnp.ndarray) -> jnp.ndarray:
  """``images[b, iy[b], ix[b]]`` per batch element: ``(B, h, w, C)`` at ``(B, H, W)`` -> ``(B, H, W, C)``."""
  return jax.vmap(lambda im, y, x: im[y, x])(images, iy, ix)


def _window(images: jnp.ndarray, full_hw: tuple[int, int] | None,
            offset: jnp.ndarray | None) -> tuple[int, int, jnp.ndarray]:
  """``(h, w, offset)`` of the full image that ``images`` is a window of (itself by default)."""
  h, w = images.shape[1:3] if full_hw is None else full_hw
  return h, w, jnp.zeros((2,), jnp.int32) if offset is None else jnp.asarray(offset, jnp.int32)


def sample_bilinear(images: jnp.ndarray, coord: jnp.ndarray, *,
                    full_hw: tuple[int, int] | None = None,
                    offset: jnp.ndarray | None = None) -> jnp.ndarray:
  """Bilinear sampling with border padding, as ``grid_sample(bilinear, border, align_corners=False)``.

  ``images`` may be a window of a larger image: ``full_hw`` is the full image's ``(h, w)`` (static)
  and ``offset`` ``(2,)`` int the window's top-left pixel in it; the result is then the full image's,
  provided the window holds every pixel the coordinates touch.

  Args:
    images: ``(B, h, w, C)``, or a window of a ``full_hw`` image.
    coord: ``(B, H, W, 2)`` (row, col) in [-1, 1] of the full image.
    full_hw: the full image's size; defaults to ``images``'s.
    offset: the window's ``(row, col)`` in the full image; defaults to ``(0, 0)``.
  Returns:
    ``(B, H, W, C)``.
  """
  h, w, offset = _window(images, full_hw, offset)
  iy = jnp.clip(_unnormalize(coord[..., 0], h), 0, h - 1)
  ix = jnp.clip(_unnormalize(coord[..., 1], w), 0, w - 1)
  y0, x0 = jnp.floor(iy), jnp.floor(ix)
  y1, x1 = y0 + 1, x0 + 1
  wy1, wx1 = iy - y0, ix - x0
  wy0, wx0 = y1 - iy, x1 - ix
  y0i, x0i = y0.astype(jnp.int32), x0.astype(jnp.int32)
  y1i, x1i = jnp.minimum(y0i + 1, h - 1), jnp.minimum(x0i + 1, w - 1)
  oy, ox = offset[0], offset[1]
  corner = lambda y, x, wgt: _gather(images, y - oy, x - ox) * wgt[..., None]
  return (corner(y0i, x0i, wy0 * wx0) + corner(y0i, x1i, wy0 * wx1)
          + corner(y1i, x0i, wy1 * wx0) + corner(y1i, x1i, wy1 * wx1))


def query_features(feat: jnp.ndarray, coord: jnp.ndarray, cell: jnp.ndarray, *,
                   full_hw: tuple[int, int] | None = None,
                   offset: jnp.ndarray | None = None) -> jnp.ndarray:
  """The operator's input at every query point: 4-neighbour area-weighted LR features.

  For each of the four diagonal neighbours the nearest LR feature and its relative position are
  taken; features are weighted by the area of the OPPOSITE neighbour's rectangle (bilinear-style).
  ``feat`` may be a window of a larger feature map (``full_hw``, ``offset`` as in
  ``sample_bilinear``): the result equals the full map's wherever the window holds the neighbours.

  Args:
    feat: encoder features ``(B, h, w, C)``, or a window of a ``full_hw`` map.
    coord: ``(B, H, W, 2)`` query coordinates (row, col) of the full image.
    cell: ``(B, 2)`` output pixel size.
    full_hw: the full map's ``(h, w)`` (static); defaults to ``feat``'s.
    offset: the window's ``(row, col)`` in the full map; defaults to ``(0, 0)``.
  Returns:
    ``(B, H, W, 8 + 4 C + 2)``: 4 relative positions, 4 weighted features, the cell in LR pixels.
  """
  h, w, offset = _window(feat, full_hw, offset)
  centres_y, centres_x = jnp.asarray(axis_centres(h)), jnp.asarray(axis_centres(w))
  lo, hi = np.float32(-1 + 1e-6), np.float32(1 - 1e-6)
  rels, feats, areas = [], [], []
  for vy, vx in _SHIFTS:
    qy = jnp.clip(coord[..., 0] + np.float32(vy / h + _SHIFT_EPS), lo, hi)
    qx = jnp.clip(coord[..., 1] + np.float32(vx / w + _SHIFT_EPS), lo, hi)
    iy = jnp.clip(jnp.round(_unnormalize(qy, h)).astype(jnp.int32), 0, h - 1)
    ix = jnp.clip(jnp.round(_unnormalize(qx, w)).astype(jnp.int32), 0, w - 1)
    rel_y = (coord[..., 0] - centres_y[iy]) * h
    rel_x = (coord[..., 1] - centres_x[ix]) * w
    rels.append(jnp.stack([rel_y, rel_x], axis=-1))
    feats.append(_gather(feat, iy - offset[0], ix - offset[1]))
    areas.append(jnp.abs(rel_y * rel_x) + np.float32(1e-9))
  total = areas[0] + areas[1] + areas[2] + areas[3]
  weighted = [f * (areas[3 - i] / total)[..., None].astype(f.dtype) for i, f in enumerate(feats)]
  rel_cell = cell * jnp.array([h, w], cell.dtype)
  rel_cell = jnp.broadcast_to(rel_cell[:, None, None, :], coord.shape)
  return jnp.concatenate([*rels, *weighted, rel_cell.astype(feat.dtype)], axis=-1)


class NeuralOperator(nn.Module):
  """SRNO: EDSR encoder, feature query, lift, Galerkin blocks, MLP head and a bilinear skip."""

  encoder: str = "edsr-baseline"
  encoder_blocks: int = 0
  encoder_features: int = 0
  width: int = 256
  heads: int = 16
  blocks: int = 2
  head_hidden: int = 256
  channels: int = 3
  dtype: jnp.dtype = jnp.float32
  conv: str = "fast"

  def setup(self):
    self.encoder_net = make_encoder(self.encoder, num_blocks=self.encoder_blocks,
                                    features=self.encoder_features, dtype=self.dtype,
                                    conv=self.conv)
    self.lift = nn.Dense(self.width, dtype=self.dtype)
    self.galerkin = [GalerkinBlock(self.width, self.heads, self.dtype) for _ in range(self.blocks)]
    self.fc1 = nn.Dense(self.head_hidden, dtype=self.dtype)
    self.fc2 = nn.Dense(self.channels, dtype=self.dtype)

  def encode(self, lr: jnp.ndarray) -> jnp.ndarray:
    """Encoder features ``(B, h, w, F)`` of ``lr`` ``(B, h, w, channels)`` in [-1, 1]."""
    return self.encoder_net(lr)

  def lift_queries(self, feat: jnp.ndarray, coord: jnp.ndarray, cell: jnp.ndarray, *,
                   full_hw: tuple[int, int] | None = None,
                   offset: jnp.ndarray | None = None) -> jnp.ndarray:
    """The lifted queries ``(B, H, W, width)`` at ``coord``: local, see ``query_features``."""
    return self.lift(query_features(feat, coord, cell, full_hw=full_hw, offset=offset))

  def block_kv_sum(self, x: jnp.ndarray, index: int, mask: jnp.ndarray | None = None) -> jnp.ndarray:
    """``GalerkinBlock.kv_sum`` of Galerkin block ``index`` (static) at ``x``."""
    return self.galerkin[index].kv_sum(x, mask)

  def block_attend(self, x: jnp.ndarray, index: int, kv_sum: jnp.ndarray,
                   n: int | jnp.ndarray) -> jnp.ndarray:
    """``GalerkinBlock.attend`` of Galerkin block ``index`` (static) at ``x``."""
    return self.galerkin[index].attend(x, kv_sum, n)

  def project(self, lr: jnp.ndarray, x: jnp.ndarray, coord: jnp.ndarray, *,
              full_hw: tuple[int, int] | None = None,
              offset: jnp.ndarray | None = None) -> jnp.ndarray:
    """The MLP head plus the bilinear skip of ``lr`` (or a window of it): ``(B, H, W, channels)``."""
    out = self.fc2(nn.gelu(self.fc1(x), approximate=False)).astype(jnp.float32)
    return out + sample_bilinear(lr.astype(jnp.float32), coord, full_hw=full_hw, offset=offset)

  def decode(self, lr: jnp.ndarray, feat: jnp.ndarray, coord: jnp.ndarray,
             cell: jnp.ndarray) -> jnp.ndarray:
    """The image at ``coord`` from precomputed features: ``(B, H, W, channels)``, [-1, 1] scale."""
    x = self.lift_queries(feat, coord, cell)
    for block in self.galerkin:
      x = block(x)
    return self.project(lr, x, coord)

  def __call__(self, lr: jnp.ndarray, coord: jnp.ndarray, cell: jnp.ndarray) -> jnp.ndarray:
    return self.decode(lr, self.encode(lr), coord, cell)
