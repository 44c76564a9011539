"""`evaluate_.py`'s two jobs: evaluate one checkpoint (`--task lm` or `dolly`) and compare several runs.

Light at import: the checks that need only files (the checkpoint, the teacher, the data, earlier results in
the output folder) run before torch, the models or matplotlib load.
"""

from __future__ import annotations

from pathlib import Path

from Code.evaluation.common import EvalError, read_info, resolve_checkpoint
from Code.evaluation.config import EvalConfig
from Code.evaluation.inputs import plan_lm
from Code.evaluation.outputs import METRICS, Written, refuse_overwrite
from Code.run_folder import EVAL_DIR, read_json


def default_out_dir(cfg: EvalConfig, ckpt: str | Path) -> Path:
    """Where one checkpoint's results go: --out-dir, else <ckpt>/eval."""
    return Path(cfg.out_dir) if cfg.out_dir else Path(ckpt) / EVAL_DIR


def evaluate(cfg: EvalConfig, ckpt: str | Path, out_dir: Path | None = None, written: Written | None = None) -> dict:
    """Evaluate one checkpoint against its teacher; writes metrics.json, PNGs and summary.md (`--task lm`) or
    dolly_metrics.json and dolly_generations.jsonl (`--task dolly`); returns the metrics. Earlier results in
    the output folder are an EvalError unless `cfg.overwrite`."""
    written = written if written is not None else Written()
    model_dir = resolve_checkpoint(ckpt)
    out_dir = Path(out_dir) if out_dir else default_out_dir(cfg, ckpt)
    info = read_info(model_dir)
    if cfg.task == "dolly":  # instruction following: ROUGE-L of generated responses
        if cfg.source.ood_text:
            raise EvalError("--ood-text scores language-model perplexity: use it with --task lm")
        from Code.evaluation.dolly import evaluate_dolly, plan_dolly

        plan = plan_dolly(cfg, model_dir, info)
        refuse_overwrite(out_dir, "dolly", cfg.overwrite)
        return evaluate_dolly(cfg, plan, out_dir, written)
    plan = plan_lm(cfg.source, ckpt, model_dir, info)
    refuse_overwrite(out_dir, "lm", cfg.overwrite)
    from Code.evaluation.lm import evaluate_lm  # torch and the models: only once the files check out

    return evaluate_lm(cfg, plan, out_dir, written)


def compare_runs(cfg: EvalConfig) -> list[str]:
    """The runs of --compare (after --ckpt when both are given)."""
    return ([cfg.ckpt] if cfg.ckpt else []) + list(cfg.compare or ())


def compare_out_dir(cfg: EvalConfig) -> Path:
    return Path(cfg.out_dir) if cfg.out_dir else Path(compare_runs(cfg)[0]).resolve().parent / "compare"


def load_or_evaluate(cfg: EvalConfig, job: str, written: Written) -> list[tuple[Path, dict]]:
    """Each run's metrics of `cfg.task` from its eval/, evaluating (into that eval/) the runs without them (or
    with an unreadable file, which then needs --overwrite). Every output folder is checked for earlier results
    before the first evaluation starts, so a refusal costs no model time."""
    runs = [Path(r) for r in compare_runs(cfg)]
    found = {run: read_json(run / EVAL_DIR / METRICS[cfg.task]) for run in runs}
    todo = [run for run in runs if found[run] is None]
    for run in todo:
        resolve_checkpoint(run)
        refuse_overwrite(run / EVAL_DIR, cfg.task, cfg.overwrite)
    refuse_overwrite(compare_out_dir(cfg), job, cfg.overwrite)
    return [(run, found[run] if found[run] is not None else evaluate(cfg, run, run / EVAL_DIR, written))
            for run in runs]


def compare(cfg: EvalConfig, written: Written | None = None) -> Path:
    """Evaluate runs lacking eval/metrics.json, then one markdown table, one JSON and one plot."""
    from Code.evaluation.plots import compare_plot
    from Code.evaluation.summary import compare_markdown, run_name

    written = written if written is not None else Written()
    loaded = [(run_name(run), metrics) for run, metrics in load_or_evaluate(cfg, "compare", written)]
    out_dir = compare_out_dir(cfg)
    image = compare_plot(loaded, out_dir / "compare.png")
    written.add(image)
    written.text(out_dir / "compare.md", compare_markdown(loaded, image.name))
    written.json(out_dir / "compare.json", {name: m for name, m in loaded})
    return out_dir
