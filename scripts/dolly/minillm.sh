#!/usr/bin/env bash
# MiniLLM: reverse KL to the SFT TEACHER by policy gradient on student samples (single-step decomposition,
# teacher-mixed sampling --mix-alpha 0.2, length normalization) plus the LM term (--pt-weight, --pt-data-dir).
# Start from the SFT student: STUDENT=Code/output/dolly_sft_student/best. Runs Code/train_minillm.py with the
# same knobs as every launcher (Code/launch_common.sh); --max-new-tokens sets the rollout length.
TASK="${TASK:-dolly}"
DATA_DIR="${DATA_DIR:-$(dirname "${BASH_SOURCE[0]}")/../../Code/data/dolly}"
RUN_NAME="${RUN_NAME:-dolly_minillm}"
TRAIN_SCRIPT="$(dirname "${BASH_SOURCE[0]}")/../../Code/train_minillm.py"
source "$(dirname "${BASH_SOURCE[0]}")/../../Code/launch_common.sh"
