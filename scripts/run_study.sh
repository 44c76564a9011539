#!/usr/bin/env bash
# The whole study in one command: data, teacher, every method x seed through the launchers, evaluation,
# then the report (Individual-Final-Project-Report/). Run it again to resume: finished runs are reused.
#   bash scripts/run_study.sh cpu      # offline, 2-core CPU, about 4.5 hours (README: measured per stage)
#   bash scripts/run_study.sh gpu      # GPT-2 124M -> 6 layers on WikiText-103, all visible GPUs
# Environment -> flags of `python -m Code.study` (its --help says more); extra arguments pass through.
set -euo pipefail

flags=(--preset "${1:-cpu}")
if [[ $# -gt 0 ]]; then shift; fi
flag() { if [[ -n "${2:-}" ]]; then flags+=("$1" "$2"); fi; }
switch() { if [[ "${2:-0}" == "1" ]]; then flags+=("$1"); fi; }

# Environment -> flags: one line per declared study knob (Code/knobs/study.py).
knob_map="$(python3 -m Code.knobs launcher-map study)" || exit 2
eval "$knob_map"

exec python3 -m Code.study "${flags[@]}" "$@"
