"""UC Merced Land Use (2100 images of 256x256, 21 classes) with the paper's recipe.

  python -m neurop_jax.main --config configs/ucm.py --workdir runs/ucm            # both stages
  python -m neurop_jax.main --config configs/ucm.py:operator --workdir runs/ucm   # stage 1
  python -m neurop_jax.main --config configs/ucm.py:diffusion --workdir runs/ucm  # stage 2

Images come from the prepared tfds dataset ``uc_merced`` (see ``neurop_jax.data.tfds_prepare``),
split 80/10/10 by name (``split_seed`` 0, recorded in ``<workdir>/split.json``). For the extracted
folder instead: ``--config.data.source=folder --config.data.path=UCMerced_LandUse/Images``.
Stage 1: L1, batch 64 of 32x32 LR patches at scales in (1, 8], 500 epochs, Adam 4e-5 warmed up
10x over 50 epochs then cosine (SRNO). Stage 2: batch 10 of 256x256, 1M steps, Adam 1e-4 stepping
down every 100k steps, EMA 0.999.
"""

from neurop_jax.training.config import base_config, parse_arg


def get_config(arg: str | None = None):
  stage, _ = parse_arg(arg)
  config = base_config("paper", stage)
  config.data.source = "tfds"
  config.data.tfds_name = "uc_merced"
  config.data.tfds_split = "train"
  return config
