"""Evaluate a distilled student against its teacher: perplexity, per-layer distances, t-SNE, cost, samples.

    python Code/evaluate_.py --ckpt Code/output/<run> [--teacher PATH] [--data-dir Code/data/<name>]
    python Code/evaluate_.py --ckpt Code/output/<run> --ood-text ../shared/corpus/gutenberg   # + other-domain PPL
    python Code/evaluate_.py --compare Code/output/run_wd Code/output/run_mse --out-dir Code/output/compare

Reads only what training wrote (model folders, distill_info.json); never imports the training loop.
Writes `<out-dir>/metrics.json`, PNGs and `summary.md` (default out-dir: `<ckpt>/eval`).
"""

from __future__ import annotations

import argparse
import sys

# Heavy modules (torch, transformers, scikit-learn, matplotlib) load only once the inputs check out
# (Code/evaluation/runner.py), so a bad path or a vocabulary mismatch is reported in about a second.
from Code.evaluation.common import CheckpointNotFoundError, EvalError
from Code.evaluation.dolly import add_arguments as add_dolly_arguments
from Code.evaluation.dolly import compare_dolly
from Code.evaluation.runner import compare, evaluate

__all__ = ["CheckpointNotFoundError", "EvalError", "build_parser", "compare", "evaluate", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--ckpt", help="a save_pretrained student, or a run dir Code/output/<run> (uses best/, else final/)")
    p.add_argument("--teacher", help="teacher folder or hub name (default: the run's distill_info.json)")
    p.add_argument("--data-dir", help="Code/data/<name> (default: the run's distill_info.json)")
    p.add_argument("--split", default="test", help="split of the indexed dataset (default: test)")
    p.add_argument("--text-file", help="score raw text instead of a split (uses the run's tokenizer)")
    p.add_argument("--ood-text", nargs="+", metavar="PATH",
                   help="also score out-of-domain text: files, or folders of .txt files (same tokenizer,\n"
                        "window, stride; --max-tokens in all, shared between the files; Project Gutenberg\n"
                        "header/footer cut off): student.ood_ppl, teacher.ood_ppl in metrics.json")
    p.add_argument("--window", type=int, help="tokens per window (default: the models' context)")
    p.add_argument("--stride", type=int, help="sliding-window stride (default: non-overlapping windows)")
    p.add_argument("--max-tokens", type=int, help="score at most this many tokens (default: the whole split)")
    p.add_argument("--out-dir", help="output folder (default: <ckpt>/eval; --compare: <runs' parent>/compare)")
    p.add_argument("--seed", type=int, default=0, help="seeds sampling, projections, t-SNE (default 0)")
    p.add_argument("--compare", nargs="+", metavar="RUN", help="runs to put in one table and plot (evaluated if "
                   "they have no eval/metrics.json yet)")
    p.add_argument("--layer-map", help="s:t pairs or one teacher index per student layer (default: from the run)")
    p.add_argument("--student-layers", help="teacher blocks the student was cut from, to derive the layer map")
    p.add_argument("--hidden-tokens", type=int, default=4096, help="token positions for layer metrics (4096)")
    p.add_argument("--projections", type=int, default=256, help="random projections for sliced WD (256)")
    p.add_argument("--tsne-points", type=int, default=400, help="token positions per model in t-SNE; 0 = off (400)")
    p.add_argument("--gen-tokens", type=int, default=32, help="new tokens per generation; 0 = off (32)")
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (8)")
    p.add_argument("--cost-batch", type=int, default=4, help="batch size for the timing pass (4)")
    p.add_argument("--device", default="auto", help="auto (cuda if present), cpu, cuda, cuda:N")
    p.add_argument("--task", default="lm", choices=["lm", "dolly"], help="lm (default); dolly: instruction eval")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_dolly_arguments(p)  # --task dolly's options
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse the flags and run one evaluation or comparison; a bad input is one `error:` line and exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        if args.compare and args.task == "dolly":
            print(f"wrote {compare_dolly(args, evaluate)}/compare_dolly.md")
        elif args.compare:
            out = compare(args)
            print(f"wrote {out}/compare.md")
        elif args.ckpt:
            evaluate(args, args.ckpt)
        else:
            raise EvalError("nothing to evaluate: pass --ckpt DIR or --compare RUN ...")
    except (ValueError, FileNotFoundError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"error: {message}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
