#!/usr/bin/env bash
# Logit KD: reverse KL(student || teacher): mode-seeking.
# LOSS=rkl+lm WEIGHTS=0.5,0.5 adds the LM term; --temperature T passes through. See Code/launch_common.sh.
LOSS="${LOSS:-rkl}"
RUN_NAME="${RUN_NAME:-logit_rkl}"
source "$(dirname "${BASH_SOURCE[0]}")/../../Code/launch_common.sh"
