#!/usr/bin/env bash
# Logit KD: skew KL(p || a*p + (1-a)*q), a = --skew-alpha (default 0.1).
# LOSS=skl+lm WEIGHTS=0.5,0.5 adds the LM term; --temperature T passes through. See Code/launch_common.sh.
LOSS="${LOSS:-skl}"
RUN_NAME="${RUN_NAME:-logit_skl}"
source "$(dirname "${BASH_SOURCE[0]}")/../../Code/launch_common.sh"
