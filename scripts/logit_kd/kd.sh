#!/usr/bin/env bash
# Logit KD: forward KL(teacher || student) at temperature T (x T^2).
# LOSS=kd+lm WEIGHTS=0.5,0.5 adds the LM term; --temperature T passes through. See Code/launch_common.sh.
LOSS="${LOSS:-kd}"
RUN_NAME="${RUN_NAME:-logit_kd}"
source "$(dirname "${BASH_SOURCE[0]}")/../../Code/launch_common.sh"
