#!/usr/bin/env bash
# Instruction data: word-level KD from the SFT TEACHER, 0.5*KD + 0.5*LM on the response tokens (MiniLLM's
# "KD" baseline). See Code/launch_common.sh.
TASK="${TASK:-dolly}"
LOSS="${LOSS:-kd+lm}"
WEIGHTS="${WEIGHTS:-0.5,0.5}"
DATA_DIR="${DATA_DIR:-$(dirname "${BASH_SOURCE[0]}")/../../Code/data/dolly}"
RUN_NAME="${RUN_NAME:-dolly_word_kd}"
source "$(dirname "${BASH_SOURCE[0]}")/../../Code/launch_common.sh"
