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


class GalerkinBlock(nn.Module):
  """One Galerkin attention block over a grid of query points.

  Input and output ``(B, H, W, width)``; the attention is global over the ``H * W`` points.
  """

  width: int = 256
  heads: int = 16
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    b, h, w, c = x.shape
    if c != self.width or c % self.heads:
      raise ValueError(f"GalerkinBlock expects {self.width} channels divisible into "
                       f"{self.heads} heads, got {c}")
    dense = lambda name: nn.Dense(self.width, dtype=self.dtype, name=name)
    qkv = nn.Dense(3 * self.width, dtype=self.dtype, name="qkv_proj")(x)
    qkv = qkv.reshape(b, h * w, self.heads, 3 * (c // self.heads))
    q, k, v = jnp.split(qkv, 3, axis=-1)
    k = HeadLayerNorm(name="kln")(k)
    v = HeadLayerNorm(name="vln")(v)
    kv = jnp.einsum("bnhd,bnhe->bhde", k, v) / (h * w)
    out = jnp.einsum("bnhd,bhde->bnhe", q, kv).reshape(b, h, w, c)
    ret = out + x
    return dense("o_proj2")(nn.gelu(dense("o_proj1")(ret), approximate=False)) + x
