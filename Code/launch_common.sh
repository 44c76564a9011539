#!/usr/bin/env bash
# The one launcher body. Thin scripts set their defaults (PRESET, RUN_NAME) and `source` this file.
# It maps environment variables to train_related.py flags (declared with their defaults in Code/knobs/training.py),
# checks the configuration once (--check), picks the launcher (deepspeed or torchrun), one node or many,
# GPUs or CPU ranks, and passes "$@" on.
set -euo pipefail

CODE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TRAIN="${TRAIN_SCRIPT:-$CODE_DIR/train_related.py}"

flags=()
flag() { if [[ -n "${2:-}" ]]; then flags+=("$1" "$2"); fi; }
switch() { if [[ "${2:-0}" == "1" ]]; then flags+=("$1"); fi; }

LAUNCHER="${LAUNCHER:-deepspeed}"
# Environment -> flags: one `flag --seq-len "${SEQ_LEN:-}"` line per declared knob (Code/knobs/training.py,
# the one list of launcher variables; no torch imported, ~0.1 s).
knob_map="$(python3 -m Code.knobs launcher-map training)" || exit 2
eval "$knob_map"

# Preflight: the entry validates the whole configuration once (no weights loaded, no rank started;
# Code/training/preflight.py), so a bad flag, path or size is one `error:` line and exit 2 within seconds,
# not a traceback from every rank. CHECK_WORLD_SIZE: the ranks about to start, NUM_GPUS per node ("auto":
# the default below) times NNODES for torchrun; with a hostfile DeepSpeed counts the slots, so one rank's
# batch is checked. SKIP_CHECK=1 skips it.
if [[ "${SKIP_CHECK:-0}" != "1" ]]; then
  ranks="${NUM_GPUS:-auto}"
  if [[ "$LAUNCHER" == "torchrun" ]]; then ranks="$ranks*${NNODES:-1}"; elif [[ -n "${HOSTFILE:-}" ]]; then ranks=1; fi
  CHECK_WORLD_SIZE="$ranks" python3 "$TRAIN" --check "${flags[@]}" "$@" || exit $?
fi

# All visible GPUs by default; with none, NUM_GPUS counts CPU ranks (1 unless set).
if [[ -z "${NUM_GPUS:-}" ]]; then
  NUM_GPUS=$(python3 -c "import torch; print(torch.cuda.device_count() or 1)")
fi
MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"
MASTER_PORT="${MASTER_PORT:-29500}"

if [[ "$LAUNCHER" == "torchrun" ]]; then
  nodes=(--nnodes "${NNODES:-1}" --node_rank "${NODE_RANK:-0}")
  exec torchrun --nproc_per_node "$NUM_GPUS" "${nodes[@]}" --master_addr "$MASTER_ADDR" \
    --master_port "$MASTER_PORT" "$TRAIN" "${flags[@]}" "$@"
elif [[ -n "${HOSTFILE:-}" ]]; then
  # Multi-node: the hostfile lists "host slots=N" per node. With NO_SSH=1 start this same command on
  # every node with its NODE_RANK (no passwordless ssh needed); otherwise node 0 starts the others.
  ssh=()
  if [[ "${NO_SSH:-0}" == "1" ]]; then ssh=(--no_ssh --node_rank "${NODE_RANK:-0}"); fi
  exec deepspeed --hostfile "$HOSTFILE" "${ssh[@]}" --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
    "$TRAIN" "${flags[@]}" "$@"
else
  exec deepspeed --num_gpus "$NUM_GPUS" --master_port "$MASTER_PORT" "$TRAIN" "${flags[@]}" "$@"
fi
