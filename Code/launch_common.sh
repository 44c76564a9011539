#!/usr/bin/env bash
# The one launcher body. Thin scripts set their defaults (PRESET, RUN_NAME) and `source` this file.
# It maps environment variables to train_related.py flags (declared with their defaults in Code/knobs/training.py),
# checks the configuration once (--check), picks the launcher (deepspeed or torchrun), one node or many,
# GPUs or CPU ranks, and passes "$@" on.
set -euo pipefail

CODE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# `Code` is imported from this launcher's own checkout, whether or not (or wherever) it is pip-installed:
# an editable install of another clone would otherwise run that clone's code, or none at all.
export PYTHONPATH="$(dirname "$CODE_DIR")${PYTHONPATH:+:$PYTHONPATH}"
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
gpus=$(python3 -c "import torch; print(torch.cuda.device_count())")
NUM_GPUS="${NUM_GPUS:-$(( gpus > 0 ? gpus : 1 ))}"
# Without a GPU, every process DeepSpeed starts warns that it fell back to the CPU: name the CPU up front
# instead (VERBOSE=1 leaves DeepSpeed's detection, and every library's own lines, as they are).
if [[ "$gpus" == "0" && "${VERBOSE:-0}" != "1" ]]; then export DS_ACCELERATOR="${DS_ACCELERATOR:-cpu}"; fi
MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"
# One node: an unset MASTER_PORT is a free port picked now; a busy one is one error line (not 40 lines of
# rendezvous traceback). Several nodes share the port set for them (29500 unless set).
if [[ -z "${HOSTFILE:-}" && "${NNODES:-1}" == "1" ]]; then
  MASTER_PORT="$(python3 -m Code.training.env_faults port "${MASTER_PORT:-}")" || exit 2
fi
MASTER_PORT="${MASTER_PORT:-29500}"

if [[ "$LAUNCHER" == "torchrun" ]]; then
  nodes=(--nnodes "${NNODES:-1}" --node_rank "${NODE_RANK:-0}")
  cmd=(torchrun --nproc_per_node "$NUM_GPUS" "${nodes[@]}" --master_addr "$MASTER_ADDR" \
    --master_port "$MASTER_PORT" "$TRAIN" "${flags[@]}" "$@")
elif [[ -n "${HOSTFILE:-}" ]]; then
  # Multi-node: the hostfile lists "host slots=N" per node. With NO_SSH=1 start this same command on
  # every node with its NODE_RANK (no passwordless ssh needed); otherwise node 0 starts the others.
  ssh=()
  if [[ "${NO_SSH:-0}" == "1" ]]; then ssh=(--no_ssh --node_rank "${NODE_RANK:-0}"); fi
  cmd=(deepspeed --hostfile "$HOSTFILE" "${ssh[@]}" --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
    "$TRAIN" "${flags[@]}" "$@")
else
  cmd=(deepspeed --num_gpus "$NUM_GPUS" --master_port "$MASTER_PORT" "$TRAIN" "${flags[@]}" "$@")
fi

# Clean stops (Code/training/stops.py). Not `exec`: DeepSpeed's runner dies of a SIGTERM without passing it on,
# leaving the ranks training as orphans. The launcher and its ranks run as one job in their own process
# group; a SIGTERM or SIGINT to this script is forwarded to all of it as SIGTERM: every rank saves at the next
# step boundary, prints the step and the resume command, and this script exits 143 (SIGTERM) or 130 (Ctrl-C).
# (DeepSpeed's launcher gives the ranks 30 s after the signal before it kills them.) The ranks' stderr goes
# through Code/training/launch_output.py: nothing after our own `error:` line, none of the launcher's noise.
export DISTILL_LAUNCH_SCRIPT="${DISTILL_LAUNCH_SCRIPT:-$0}"  # named by the resume hint
# A launcher killed with -9 cannot forward anything: its ranks watch this PID and save and stop when it is gone.
export DISTILL_LAUNCHER_PID=$$ DISTILL_LAUNCHER_HOST="$(hostname)"
set +e
# shellcheck disable=SC2016  # $@ and PIPESTATUS belong to the inner shell
job=""
stopped=""
forward() { stopped="$1"; if [[ -n "$job" ]]; then kill -s TERM -- "-$job" 2>/dev/null; fi; }
trap 'forward 143' TERM
trap 'forward 130' INT
# The job's own shell traps the signal (children get the default action back) so that it, and this script,
# wait until the last rank has saved and exited, instead of ending first and leaving them to a scheduler's kill.
setsid bash -c 'trap : TERM INT; { "$@" 2>&1 1>&3 3>&- | python3 -m Code.training.launch_output >&2 3>&-
  exit "${PIPESTATUS[0]}"; } 3>&1 | python3 -m Code.training.launch_output; exit "${PIPESTATUS[0]}"' launch "${cmd[@]}" &
job=$!
if [[ -n "$stopped" ]]; then forward "$stopped"; fi  # a signal that came while the job was starting
while kill -0 "$job" 2>/dev/null; do wait "$job"; done  # a trapped signal interrupts `wait`: wait again
wait "$job"
rc=$?
# DeepSpeed's CPU communication leaves one shared-memory buffer per rank in /dev/shm (69 MB each) and never
# removes it: a study's few hundred runs filled a 24 GiB machine's RAM and it swapped. This node's ranks have
# exited: remove the ones named by this run's address and port.
rm -f /dev/shm/deepspeed_allreduce_buffer_*_"${MASTER_ADDR}_${MASTER_PORT}"_* 2>/dev/null
exit "${stopped:-$rc}"
