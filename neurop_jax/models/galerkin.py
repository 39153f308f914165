"""Galerkin-type linear attention (Cao 2021) as used by SRNO, with the original's exact quirks.

Per head, keys and values go through a layer norm with the UNBIASED standard deviation and the
epsilon added to the std; attention is ``q (k^T v) / N`` without softmax; the block's output adds its
INPUT (not the attention residual) after the feed-forward part.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


class HeadLayerNorm(nn.Module):
  """``scale * (x - mean) / (std + eps) + shift`` over the last axis, std unbiased (n - 1).

  Input ``(..., heads, head_dim)``; scale and shift have shape ``(heads, head_dim)``.
  """

  eps: float = 1e-5

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    heads, dim = x.shape[-2:]
    scale = self.param("scale", nn.initializers.ones, (heads, dim))
    shift = self.param("shift", nn.initializers.zeros, (heads, dim))
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    std = jnp.sqrt(jnp.sum((x32 - mean) ** 2, -1, keepdims=True) / (dim - 1))
    return (scale * (x32 - mean) / (std + self.eps) + shift).astype(x.dtype)


def _sum_kv(k: jnp.ndarray, v: jnp.ndarray) -> jnp.ndarray:
  """``sum_n k_n^T v_n`` per head, ``(B, heads, d, d)`` float32 (accumulated in float32 for any
  compute dtype, so that tiles' partial sums add up to the untiled sum)."""
  return jnp.einsum("bnhd,bnhe->bhde", k, v, preferred_element_type=jnp.float32)


class GalerkinBlock(nn.Module):
  """One Galerkin attention block over a grid of query points.

  Input and output ``(B, H, W, width)``; the attention is global over the ``H * W`` points. Its only
  global quantity is the per-head sum of ``k^T v`` over the points, so a large grid can be processed
  in tiles: sum ``kv_sum`` over the tiles, then ``attend`` each tile with the total and the total
  point count; ``__call__`` is ``attend(x, kv_sum(x), H * W)`` computed in one go.
  """

  width: int = 256
  heads: int = 16
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    self.qkv_proj = nn.Dense(3 * self.width, dtype=self.dtype)
    self.kln = HeadLayerNorm()
    self.vln = HeadLayerNorm()
    self.o_proj1 = nn.Dense(self.width, dtype=self.dtype)
    self.o_proj2 = nn.Dense(self.width, dtype=self.dtype)

  def _qkv(self, x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """Per-head ``q``, normalised ``k`` and ``v``, each ``(B, H*W, heads, width // heads)``."""
    b, h, w, c = x.shape
    if c != self.width or c % self.heads:
      raise ValueError(f"GalerkinBlock expects {self.width} channels divisible into "
                       f"{self.heads} heads, got {c}")
    qkv = self.qkv_proj(x).reshape(b, h * w, self.heads, 3 * (c // self.heads))
    q, k, v = jnp.split(qkv, 3, axis=-1)
    return q, self.kln(k), self.vln(v)

  def _output(self, x: jnp.ndarray, q: jnp.ndarray, kv: jnp.ndarray) -> jnp.ndarray:
    """``o_proj2(gelu(o_proj1(q kv + x))) + x`` with ``kv`` the mean of ``k^T v``."""
    out = jnp.einsum("bnhd,bhde->bnhe", q, kv).reshape(x.shape)
    ret = out + x
    return self.o_proj2(nn.gelu(self.o_proj1(ret), approximate=False)) + x

  def kv_sum(self, x: jnp.ndarray, mask: jnp.ndarray | None = None) -> jnp.ndarray:
    """The sum of ``k^T v`` over the points of ``x`` ``(B, H, W, width)``: ``(B, heads, d, d)``.

    ``mask`` ``(B, H, W)`` (1 keep, 0 drop) leaves points out of the sum, e.g. those of a tile that
    another tile owns.
    """
    _, k, v = self._qkv(x)
    if mask is not None:
      k = k * mask.reshape(k.shape[0], -1, 1, 1).astype(k.dtype)
    return _sum_kv(k, v)

  def attend(self, x: jnp.ndarray, kv_sum: jnp.ndarray, n: int | jnp.ndarray) -> jnp.ndarray:
    """The block's output ``(B, H, W, width)`` at the points ``x`` given the global ``kv_sum``.

    Args:
      x: ``(B, H, W, width)``, any subset (tile) of the grid.
      kv_sum: ``(B, heads, d, d)``, ``kv_sum`` summed over the whole grid.
      n: the number of points of the whole grid.
    """
    q, _, _ = self._qkv(x)
    return self._output(x, q, (kv_sum / n).astype(q.dtype))

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    _, h, w, _ = x.shape
    q, k, v = self._qkv(x)
    return self._output(x, q, (_sum_kv(k, v) / (h * w)).astype(q.dtype))
