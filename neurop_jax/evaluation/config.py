"""The evaluation settings of a config (``config.evaluate``), read by ``--mode evaluate``.

Plain ml_collections: loading a config does not import the evaluation itself.
"""

from __future__ import annotations

import ml_collections

METHODS = ("bicubic", "operator", "diffusion")


def default_evaluate_config() -> ml_collections.ConfigDict:
  """Defaults for ``config.evaluate``: the paper's scales, all three methods, DDIM 50 steps.

  Fields:
    split: the split of ``config.data`` evaluated, 'test' or 'val'.
    scales: upsampling factors, each finite and > 1: in distribution (the training range is
      (1, ``data.s_max``], 8 by default) 2, 3.1, 4, 5.8, 7, 8, out of distribution 9, 10.
    methods: a subset of 'bicubic', 'operator', 'diffusion'.
    which: the checkpoint, 'best' (by validation PSNR) or 'latest'.
    num_images: images evenly spaced over the split (0: all of them).
    sampler, steps, eta, skip: NeurOp-Diff's sampling (``inference.super_resolve``); skip ''
      takes the sampler's default spacing ('uniform', or 'logsnr' for 'dpm_solver_pp').
    seed: seed of the diffusion noise (folded with the scale's and the image's index).
    lpips: also compute LPIPS (needs ``pip install neurop_jax[lpips]``).
    crop_images: images shown in each ``crops_x<scale>.png`` (0: no crops).
    crop_size: side of the centre crops, in HR pixels.
  """
  return ml_collections.ConfigDict(dict(
      split="test", scales=(2.0, 3.1, 4.0, 5.8, 7.0, 8.0, 9.0, 10.0), methods=METHODS,
      which="best", num_images=0, sampler="ddim", steps=50, eta=0.0, skip="", seed=0, lpips=True,
      crop_images=3, crop_size=96))
