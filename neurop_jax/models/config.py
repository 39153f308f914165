"""Model hyper-parameters as ml_collections configs; the defaults are the paper's."""

from __future__ import annotations

import ml_collections

PRESETS = ("paper", "tiny", "micro", "small")


def model_config(preset: str = "paper") -> ml_collections.ConfigDict:
  """The model config called ``preset``.

  - ``paper``: EDSR-baseline (16 x 64), operator width 256 / 16 heads; UNet 64 channels,
    mults (1, 2, 2, 4, 4, 8), attention at 16, 16 groups, dropout 0.2. 2,015,299 + 47,478,595
    parameters.
  - ``tiny``: the paper's operator with a UNet of 16 channels and 4 groups, image size 64 (the
    ``tiny`` parity fixture).
  - ``micro``: 2 EDSR blocks, operator width 32 / 4 heads; UNet 8 channels, mults (1, 2, 4),
    attention at 8, 4 groups, image size 32 (the ``micro`` parity fixture, and the tests).
  - ``small``: a CPU-friendly model for the quickstart: 4 EDSR blocks, operator width 64 / 4 heads,
    UNet 16 channels, mults (1, 2, 4, 4), attention at 16 (image size 64).

  Fields: ``operator.{encoder, encoder_blocks, encoder_features, width, heads, blocks,
  head_hidden}`` (encoder 'edsr-baseline' or 'edsr'; blocks/features 0 = the encoder's preset),
  ``unet.{inner_channel, channel_mults, res_blocks, attn_res, norm_groups, dropout, image_size,
  pad_mode}`` (pad_mode 'reflect' or 'edge', for sizes not divisible by 2**(levels-1)), and
  ``channels``, the bands of the images (3: RGB, the paper; 4 for RGB + near-infrared, ...: the
  operator's input and output and the UNet's output, its input being twice that), and
  ``dtype``, the compute dtype ('float32' or 'bfloat16'; parameters stay float32), and ``conv``,
  the convolutions: 'fast' (``models.conv``'s, with gradients fast on XLA:CPU; reverse-mode AD
  only) or 'plain' (flax's ``nn.Conv``, so that ``jax.jvp`` works through the model; same
  parameters and values).
  """
  if preset not in PRESETS:
    raise ValueError(f"unknown model preset {preset!r}: choose one of {PRESETS}")
  cfg = ml_collections.ConfigDict()
  cfg.channels = 3
  cfg.dtype = "float32"
  cfg.conv = "fast"
  cfg.operator = ml_collections.ConfigDict(dict(
      encoder="edsr-baseline", encoder_blocks=0, encoder_features=0, width=256, heads=16, blocks=2,
      head_hidden=256))
  cfg.unet = ml_collections.ConfigDict(dict(
      inner_channel=64, channel_mults=(1, 2, 2, 4, 4, 8), res_blocks=1, attn_res=(16,),
      norm_groups=16, dropout=0.2, image_size=256, pad_mode="reflect"))
  if preset == "tiny":
    cfg.unet.update(inner_channel=16, norm_groups=4, image_size=64)
  elif preset == "micro":
    cfg.operator.update(encoder_blocks=2, width=32, heads=4)
    cfg.unet.update(inner_channel=8, channel_mults=(1, 2, 4), attn_res=(8,), norm_groups=4,
                    image_size=32)
  elif preset == "small":
    cfg.operator.update(encoder_blocks=4, width=64, heads=4)
    cfg.unet.update(inner_channel=16, channel_mults=(1, 2, 4, 4), attn_res=(16,), norm_groups=4,
                    image_size=64, dropout=0.1)
  return cfg
