"""Evaluate a distilled student against its teacher: perplexity, per-layer distances, t-SNE, cost, samples.

    python Code/evaluate_.py --ckpt Code/output/<run> [--teacher PATH] [--data-dir Code/data/<name>]
    python Code/evaluate_.py --ckpt Code/output/<run> --ood-text ../shared/corpus/gutenberg   # + other-domain PPL
    python Code/evaluate_.py --compare Code/output/run_wd Code/output/run_mse --out-dir Code/output/compare

Reads only what training wrote (model folders, distill_info.json); never imports the training loop.
Writes `<out-dir>/metrics.json`, PNGs and `summary.md` (default out-dir: `<ckpt>/eval`) and lists the files
it wrote; results already in the output folder are refused (one `error:` line) unless `--overwrite`.
Exit codes: 0 done, 2 bad input (one `error:` line), 1 a bug (a traceback).
"""

from __future__ import annotations

import argparse
import sys

# Heavy modules (torch, transformers, scikit-learn, matplotlib) load only once the inputs check out
# (Code/evaluation/runner.py), so a bad path or a vocabulary mismatch is reported in about a second.
from Code.cli import OneLineParser, cli_main
from Code.evaluation.common import CheckpointNotFoundError, EvalError
from Code.evaluation.config import EvalConfig, add_flags, from_namespace
from Code.evaluation.dolly import compare_dolly
from Code.evaluation.outputs import Written
from Code.evaluation.runner import compare, evaluate
from Code.utils import quiet_third_party

__all__ = ["CheckpointNotFoundError", "EvalConfig", "EvalError", "build_parser", "compare", "evaluate", "main", "run"]


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    add_flags(p)
    return p


def run(cfg: EvalConfig, written: Written) -> None:
    """One evaluation or comparison, every file it writes recorded in `written`."""
    quiet_third_party(cfg.runtime.verbose)
    if cfg.compare and cfg.task == "dolly":
        compare_dolly(cfg, written)
    elif cfg.compare:
        compare(cfg, written)
    elif cfg.ckpt:
        evaluate(cfg, cfg.ckpt, written=written)
    else:
        raise EvalError("nothing to evaluate: pass --ckpt DIR or --compare RUN ...")


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, build the config once, run; list the files written. A bad input is one `error:` line
    and exit code 2."""
    def body() -> int:
        written = Written()
        run(from_namespace(build_parser().parse_args(argv)), written)
        print(written.listing(), flush=True)
        return 0

    # a bad flag, path or value (ValueError: EvalError, ConfigError; FileNotFoundError) is one line, exit 2
    return cli_main(body, (ValueError, FileNotFoundError),
                    "files already written stay (each is whole); run again with --overwrite")


if __name__ == "__main__":
    sys.exit(main())
