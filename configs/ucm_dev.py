"""Both stages on the UC Merced development images (``../shared/data/ucm-dev``) in CPU minutes.

  python -m neurop_jax.main --config configs/ucm_dev.py:operator --workdir runs/ucm_dev
  python -m neurop_jax.main --config configs/ucm_dev.py:diffusion --workdir runs/ucm_dev
  python experiments/learning_curve.py            # stage 1 with a CPU-time budget and a plot
  python experiments/learning_curve.py --config configs/ucm_dev.py:diffusion \\
      --prior runs/ucm_dev_prior                   # stage 2 likewise, on a trained prior

The folder has ``train/<class>/`` (420 images) and ``val/<class>/`` (105), so the split is by
folder (split 'auto' finds them; test is val). The model is the ``small`` preset (4 EDSR blocks,
operator width 64; UNet 16 channels): on a 2-core CPU it takes several times more steps than the
paper's model in the same time, which is what a budget of minutes needs. Stage 1: Adam at a
constant 4e-4 (SRNO's peak rate, no warm-up) on batches of 8 LR patches of 32. Stage 2: batches
of 8 HR crops of 64 at the paper's 14 scale buckets in (1, 8], x0-prediction of the prior's
residual scaled by 4 (the formulation that learns fastest here, see
experiments/results/learning_curve_diffusion_*.json); Adam 2e-4, EMA 0.995; validation samples
with DDIM 20 steps. Validation at x4 on ``val_images`` evenly spaced val images. Suffixes:
``:paper`` trains the paper's model size instead; ``:eps`` stage 2 with the paper's formulation
(eps-prediction on the image) and otherwise the same recipe.
"""

from pathlib import Path

from neurop_jax.training.config import base_config, parse_arg

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ucm-dev"


def get_config(arg: str | None = None):
  stage, variants = parse_arg(arg, ("paper", "eps"))
  config = base_config("paper" if "paper" in variants else "small", stage)
  config.data.source = "folder"
  config.data.path = str(DATA)
  config.data.split = "folders"
  config.data.patch_size = 32
  config.data.operator_batch_size = 8
  config.data.crop_size = 64
  config.data.diffusion_batch_size = 8
  config.data.read_threads = 2
  config.data.eval_scale = 4.0

  config.operator.update(num_steps=100_000, warmup_epochs=0, learning_rate=4e-4,
                         warmup_multiplier=1.0, decay="constant", log_every=10, eval_every=40,
                         checkpoint_every=40, keep=1, val_images=21, sample_images=4)
  config.diffusion.update(num_steps=100_000, learning_rates=(2e-4,), ema_decay=0.995,
                          log_every=20, eval_every=200, checkpoint_every=200, keep=1,
                          val_images=12, sample_images=4, val_sampler="ddim", val_steps=20,
                          val_skip="uniform")
  config.distill.update(num_steps=600, learning_rate=1e-4, ema_decay=0.99, pairs=256,
                        log_every=20, eval_every=300, checkpoint_every=100, keep=1,
                        val_images=4, sample_images=4)
  if "eps" not in variants:
    config.diffusion.update(target="x0", space="residual", residual_scale=4.0)
  return config
