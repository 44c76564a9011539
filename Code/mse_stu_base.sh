#!/usr/bin/env bash
# Layer-wise MSE distillation. Default: the seed study's 0.3*MSE + 0.3*KD(T=1) + 0.4*LM preset;
# LOSS=mse (with WEIGHTS unset) is the pure comparison. Every knob: see Code/launch_common.sh.
PRESET="${PRESET:-seed_mse}"
source "$(dirname "${BASH_SOURCE[0]}")/launch_common.sh"
