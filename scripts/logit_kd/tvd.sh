#!/usr/bin/env bash
# Logit KD: total variation distance between the next-token distributions.
# LOSS=tvd+lm WEIGHTS=0.5,0.5 adds the LM term; --temperature T passes through. See Code/launch_common.sh.
LOSS="${LOSS:-tvd}"
RUN_NAME="${RUN_NAME:-logit_tvd}"
source "$(dirname "${BASH_SOURCE[0]}")/../../Code/launch_common.sh"
