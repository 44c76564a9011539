#!/usr/bin/env bash
# Sequence-level KD, step 2: the student trained with the LM loss on the teacher's responses (the folder
# scripts/dolly/seqkd_generate.sh wrote; validation stays on the human references). See Code/launch_common.sh.
TASK="${TASK:-dolly}"
LOSS="${LOSS:-lm}"
DATA_DIR="${DATA_DIR:-$(dirname "${BASH_SOURCE[0]}")/../../Code/data/dolly_seqkd}"
RUN_NAME="${RUN_NAME:-dolly_seqkd}"
source "$(dirname "${BASH_SOURCE[0]}")/../../Code/launch_common.sh"
