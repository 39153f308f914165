"""The SR3 conditional UNet (Saharia et al. 2021) as NeurOp-Diff uses it, for any image size.

Input ``(B, H, W, in_channels)`` (the noisy image and the prior, concatenated) and a noise level
``(B,)`` = sqrt(alpha_bar) in (0, 1]; output ``(B, H, W, 3)``, the predicted noise. Any ``H x W``:
the input is padded at the bottom and right to a multiple of ``2**(len(channel_mults) - 1)`` and the
output cropped back (the original crashes on sizes not divisible by 32). Attention sits at the levels
where an ``image_size`` input would have a side in ``attn_res``, whatever the actual input size.
``conv`` picks the convolutions (``conv.conv_layers``): 'fast', or 'plain' for ``jax.jvp``.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from neurop_jax.models.conv import conv_layers


def noise_level_encoding(noise_level: jnp.ndarray, dim: int) -> jnp.ndarray:
  """SR3's positional encoding of a continuous noise level: ``(B,)`` -> ``(B, dim)``, sin first."""
  count = dim // 2
  step = jnp.arange(count, dtype=jnp.float32) / count
  enc = noise_level.astype(jnp.float32)[:, None] * jnp.exp(np.float32(-math.log(1e4)) * step)[None]
  return jnp.concatenate([jnp.sin(enc), jnp.cos(enc)], axis=-1)


def _group_norm(groups: int, name: str) -> nn.GroupNorm:
  return nn.GroupNorm(num_groups=groups, epsilon=1e-5, use_fast_variance=False, dtype=jnp.float32,
                      name=name)


class Block(nn.Module):
  """GroupNorm, Swish, optional dropout, conv3x3."""

  features: int
  groups: int
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32
  conv: str = "fast"

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    h = nn.swish(_group_norm(self.groups, "norm")(x)).astype(self.dtype)
    if self.dropout:
      h = nn.Dropout(self.dropout, deterministic=not train)(h)
    return conv_layers(self.conv)[0](self.features, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
                name="conv")(h)


class ResnetBlock(nn.Module):
  """``block2(block1(x) + Dense(emb)) + res_conv(x)``, with attention after it when asked."""

  features: int
  groups: int
  dropout: float = 0.0
  with_attn: bool = False
  dtype: jnp.dtype = jnp.float32
  conv: str = "fast"

  @nn.compact
  def __call__(self, x: jnp.ndarray, emb: jnp.ndarray, train: bool) -> jnp.ndarray:
    h = Block(self.features, self.groups, dtype=self.dtype, conv=self.conv, name="block1")(x, train)
    h = h + nn.Dense(self.features, dtype=self.dtype, name="noise_func")(emb)[:, None, None, :]
    h = Block(self.features, self.groups, self.dropout, self.dtype, self.conv, name="block2")(
        h, train)
    if x.shape[-1] != self.features:
      x = conv_layers(self.conv)[0](self.features, (1, 1), dtype=self.dtype, name="res_conv")(x)
    h = h + x
    if self.with_attn:
      h = SelfAttention(self.groups, self.dtype, name="attn")(h)
    return h


class SelfAttention(nn.Module):
  """Single-head softmax self-attention over all pixels, with a residual connection."""

  groups: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    b, h, w, c = x.shape
    norm = _group_norm(self.groups, "norm")(x).astype(self.dtype)
    qkv = nn.Dense(3 * c, use_bias=False, dtype=self.dtype, name="qkv")(norm)
    q, k, v = jnp.split(qkv.reshape(b, h * w, 3 * c), 3, axis=-1)
    # The logits are made, scaled and normalised in float32 whatever the compute dtype (rounded to
    # bf16 they would be off by up to |logit| / 256). The weighted sum takes the compute dtype:
    # asked for a float32 result from bf16 operands, XLA:CPU is less exact
    # (experiments/bench_bf16.py).
    logits = jnp.einsum("bqc,bkc->bqk", q, k, preferred_element_type=jnp.float32)
    attn = nn.softmax(logits / np.float32(math.sqrt(c)), axis=-1).astype(self.dtype)
    out = jnp.einsum("bqk,bkc->bqc", attn, v).reshape(b, h, w, c)
    return nn.Dense(c, dtype=self.dtype, name="out")(out) + x


class UNet(nn.Module):
  """SR3 UNet with a continuous noise-level embedding; see the module docstring for shapes."""

  inner_channel: int = 64
  channel_mults: tuple[int, ...] = (1, 2, 2, 4, 4, 8)
  res_blocks: int = 1
  attn_res: tuple[int, ...] = (16,)
  norm_groups: int = 16
  dropout: float = 0.2
  image_size: int = 256
  out_channels: int = 3
  pad_mode: str = "reflect"
  dtype: jnp.dtype = jnp.float32
  conv: str = "fast"

  def _attn_at(self, level: int) -> bool:
    return (self.image_size // 2**level) in self.attn_res

  @nn.compact
  def __call__(self, x: jnp.ndarray, noise_level: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    _, height, width, _ = x.shape
    multiple = 2 ** (len(self.channel_mults) - 1)
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h or pad_w:
      mode = self.pad_mode if pad_h < height and pad_w < width else "edge"
      x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode=mode)

    conv, upsample_conv = conv_layers(self.conv)
    ch = self.inner_channel
    emb = noise_level_encoding(noise_level, ch)
    emb = nn.Dense(ch * 4, dtype=self.dtype, name="noise_level_mlp_1")(emb)
    emb = nn.Dense(ch, dtype=self.dtype, name="noise_level_mlp_3")(nn.swish(emb))
    resnet = lambda feats, attn, name: ResnetBlock(feats, self.norm_groups, self.dropout, attn,
                                                   self.dtype, self.conv, name=name)

    h = conv(ch, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
             name="downs_0")(x.astype(self.dtype))
    skips, index = [h], 1
    last = len(self.channel_mults) - 1
    for level, mult in enumerate(self.channel_mults):
      for _ in range(self.res_blocks):
        h = resnet(ch * mult, self._attn_at(level), f"downs_{index}")(h, emb, train)
        skips.append(h)
        index += 1
      if level != last:
        h = conv(h.shape[-1], (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
                 dtype=self.dtype, name=f"downs_{index}")(h)
        skips.append(h)
        index += 1

    h = resnet(h.shape[-1], True, "mid_0")(h, emb, train)
    h = resnet(h.shape[-1], False, "mid_1")(h, emb, train)

    index = 0
    for level in reversed(range(len(self.channel_mults))):
      for _ in range(self.res_blocks + 1):
        h = jnp.concatenate([h, skips.pop()], axis=-1)
        h = resnet(ch * self.channel_mults[level], self._attn_at(level), f"ups_{index}")(
            h, emb, train)
        index += 1
      if level != 0:
        h = upsample_conv(h.shape[-1], (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
                         name=f"ups_{index}")(h)
        index += 1

    out = Block(self.out_channels, self.norm_groups, dtype=self.dtype, conv=self.conv,
                name="final_conv")(h, train)
    return out[:, :height, :width].astype(jnp.float32)
