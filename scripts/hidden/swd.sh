#!/usr/bin/env bash
# Hidden-state distillation: critic-free sliced Wasserstein distance between matched hidden states (random projections,
# sorted 1-D transport): the cheap twin of Code/wd_stu_base.sh.
# LOSS=swd+kd+lm WEIGHTS=0.3,0.4,0.3 mirrors the seed WD run. Every knob: see Code/launch_common.sh.
LOSS="${LOSS:-swd}"
RUN_NAME="${RUN_NAME:-hidden_swd}"
source "$(dirname "${BASH_SOURCE[0]}")/../../Code/launch_common.sh"
