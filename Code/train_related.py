"""Distil a frozen GPT-2 teacher into a student under DeepSpeed (or DDP): the training entry point.

    python Code/train_related.py --teacher PATH --data-dir Code/data/wikitext-2 --loss wd --max-steps 100
    python Code/train_related.py --check ...        # validate the configuration only (what the launchers do first)

Usually started through `Code/wd_stu_base.sh` / `Code/mse_stu_base.sh`, which map environment variables
to these flags. Every flag lives in `arguments.py`; the loop is `training/trainer.py`, the per-batch work
`training/steps.py`.
"""

from __future__ import annotations

import os
import sys

from Code.training.preflight import run_check


def main(argv: list[str] | None = None, step_type: type | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--check" in argv:  # before the heavy imports below: the launcher runs this on every start
        sys.exit(run_check(argv))
    from Code.arguments import parse_config
    from Code.training.env_faults import disk_message, keep_write_errors
    from Code.training.steps import DistillStep
    from Code.training.trainer import Trainer, single_process_env
    from Code.utils import fail, rank, world_size

    single_process_env()
    keep_write_errors()
    cfg = None
    try:
        cfg = parse_config(argv)
        code = Trainer(cfg, step_type or DistillStep).run()  # 0 trained; 143/130 stopped by a signal, saved
    except (ValueError, FileNotFoundError, OSError) as exc:
        message = str(exc)
        if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
            message = disk_message(exc, cfg.out_dir if cfg else ".") if cfg else None
            if message is None:
                raise
        if os.environ.get("DISTILL_DEBUG"):
            raise
        fail(f"[rank {rank()}] {message}" if world_size() > 1 else message)
    if code:  # a clean stop after a signal: 143 / 130 (Code/training/stops.py); 0 returns normally
        sys.exit(code)


if __name__ == "__main__":
    main()
