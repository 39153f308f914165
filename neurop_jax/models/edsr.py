"""EDSR encoders without upsampling (Lim et al. 2017), as the neural operator's feature extractor.

Input NHWC ``(B, h, w, 3)`` in [-1, 1]; output ``(B, h, w, features)``. The mean-shift layers of the
original EDSR are not applied (SPEC.md, stage 1): the encoder is head conv, ``num_blocks`` residual
blocks and a body conv, plus a skip from the head output. ``conv`` picks the convolutions
(``conv.conv_layers``): 'fast', or 'plain' for ``jax.jvp``.
"""

from __future__ import annotations

import functools
from typing import Callable

import flax.linen as nn
import jax.numpy as jnp

from neurop_jax.models.conv import conv_layers


def conv3x3(features: int, name: str, dtype: jnp.dtype, conv: str = "fast") -> nn.Conv:
  """A 3x3 convolution with zero padding 1 and bias (PyTorch's Conv2d(k=3, padding=1))."""
  return conv_layers(conv)[0](features, (3, 3), padding=((1, 1), (1, 1)), dtype=dtype, name=name)


class ResBlock(nn.Module):
  """``x + res_scale * conv(relu(conv(x)))``, shape preserving."""

  features: int
  res_scale: float = 1.0
  dtype: jnp.dtype = jnp.float32
  conv: str = "fast"

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    h = conv3x3(self.features, "conv0", self.dtype, self.conv)(x)
    h = conv3x3(self.features, "conv1", self.dtype, self.conv)(nn.relu(h))
    return h * self.res_scale + x


class EDSR(nn.Module):
  """EDSR body without the upsampler: ``body(head(x)) + head(x)``."""

  num_blocks: int = 16
  features: int = 64
  res_scale: float = 1.0
  dtype: jnp.dtype = jnp.float32
  conv: str = "fast"

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    head = conv3x3(self.features, "head", self.dtype, self.conv)(x.astype(self.dtype))
    h = head
    for i in range(self.num_blocks):
      h = ResBlock(self.features, self.res_scale, self.dtype, self.conv, name=f"block{i}")(h)
    return conv3x3(self.features, "body_conv", self.dtype, self.conv)(h) + head


ENCODERS: dict[str, Callable[..., EDSR]] = {
    "edsr-baseline": functools.partial(EDSR, num_blocks=16, features=64, res_scale=1.0),
    "edsr": functools.partial(EDSR, num_blocks=32, features=256, res_scale=0.1),
}


def make_encoder(name: str, *, num_blocks: int = 0, features: int = 0,
                 dtype: jnp.dtype = jnp.float32, conv: str = "fast") -> EDSR:
  """The encoder called ``name``; ``num_blocks``/``features`` override the preset when non-zero."""
  if name not in ENCODERS:
    raise ValueError(f"unknown encoder {name!r}: choose one of {sorted(ENCODERS)}")
  overrides = {k: v for k, v in (("num_blocks", num_blocks), ("features", features)) if v}
  return ENCODERS[name](dtype=dtype, conv=conv, **overrides)
