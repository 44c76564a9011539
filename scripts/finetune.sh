#!/usr/bin/env bash
# Continue training a model (STUDENT: a save_pretrained folder or hub name, default the TEACHER) with the
# LM loss alone on DATA_DIR, e.g. to adapt a teacher to a new corpus. Every knob: see Code/launch_common.sh.
LOSS="${LOSS:-lm}"
STUDENT="${STUDENT:-${TEACHER:-gpt2}}"
RUN_NAME="${RUN_NAME:-finetune}"
set -- --no-teacher "$@"
source "$(dirname "${BASH_SOURCE[0]}")/../Code/launch_common.sh"
