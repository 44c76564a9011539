#!/usr/bin/env bash
# Train a teacher from scratch with the LM loss alone (no GPT-2 weights needed, e.g. offline): a random
# GPT-2 of STUDENT_CONFIG (default GPT-2 small: 12 layers, 768 wide) with the data's vocabulary. Its best/
# is then a TEACHER for every other launcher. Every knob: see Code/launch_common.sh.
LOSS="${LOSS:-lm}"
STUDENT_CONFIG="${STUDENT_CONFIG:-n_layer=12,n_embd=768,n_head=12}"
RUN_NAME="${RUN_NAME:-pretrain_teacher}"
set -- --no-teacher "$@"
source "$(dirname "${BASH_SOURCE[0]}")/../Code/launch_common.sh"
