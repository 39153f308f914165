"""NeurOp-Diff: the neural-operator prior conditioning an SR3 diffusion UNet.

Inside the model all arrays are NHWC in the [-1, 1] image scale, with ``C = model.channels`` bands
(3, RGB, in the paper); images at every public boundary are in [0, 1] (``from_unit`` and
``to_unit`` convert). The prior is its own call (``prior``, or ``compute_prior`` for a whole output
grid) so that a sampler computes it once per image and then calls ``denoise`` at every step.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from neurop_jax.models.coords import query_grid
from neurop_jax.models.operator import NeuralOperator
from neurop_jax.models.unet import UNet


class NeurOpDiff(nn.Module):
  """Parameters ``{'operator': ..., 'unet': ...}``; stage 1 trains the first, stage 2 the second."""

  operator: NeuralOperator
  unet: UNet

  def prior(self, lr: jnp.ndarray, coord: jnp.ndarray, cell: jnp.ndarray) -> jnp.ndarray:
    """The operator's image ``(B, H, W, C)`` from ``lr`` ``(B, h, w, C)``, ``coord``, ``cell``."""
    return self.operator(lr, coord, cell)

  def denoise(self, x_t: jnp.ndarray, noise_level: jnp.ndarray, prior: jnp.ndarray,
              train: bool = False) -> jnp.ndarray:
    """The UNet's output ``(B, H, W, C)`` for ``x_t`` at ``noise_level`` ``(B,)`` given the prior:
    the predicted noise in the paper, or x0 / v (``neurop_jax.diffusion.formulation``)."""
    return self.unet(jnp.concatenate([x_t, prior], axis=-1), noise_level, train)

  def __call__(self, x_t: jnp.ndarray, noise_level: jnp.ndarray, lr: jnp.ndarray,
               coord: jnp.ndarray, cell: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    return self.denoise(x_t, noise_level, self.prior(lr, coord, cell), train)


def make_operator(cfg: ml_collections.ConfigDict, dtype: jnp.dtype = jnp.float32) -> NeuralOperator:
  """The neural operator described by ``cfg.operator`` (see ``model_config``)."""
  o = cfg.operator
  return NeuralOperator(encoder=o.encoder, encoder_blocks=o.encoder_blocks,
                        encoder_features=o.encoder_features, width=o.width, heads=o.heads,
                        blocks=o.blocks, head_hidden=o.head_hidden,
                        channels=cfg.get("channels", 3), dtype=dtype, conv=cfg.get("conv", "fast"))


def make_unet(cfg: ml_collections.ConfigDict, dtype: jnp.dtype = jnp.float32) -> UNet:
  """The UNet described by ``cfg.unet`` (see ``model_config``)."""
  u = cfg.unet
  return UNet(inner_channel=u.inner_channel, channel_mults=tuple(u.channel_mults),
              res_blocks=u.res_blocks, attn_res=tuple(u.attn_res), norm_groups=u.norm_groups,
              dropout=u.dropout, image_size=u.image_size, out_channels=cfg.get("channels", 3),
              pad_mode=u.pad_mode, dtype=dtype, conv=cfg.get("conv", "fast"))


def make_model(cfg: ml_collections.ConfigDict) -> NeurOpDiff:
  """NeurOp-Diff from a model config; ``cfg.dtype`` ('float32' or 'bfloat16') is the compute dtype."""
  dtype = jnp.dtype(cfg.dtype)
  return NeurOpDiff(operator=make_operator(cfg, dtype), unet=make_unet(cfg, dtype))


def from_unit(x: jax.Array) -> jax.Array:
  """An image in [0, 1] in the model's [-1, 1] scale, float32."""
  return jnp.asarray(x, jnp.float32) * 2 - 1


def to_unit(x: jax.Array) -> jax.Array:
  """An image in the model's [-1, 1] scale in [0, 1]: float32, clipped."""
  return jnp.clip((jnp.asarray(x, jnp.float32) + 1) / 2, 0.0, 1.0)


def compute_prior(model: NeurOpDiff, params: dict, lr: jax.Array,
                  out_hw: tuple[int, int]) -> jax.Array:
  """The operator's prior of ``lr`` ``(B, h, w, C)`` in [0, 1] on the whole ``out_hw`` grid.

  ``(B, H, W, C)`` in the [-1, 1] scale, not clipped (the UNet is conditioned on the unclipped
  prior). ``params`` holds ``{'params': {'operator': ...}}`` (a 'unet' entry is not read). Pure;
  jit it with ``model`` and ``out_hw`` static.
  """
  coord, cell = query_grid(lr.shape[0], out_hw)
  return model.apply(params, from_unit(lr), coord, cell, method=model.prior)
