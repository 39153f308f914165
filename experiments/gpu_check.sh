#!/usr/bin/env bash
# The first run on a GPU, in one command and under 10 minutes on an H100/H200-class device:
#
#   bash experiments/gpu_check.sh            # writes experiments/results/gpu/*.json
#   bash experiments/gpu_check.sh --smoke    # the same steps with every size shrunk (CPU test)
#
# 1. the GPU-relevant tests: bf16 against float32, no hidden transfers or recompiles, bounded
#    K-sample memory, asynchronous checkpoints, forward-mode AD (tests.xml);
# 2. bench_sampling: the paper model, 64 -> 256, batch 16, bf16, DDIM 50 and the student at 1
#    and 4 steps (bench_sampling.json);
# 3. bench_train: both stages' train steps, paper model, bf16, batch 16 (the paper's in stage 2)
#    (bench_train.json);
# 4. bench_input: the input pipeline's rate per host core (bench_input.json);
# 5. gpu_summary.py: % of the device's peak for 2 and 3, the input rate of 8 workers against the
#    stage-2 step rate (summary.json, printed);
# 6. the stage-2 learning curve of experiments/gpu_stage2_curve.sh (stage2_curve/), last, as the
#    longest part; left out when ../shared/data/ucm-dev is absent (it trains on it) or CURVE=0.
# Settings by environment: OUT (experiments/results/gpu; --smoke: runs/gpu_check_smoke), CURVE
# (1; 0 leaves step 6 out). The smoke run took 7.5 minutes on a 2-core CPU, 4.5 of them step 6.
set -euo pipefail
cd "$(dirname "$0")/.."
SMOKE=0
if [[ "${1:-}" == "--smoke" ]]; then SMOKE=1; elif [[ $# -gt 0 ]]; then
  echo "usage: bash experiments/gpu_check.sh [--smoke]" >&2; exit 1
fi
if [[ $SMOKE == 1 ]]; then OUT=${OUT:-runs/gpu_check_smoke}; else OUT=${OUT:-experiments/results/gpu}; fi
mkdir -p "$OUT"
python -c "import jax; print('devices:', jax.devices())"

TESTS="bfloat16 or no_hidden or explicitly or memory_is_bounded or donates or forward_mode"
if [[ $SMOKE == 1 ]]; then TESTS="no_hidden and prior_only or memory_is_bounded"; fi
python -m pytest -q -m "not slow" -k "$TESTS" --junitxml "$OUT/tests.xml" tests/test_api.py \
    tests/test_tiled.py tests/test_steps.py tests/test_checkpoints.py tests/test_neurop_diff.py \
    tests/test_evaluate.py

if [[ $SMOKE == 1 ]]; then
  python experiments/bench_sampling.py --quick --batch 2 --steps 2 --repeats 1 --student 1 \
      --out "$OUT/bench_sampling.json"
  python experiments/bench_input.py --images "$(python -c \
      'from neurop_jax.data import sample_data_path; print(sample_data_path() / "train")')" \
      --batch_factor 0.02 --out "$OUT/bench_input.json"
  python experiments/bench_train.py --preset micro --batch 2 --steps 1 --warmup 1 --skip_parts \
      --out "$OUT/bench_train.json" --input_json "$OUT/bench_input.json"
else
  python experiments/bench_sampling.py --batch 16 --dtype bfloat16 --student 1 4 \
      --out "$OUT/bench_sampling.json"
  python experiments/bench_input.py --out "$OUT/bench_input.json"
  python experiments/bench_train.py --dtype bfloat16 --batch 16 --steps 10 --skip_parts \
      --out "$OUT/bench_train.json" --input_json "$OUT/bench_input.json"
fi
python experiments/gpu_summary.py "$OUT"

if [[ "${CURVE:-1}" == 0 ]]; then
  echo "stage-2 curve: left out (CURVE=0)"
elif [[ ! -d ../shared/data/ucm-dev ]]; then
  echo "stage-2 curve: left out (../shared/data/ucm-dev is absent)"
elif [[ $SMOKE == 1 ]]; then
  OUT="$OUT/stage2_curve" VARIANT= DTYPE=float32 PRIOR_MINUTES=0.05 STAGE2_MINUTES=0.05 \
      FIRST_CHUNK=1 PROBE="--val_images 1 --val_crop 64 --scales 4 --steps 1" \
      bash experiments/gpu_stage2_curve.sh
else
  OUT="$OUT/stage2_curve" bash experiments/gpu_stage2_curve.sh
fi
echo "gpu_check: done, results in $OUT"
