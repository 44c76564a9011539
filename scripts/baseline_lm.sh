#!/usr/bin/env bash
# The no-distillation baseline: the same student (teacher blocks STUDENT_LAYERS, or STUDENT /
# STUDENT_CONFIG) trained with the LM loss alone. Every knob: see Code/launch_common.sh.
LOSS="${LOSS:-lm}"
RUN_NAME="${RUN_NAME:-baseline_lm}"
source "$(dirname "${BASH_SOURCE[0]}")/../Code/launch_common.sh"
