#!/usr/bin/env bash
# Top-k logit KD: forward KL over the teacher's top-K tokens plus the rest as one bucket, KD_TOPK=64 by default;
# K = vocabulary size equals full KD. TEACHER_CACHE=DIR reads the targets from a cache made once by
# python Code/cache_teacher.py instead of running the teacher. See Code/launch_common.sh.
LOSS="${LOSS:-kd}"
RUN_NAME="${RUN_NAME:-logit_topk}"
set -- --kd-topk "${KD_TOPK:-64}" "$@"
source "$(dirname "${BASH_SOURCE[0]}")/../../Code/launch_common.sh"
