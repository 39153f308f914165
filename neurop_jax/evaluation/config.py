"""The evaluation settings of a config (``config.evaluate``), read by ``--mode evaluate``.

Plain ml_collections: loading a config does not import the evaluation itself.
"""

from __future__ import annotations

import ml_collections

METHODS = ("bicubic", "operator", "diffusion")


def default_evaluate_config() -> ml_collections.ConfigDict:
  """Defaults for ``config.evaluate``: the paper's scales, all three methods, the run's sampling.

  Fields:
    split: the split of ``config.data`` evaluated, 'test' or 'val'.
    scales: upsampling factors, each finite and > 1: in distribution (the training range is
      (1, ``data.s_max``], 8 by default) 2, 3.1, 4, 5.8, 7, 8, out of distribution 9, 10.
    methods: a subset of 'bicubic', 'operator', 'diffusion'.
    which: the checkpoint, 'best' (by the stage's ``best_metric``) or 'latest'.
    num_images: images evenly spaced over the split (0: all of them).
    sampler, steps, skip, eta, strength: NeurOp-Diff's sampling; '', 0, '', -1 and -1 take the
      run's (what its stage 2 validated with; DDIM 50 at strength 1 for the paper's configs), as
      every entry point does (``inference.run.Run.sampling_for``). ``strength`` in [0, 1] is the
      fidelity dial (``inference.api.super_resolve``).
    consistency: 1 corrects each step's estimate to degrade to the LR input, 0 does not, -1 takes
      the run's (``inference.consistency``).
    seed: seed of the diffusion noise: image ``i`` of the split is sampled with
      ``fold_in(key(seed), i)`` at every scale, the key ``upsample --seed`` gives its file ``i``.
    lpips: also compute LPIPS (needs ``pip install neurop_jax[lpips]``).
    crop_images: images shown in each ``crops_x<scale>.png`` (0: no crops).
    crop_size: side of the centre crops, in HR pixels.
  """
  return ml_collections.ConfigDict(dict(
      split="test", scales=(2.0, 3.1, 4.0, 5.8, 7.0, 8.0, 9.0, 10.0), methods=METHODS,
      which="best", num_images=0, sampler="", steps=0, skip="", eta=-1.0,
      strength=-1.0, consistency=-1, seed=0, lpips=True,
      crop_images=3, crop_size=96))
