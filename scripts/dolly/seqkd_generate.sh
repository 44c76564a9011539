#!/usr/bin/env bash
# Sequence-level KD, step 1: the (SFT) TEACHER answers the dolly training prompts; its responses become a
# new data folder SEQKD_DIR (default Code/data/dolly_seqkd) for scripts/dolly/seqkd_train.sh. Extra
# arguments (--sample, --max-new-tokens N, --batch-size N, ...) pass through to Code/seqkd_generate.py.
set -euo pipefail
CODE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../Code" && pwd)"
exec python3 "$CODE_DIR/seqkd_generate.py" --teacher "${TEACHER:-$CODE_DIR/output/dolly_sft_teacher/best}" \
  --data-dir "${DATA_DIR:-$CODE_DIR/data/dolly}" --out-dir "${SEQKD_DIR:-$CODE_DIR/data/dolly_seqkd}" "$@"
