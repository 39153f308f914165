"""AID (10000 aerial images of 600x600, 30 classes) with the paper's recipe.

  python -m neurop_jax.main --config configs/aid.py --workdir runs/aid \
      --config.data.path=/data/AID

``data.path`` is the folder holding the class folders (or train/ val/ test/ folders, which are
then the split; otherwise 80/10/10 by name). Stage 2 trains on random 256x256 crops; validation
uses 100 images evenly spread over the val split at x4 (``--config.operator.val_images=0``: all).
"""

from neurop_jax.training.config import base_config, parse_arg


def get_config(arg: str | None = None):
  stage, _ = parse_arg(arg)
  config = base_config("paper", stage)
  config.data.source = "folder"
  config.data.path = ""
  config.operator.val_images = 100
  return config
