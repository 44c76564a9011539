#!/usr/bin/env bash
# Instruction data: the SFT baseline for the student (teacher blocks STUDENT_LAYERS, or STUDENT), LM loss on
# the responses only; also the usual starting point of MiniLLM. See Code/launch_common.sh.
TASK="${TASK:-dolly}"
LOSS="${LOSS:-lm}"
DATA_DIR="${DATA_DIR:-$(dirname "${BASH_SOURCE[0]}")/../../Code/data/dolly}"
RUN_NAME="${RUN_NAME:-dolly_sft_student}"
source "$(dirname "${BASH_SOURCE[0]}")/../../Code/launch_common.sh"
