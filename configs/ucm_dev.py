"""Stage 1 on the UC Merced development images (``../shared/data/ucm-dev``) in minutes of CPU.

  python -m neurop_jax.main --config configs/ucm_dev.py:operator --workdir runs/ucm_dev
  python experiments/learning_curve.py            # the same, with a CPU-time budget and a plot

The folder has ``train/<class>/`` (420 images) and ``val/<class>/`` (105), so the split is by
folder (split 'auto' finds them; test is val). The model is the ``small`` preset (4 EDSR blocks,
operator width 64): on a 2-core CPU it takes several times more steps than the paper's operator
in the same time, which is what a 20-minute budget needs. Adam at a constant 4e-4 (SRNO's peak
rate, no warm-up); validation at x4 on ``val_images`` evenly spaced val images, one of each class.
The suffix ``:paper`` trains the paper's operator instead.
"""

from pathlib import Path

from neurop_jax.config_base import base_config, parse_arg

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ucm-dev"


def get_config(arg: str | None = None):
  stage, variants = parse_arg(arg, ("paper",))
  config = base_config("paper" if "paper" in variants else "small", stage)
  config.data.source = "folder"
  config.data.path = str(DATA)
  config.data.split = "folders"
  config.data.patch_size = 32
  config.data.operator_batch_size = 8
  config.data.read_threads = 2
  config.data.eval_scale = 4.0

  config.operator.update(num_steps=100_000, warmup_epochs=0, learning_rate=4e-4,
                         warmup_multiplier=1.0, decay="constant", log_every=10, eval_every=40,
                         checkpoint_every=40, keep=1, val_images=21, sample_images=4)
  return config
