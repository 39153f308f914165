#!/usr/bin/env bash
# The stage-2 learning curve at the paper's model size in bfloat16 on one GPU, in under 10 minutes:
#
#   bash experiments/gpu_stage2_curve.sh            # writes runs/gpu_curve/*.json and *.png
#
# 1. trains the paper's operator (EDSR-baseline + Galerkin, 2.0M parameters) on ucm-dev for
#    PRIOR_MINUTES of wall time (configs/ucm_dev.py:operator,paper);
# 2. trains the paper's UNet (47.5M parameters) on its frozen prior for STAGE2_MINUTES each, with
#    the x0/residual formulation and with the paper's eps/image one, batch 16 of 128x128 crops,
#    and after each chunk measures NeurOp-Diff, the prior and bicubic (PSNR, SSIM, LPIPS at x4
#    and x8 on 12 whole val images; DDIM 50 steps, as the CPU curves);
# 3. plots both curves into one PNG.
# Settings by environment: OUT (runs/gpu_curve), PRIOR_MINUTES (1.5), STAGE2_MINUTES (2.5),
# VARIANT (",paper"; "" gives the small CPU model), DTYPE (bfloat16), FIRST_CHUNK (50 steps),
# PROBE (the evaluation's options). A CPU smoke test of the script itself:
#   VARIANT= DTYPE=float32 PRIOR_MINUTES=0.1 STAGE2_MINUTES=0.1 FIRST_CHUNK=2 \
#   PROBE="--val_images 1 --val_crop 64 --scales 4 --steps 2" bash experiments/gpu_stage2_curve.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu_curve}
PRIOR_MINUTES=${PRIOR_MINUTES:-1.5}
STAGE2_MINUTES=${STAGE2_MINUTES:-2.5}
VARIANT=${VARIANT-,paper}
DTYPE=${DTYPE:-bfloat16}
FIRST_CHUNK=${FIRST_CHUNK:-50}
PROBE=${PROBE:---val_images 12 --val_crop 0 --scales 4 8 --sampler ddim --steps 50}
python -c "import jax; print('devices:', jax.devices())"
mkdir -p "$OUT"
python experiments/learning_curve.py --config "configs/ucm_dev.py:operator$VARIANT" \
    --set model.dtype="$DTYPE" data.operator_batch_size=32 operator.val_images=21 \
    --workdir "$OUT/prior" --clock wall --minutes "$PRIOR_MINUTES" --chunk_minutes 0.5 \
    --first_chunk_steps "$FIRST_CHUNK" --out "$OUT/prior.json"
for formulation in "" ",eps"; do
  name=${formulation:+eps_image}
  name=${name:-x0_residual}
  python experiments/learning_curve.py --config "configs/ucm_dev.py:diffusion$VARIANT$formulation" \
      --set model.dtype="$DTYPE" data.crop_size=128 data.diffusion_batch_size=16 \
      --prior "$OUT/prior" --workdir "$OUT/$name" --clock wall --minutes "$STAGE2_MINUTES" \
      --chunk_minutes 0.5 --first_chunk_steps "$FIRST_CHUNK" $PROBE --out "$OUT/stage2_$name.json"
done
python experiments/learning_curve.py --compare "$OUT/stage2_x0_residual.json" \
    "$OUT/stage2_eps_image.json" --out "$OUT/stage2_curves.png"
