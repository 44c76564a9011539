"""`evaluate_.py`'s two jobs: evaluate one checkpoint (`--task lm` or `dolly`) and compare several runs.

Light at import: the checks that need only files run before torch, the models or matplotlib load.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from Code.evaluation.common import EvalError, read_info, resolve_checkpoint
from Code.evaluation.inputs import plan_lm


def evaluate(args: argparse.Namespace, ckpt: str | Path, out_dir: Path | None = None) -> dict:
    """Evaluate one checkpoint against its teacher; writes metrics.json, PNGs and summary.md; returns metrics."""
    model_dir = resolve_checkpoint(ckpt)
    out_dir = Path(out_dir or args.out_dir or Path(ckpt) / "eval")
    info = read_info(model_dir)
    if args.task == "dolly":  # instruction following: ROUGE-L of generated responses
        if getattr(args, "ood_text", None):
            raise EvalError("--ood-text scores language-model perplexity: use it with --task lm")
        from Code.evaluation.dolly import evaluate_dolly

        return evaluate_dolly(args, model_dir, info, out_dir)
    plan = plan_lm(args, ckpt, model_dir, info)
    from Code.evaluation.lm import evaluate_lm  # torch and the models: only once the files check out

    return evaluate_lm(args, plan, out_dir)


def compare(args: argparse.Namespace) -> Path:
    """Evaluate runs lacking eval/metrics.json, then one markdown table, one JSON and one plot."""
    from Code.evaluation.plots import compare_plot
    from Code.evaluation.summary import compare_markdown, run_name
    from Code.utils import atomic_write_json, atomic_write_text

    runs = ([args.ckpt] if args.ckpt else []) + list(args.compare)
    loaded = []
    for run in runs:
        metrics_path = Path(run) / "eval" / "metrics.json"
        if metrics_path.is_file():
            metrics = json.loads(metrics_path.read_text())
        else:
            metrics = evaluate(args, run, Path(run) / "eval")
        loaded.append((run_name(Path(run)), metrics))
    out_dir = Path(args.out_dir) if args.out_dir else Path(runs[0]).resolve().parent / "compare"
    image = compare_plot(loaded, out_dir / "compare.png").name
    atomic_write_text(out_dir / "compare.md", compare_markdown(loaded, image))
    atomic_write_json(out_dir / "compare.json", {name: m for name, m in loaded})
    return out_dir
