"""MiniLLM training entry point: reverse KL by policy gradient on student samples.

    python Code/train_minillm.py --task prompt --data-dir Code/data/dolly --teacher SFT_TEACHER \
        --student SFT_STUDENT --mix-alpha 0.2 --max-new-tokens 256 --max-steps 1000

Usually started through `scripts/dolly/minillm.sh`. The same flags (`arguments.py`), loop (`Trainer`),
engines, checkpoints, resume and run folder as `train_related.py`; the per-batch work is
`training/minillm_step.py`, the method `objectives/minillm.py`.
"""

from __future__ import annotations

import sys

from Code.train_related import main as train_main
from Code.training.preflight import run_check


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--check" in argv:  # MiniLLM's own needs too: prompts per rank, a teacher, room for the rollouts
        sys.exit(run_check(argv, minillm=True))
    from Code.training.minillm_step import MiniLLMStep  # after the check: it imports the models

    train_main(argv, step_type=MiniLLMStep)


if __name__ == "__main__":
    main()
