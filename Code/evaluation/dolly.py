"""`evaluate_.py --task dolly`: generate responses to a prompt/response split's prompts and score them
against the references by ROUGE-L (as MiniLLM reports dolly results).

    python Code/evaluate_.py --task dolly --ckpt Code/output/<run> [--data-dir Code/data/dolly] \
        [--split test] [--max-examples 500] [--max-new-tokens 256] [--teacher PATH]
    python Code/evaluate_.py --task dolly --compare Code/output/run_a Code/output/run_b

Writes `<out-dir>/dolly_metrics.json` (mean ROUGE-L per model, settings) and
`<out-dir>/dolly_generations.jsonl` (prompt, reference and each model's response per example); the
teacher is scored too when `--teacher` is given or the run's teacher is a local folder. Reads only files
(model folders, distill_info.json, the data folder); never imports the training loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from Code.evaluation.common import (
    EvalError,
    eval_device,
    eval_dtype,
    existing_path,
    load_tokenizer_near,
    model_vocab,
    set_threads,
)
from Code.evaluation.config import EvalConfig
from Code.evaluation.outputs import DOLLY_METRICS, Written


@dataclass(frozen=True)
class DollyPlan:
    """One dolly evaluation's inputs, checked from files before any model loads."""

    model_dir: Path
    data_dir: str
    meta: dict
    teacher_path: str | None  # None: the student alone (the run's teacher is not a local folder)


def _scores(model, examples, tokenizer, cfg: EvalConfig, device) -> tuple[list[str], list[float]]:
    from Code.modeling.generation import generate_responses, rouge_l

    dolly, runtime = cfg.dolly, cfg.runtime
    responses = generate_responses(model, [e.prompt for e in examples], int(tokenizer.eos_token_id),
                                   dolly.max_new_tokens, batch_size=runtime.batch_size, do_sample=dolly.sample,
                                   seed=runtime.seed, max_prompt_len=dolly.max_prompt_len, device=device)
    texts = [tokenizer.decode(r, skip_special_tokens=True).strip() for r in responses]
    refs = [e.reference if e.reference is not None else tokenizer.decode(e.response) for e in examples]
    return texts, rouge_l(texts, refs)


def plan_dolly(cfg: EvalConfig, model_dir: Path, info: dict) -> DollyPlan:
    """The data dir, its meta.json and the teacher to score; a missing or mismatched input is an EvalError."""
    from Code.data_pipeline.lm_datasets import check_vocab, load_meta

    data_dir = cfg.source.data_dir or info.get("data_dir")
    if not data_dir:
        raise EvalError(f"no data known for {model_dir} (no distill_info.json): pass --data-dir Code/data/dolly")
    data_dir = existing_path(str(data_dir))
    meta = load_meta(data_dir)
    check_vocab(meta, model_vocab(model_dir), "student")
    teacher_path = cfg.source.teacher or info.get("teacher")
    if teacher_path and not cfg.source.teacher:  # the run's teacher: only when it is a local folder
        teacher_path = existing_path(str(teacher_path))
        teacher_path = teacher_path if Path(teacher_path).is_dir() else None
    return DollyPlan(model_dir, data_dir, meta, teacher_path)


def _write(result: dict, rows: list[dict], out_dir: Path, split: str, written: Written) -> None:
    written.json(out_dir / DOLLY_METRICS, result)
    written.jsonl(out_dir / "dolly_generations.jsonl", rows)
    teacher_note = f", teacher {result['teacher']['rougeL']:.2f}" if "teacher" in result else ""
    from Code.evaluation.summary import run_name

    print(f"{run_name(Path(result['checkpoint']))}: student ROUGE-L {result['student']['rougeL']:.2f}{teacher_note} "
          f"on {result['examples']} {split} prompts")


def evaluate_dolly(cfg: EvalConfig, plan: DollyPlan, out_dir: Path, written: Written) -> dict:
    """Score one checkpoint (and its teacher when known locally); returns and writes the metrics."""
    from Code.data_pipeline.instruction_data import load_examples
    from Code.data_pipeline.lm_datasets import check_vocab
    from Code.modeling.loading import load_student, load_teacher

    split, model_dir, teacher_path = cfg.source.split, plan.model_dir, plan.teacher_path
    examples = load_examples(plan.data_dir, split, cfg.dolly.max_examples)
    set_threads(cfg.runtime.threads)
    device = eval_device(cfg.runtime.device)
    dtype = eval_dtype(device)
    tokenizer = load_tokenizer_near(model_dir, Path(plan.data_dir) / "tokenizer")
    if tokenizer is None:
        raise EvalError(f"no tokenizer in {model_dir} or {plan.data_dir}/tokenizer: ROUGE-L needs text")
    remote = cfg.runtime.trust_remote_code  # --trust-remote-code: models whose config.json names code may run it
    models = {"student": lambda: load_student(model_dir, device=device, dtype=dtype, trust_remote_code=remote).eval()}
    if teacher_path:
        models["teacher"] = lambda: load_teacher(teacher_path, device=device, dtype=dtype, trust_remote_code=remote)

    result: dict = {"task": "dolly", "checkpoint": str(model_dir), "data_dir": str(plan.data_dir), "split": split,
                    "examples": len(examples), "max_new_tokens": cfg.dolly.max_new_tokens,
                    "decoding": "sampled" if cfg.dolly.sample else "greedy", "seed": cfg.runtime.seed,
                    "teacher_path": str(teacher_path) if teacher_path else None}
    rows = [{"prompt": tokenizer.decode(e.prompt), "reference": e.reference or tokenizer.decode(e.response)}
            for e in examples]
    for name, load in models.items():
        model = load()
        if name == "teacher":
            check_vocab(plan.meta, model.config.vocab_size, "teacher")
        texts, scores = _scores(model, examples, tokenizer, cfg, device)
        result[name] = {"rougeL": sum(scores) / len(scores), "mean_response_words":
                        sum(len(t.split()) for t in texts) / len(texts)}
        for row, text, score in zip(rows, texts, scores, strict=True):
            row[name], row[f"{name}_rougeL"] = text, score
        del model
    _write(result, rows, out_dir, split, written)
    return result


def compare_dolly(cfg: EvalConfig, written: Written) -> Path:
    """ROUGE-L of several runs in one markdown table (runs lacking eval/dolly_metrics.json are evaluated)."""
    from Code.evaluation.runner import compare_out_dir, load_or_evaluate
    from Code.evaluation.summary import run_name

    loaded = {run_name(run): metrics
              for run, metrics in load_or_evaluate(cfg, "compare_dolly", written)}
    out_dir = compare_out_dir(cfg)
    lines = ["| run | student ROUGE-L | teacher ROUGE-L | prompts | decoding |", "|---|---|---|---|---|"]
    for name, m in loaded.items():
        teacher = f"{m['teacher']['rougeL']:.2f}" if m.get("teacher") else "-"
        lines.append(f"| {name} | {m['student']['rougeL']:.2f} | {teacher} | {m['examples']} | {m['decoding']} |")
    written.text(out_dir / "compare_dolly.md", "\n".join(lines) + "\n")
    written.json(out_dir / "compare_dolly.json", loaded)
    return out_dir
