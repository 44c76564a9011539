#!/usr/bin/env bash
# Hugging Face's DistilGPT2 recipe: 5.0*KD(T=2) + 2.0*LM + 1.0*cosine of hidden states, student made of
# teacher blocks 0,2,4,7,9,11 (a 12-layer teacher such as gpt2). Every knob: see Code/launch_common.sh.
PRESET="${PRESET:-distilgpt2}"
RUN_NAME="${RUN_NAME:-distilgpt2}"
source "$(dirname "${BASH_SOURCE[0]}")/../../Code/launch_common.sh"
