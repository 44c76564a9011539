#!/usr/bin/env bash
# The main job in one command, offline (no hub, no ../shared): the public-domain book shipped in
# data_samples/ -> token files with a 4096-token BPE -> a small teacher pretrained here -> a Wasserstein (WD)
# and an MSE student distilled from it -> both evaluated, and the comparison printed. Every step is a
# documented command; the launchers do the work. Knobs: DEMO_DIR (output folder), DEMO_SEED,
# DEMO_TEACHER_STEPS, DEMO_STUDENT_STEPS, DEMO_EVAL_TOKENS; anything else a launcher reads (LAUNCHER,
# NUM_GPUS, VERBOSE, ...) passes through. Rerunning redoes every run and evaluation (the data is
# reused when up to date).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1

out="${DEMO_DIR:-Code/output/offline_demo}"
seed="${DEMO_SEED:-1234}"
corpus=data_samples/austen-persuasion
tokens="${DEMO_EVAL_TOKENS:-32768}"
eval_flags=(--max-tokens "$tokens" --seed "$seed" --overwrite)
if [[ "${VERBOSE:-0}" == "1" ]]; then eval_flags+=(--verbose); fi  # the launchers read VERBOSE themselves
# The same student, token budget and seed for both methods; fp32 because most CPUs lack bf16 units.
common=(SEED="$seed" SEQ_LEN=128 PRECISION=fp32 OVERWRITE=1)
student=("${common[@]}" TEACHER="$out/teacher/best" DATA_DIR="$out/data" STUDENT_LAYERS=0,2
         MAX_STEPS="${DEMO_STUDENT_STEPS:-100}" LR=1e-3 CRITIC_LR=1e-3)

python Code/data_download.py --dataset text --train $corpus/train.txt --valid $corpus/valid.txt \
  --test $corpus/test.txt --train-tokenizer 4096 --out-dir "$out/data"
env "${common[@]}" DATA_DIR="$out/data" OUT_DIR="$out/teacher" MAX_STEPS="${DEMO_TEACHER_STEPS:-300}" LR=2e-3 \
  STUDENT_CONFIG=n_layer=4,n_embd=128,n_head=4,n_positions=128 bash scripts/pretrain_teacher.sh
env "${student[@]}" OUT_DIR="$out/wd" bash Code/wd_stu_base.sh
env "${student[@]}" OUT_DIR="$out/mse" bash Code/mse_stu_base.sh
python Code/evaluate_.py --ckpt "$out/wd" "${eval_flags[@]}"
python Code/evaluate_.py --ckpt "$out/mse" "${eval_flags[@]}"
python Code/evaluate_.py --compare "$out/wd" "$out/mse" --out-dir "$out/compare" --overwrite
cat "$out/compare/compare.md"
