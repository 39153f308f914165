"""RSSCN7 (2800 images of 400x400, 7 classes) with the paper's recipe.

  python -m neurop_jax.main --config configs/rsscn7.py --workdir runs/rsscn7 \
      --config.data.path=/data/RSSCN7

``data.path`` is the folder holding the class folders (or train/ val/ test/ folders, which are
then the split; otherwise 80/10/10 by name). Stage 2 trains on random 256x256 crops.
"""

from neurop_jax.training.config import base_config, parse_arg


def get_config(arg: str | None = None):
  stage, _ = parse_arg(arg)
  config = base_config("paper", stage)
  config.data.source = "folder"
  config.data.path = ""
  return config
