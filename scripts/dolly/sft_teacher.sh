#!/usr/bin/env bash
# Instruction data, step 0: supervised fine-tuning of the teacher (TEACHER, e.g. gpt2-xl or a pretrained
# teacher) on dolly, LM loss on the responses only. Its best/ is the TEACHER of the other dolly recipes.
# Data: python Code/data_download.py --dataset dolly (offline: --train dolly.jsonl). See Code/launch_common.sh.
TASK="${TASK:-dolly}"
LOSS="${LOSS:-lm}"
DATA_DIR="${DATA_DIR:-$(dirname "${BASH_SOURCE[0]}")/../../Code/data/dolly}"
STUDENT="${STUDENT:-${TEACHER:-gpt2}}"
RUN_NAME="${RUN_NAME:-dolly_sft_teacher}"
set -- --no-teacher "$@"
source "$(dirname "${BASH_SOURCE[0]}")/../../Code/launch_common.sh"
