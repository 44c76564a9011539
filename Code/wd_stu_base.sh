#!/usr/bin/env bash
# Wasserstein (critic) distillation. Default: the seed study's 0.3*WD + 0.4*KD(T=2) + 0.3*LM preset;
# LOSS=wd (with WEIGHTS unset) is the pure comparison. Every knob: see Code/launch_common.sh.
PRESET="${PRESET:-seed_wd}"
source "$(dirname "${BASH_SOURCE[0]}")/launch_common.sh"
