#!/usr/bin/env bash
# Hidden-state distillation: 1 - cosine similarity between matched hidden states (DistilGPT2's hidden term).
# LOSS=cos+kd+lm WEIGHTS=0.3,0.4,0.3 mirrors the seed WD run. Every knob: see Code/launch_common.sh.
LOSS="${LOSS:-cos}"
RUN_NAME="${RUN_NAME:-hidden_cos}"
source "$(dirname "${BASH_SOURCE[0]}")/../../Code/launch_common.sh"
