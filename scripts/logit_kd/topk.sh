#!/usr/bin/env bash
# Top-k logit KD: forward KL over the teacher's top-K tokens only (renormalized), KD_TOPK=64 by default;
# saves memory at GPT-2's 50,257-token vocabulary. K = vocabulary size equals full KD. See Code/launch_common.sh.
LOSS="${LOSS:-kd}"
RUN_NAME="${RUN_NAME:-logit_topk}"
set -- --kd-topk "${KD_TOPK:-64}" "$@"
source "$(dirname "${BASH_SOURCE[0]}")/../../Code/launch_common.sh"
