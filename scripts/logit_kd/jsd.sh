#!/usr/bin/env bash
# Logit KD: Jensen-Shannon divergence (mixing coefficient: --skew-alpha / jsd beta 0.5).
# LOSS=jsd+lm WEIGHTS=0.5,0.5 adds the LM term; --temperature T passes through. See Code/launch_common.sh.
LOSS="${LOSS:-jsd}"
RUN_NAME="${RUN_NAME:-logit_jsd}"
source "$(dirname "${BASH_SOURCE[0]}")/../../Code/launch_common.sh"
