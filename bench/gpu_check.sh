#!/usr/bin/env bash
# One-command GPU check (bench/README.md, "GPU check"): on a CUDA machine, in under 8 minutes and without
# the hub: a GPT-2 124M-shaped teacher, Code/wd_stu_base.sh and Code/mse_stu_base.sh under DeepSpeed BF16
# ZeRO-2 with a resume, best/ and final/ loaded back, bench/kd_step.py at sequence 1024, Code/evaluate_.py,
# bench/logit_memory.py on the GPU; every figure with the GPU's name in <out>/gpu_check.json and .md.
#
#   bash bench/gpu_check.sh [--out DIR] [--teacher DIR] [--corpus DIR | --data-dir DIR] [--steps N] ...
#   bash bench/gpu_check.sh --help          # every flag
#   bash bench/gpu_check.sh --dry-run       # the commands it would run (works without a GPU)
#
# Without a CUDA GPU it refuses at once: one "error: ..." line on stderr, exit status 2, nothing written.
# The steps are in bench/gpu_check.py (this file only finds it); PYTHON picks the interpreter.
set -euo pipefail
exec "${PYTHON:-python}" "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/gpu_check.py" "$@"
