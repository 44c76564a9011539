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

import argparse
import json
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


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("--task dolly")
    g.add_argument("--max-examples", type=int, help="score the first N records of the split (default: all)")
    g.add_argument("--max-new-tokens", type=int, default=256, help="response tokens per prompt (256)")
    g.add_argument("--max-prompt-len", type=int, default=256, help="prompt tokens kept, the last ones (256)")
    g.add_argument("--sample", action="store_true", help="sample (seeded by --seed) instead of greedy decoding")


def _scores(model, examples, tokenizer, args, device) -> tuple[list[str], list[float]]:
    from Code.modeling.generation import generate_responses, rouge_l

    responses = generate_responses(model, [e.prompt for e in examples], int(tokenizer.eos_token_id),
                                   args.max_new_tokens, batch_size=args.batch_size, do_sample=args.sample,
                                   seed=args.seed, max_prompt_len=args.max_prompt_len, device=device)
    texts = [tokenizer.decode(r, skip_special_tokens=True).strip() for r in responses]
    refs = [e.reference if e.reference is not None else tokenizer.decode(e.response) for e in examples]
    return texts, rouge_l(texts, refs)


def _plan(args: argparse.Namespace, model_dir: Path, info: dict) -> tuple[str, dict, str | None]:
    """(data dir, its meta.json, the teacher to score or None), checked from files before any model loads."""
    from Code.data_pipeline.lm_datasets import check_vocab, load_meta

    data_dir = args.data_dir or info.get("data_dir")
    if not data_dir:
        raise EvalError(f"no data known for {model_dir} (no distill_info.json): pass --data-dir Code/data/dolly")
    data_dir = existing_path(str(data_dir))
    if args.max_new_tokens < 1 or (args.max_examples is not None and args.max_examples < 1):
        raise EvalError("--max-new-tokens and --max-examples must be positive")
    meta = load_meta(data_dir)
    check_vocab(meta, model_vocab(model_dir), "student")
    teacher_path = args.teacher or info.get("teacher")
    if teacher_path and not args.teacher:  # the run's teacher: only when it is a local folder
        teacher_path = existing_path(str(teacher_path))
        teacher_path = teacher_path if Path(teacher_path).is_dir() else None
    return data_dir, meta, teacher_path


def _write(result: dict, rows: list[dict], out_dir: Path, split: str) -> None:
    from Code.utils import atomic_write_json, atomic_write_text

    atomic_write_json(out_dir / "dolly_metrics.json", result)
    atomic_write_text(out_dir / "dolly_generations.jsonl",
                      "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    teacher_note = f", teacher {result['teacher']['rougeL']:.2f}" if "teacher" in result else ""
    print(f"wrote {out_dir}/dolly_metrics.json: student ROUGE-L {result['student']['rougeL']:.2f}{teacher_note} "
          f"on {result['examples']} {split} prompts")


def evaluate_dolly(args: argparse.Namespace, model_dir: Path, info: dict, out_dir: Path) -> dict:
    """Score one checkpoint (and its teacher when known locally); returns and writes the metrics."""
    from Code.data_pipeline.instruction_data import load_examples
    from Code.data_pipeline.lm_datasets import check_vocab
    from Code.modeling.loading import load_student, load_teacher

    data_dir, meta, teacher_path = _plan(args, model_dir, info)
    examples = load_examples(data_dir, args.split, args.max_examples)
    set_threads(args.threads)
    device = eval_device(args.device)
    dtype = eval_dtype(device)
    tokenizer = load_tokenizer_near(model_dir, Path(data_dir) / "tokenizer")
    if tokenizer is None:
        raise EvalError(f"no tokenizer in {model_dir} or {data_dir}/tokenizer: ROUGE-L needs text")
    models = {"student": lambda: load_student(model_dir, device=device, dtype=dtype).eval()}
    if teacher_path:
        models["teacher"] = lambda: load_teacher(teacher_path, device=device, dtype=dtype)

    result: dict = {"task": "dolly", "checkpoint": str(model_dir), "data_dir": str(data_dir), "split": args.split,
                    "examples": len(examples), "max_new_tokens": args.max_new_tokens,
                    "decoding": "sampled" if args.sample else "greedy", "seed": args.seed,
                    "teacher_path": str(teacher_path) if teacher_path else None}
    rows = [{"prompt": tokenizer.decode(e.prompt), "reference": e.reference or tokenizer.decode(e.response)}
            for e in examples]
    for name, load in models.items():
        model = load()
        if name == "teacher":
            check_vocab(meta, model.config.vocab_size, "teacher")
        texts, scores = _scores(model, examples, tokenizer, args, device)
        result[name] = {"rougeL": sum(scores) / len(scores), "mean_response_words":
                        sum(len(t.split()) for t in texts) / len(texts)}
        for row, text, score in zip(rows, texts, scores, strict=True):
            row[name], row[f"{name}_rougeL"] = text, score
        del model
    _write(result, rows, out_dir, args.split)
    return result


def compare_dolly(args: argparse.Namespace, evaluate) -> Path:
    """ROUGE-L of several runs in one markdown table (runs lacking eval/dolly_metrics.json are evaluated)."""
    from Code.evaluation.summary import run_name
    from Code.utils import atomic_write_json, atomic_write_text

    runs = ([args.ckpt] if args.ckpt else []) + list(args.compare)
    loaded = {}
    for run in runs:
        path = Path(run) / "eval" / "dolly_metrics.json"
        metrics = json.loads(path.read_text()) if path.is_file() else evaluate(args, run, Path(run) / "eval")
        loaded[run_name(Path(run))] = metrics
    out_dir = Path(args.out_dir) if args.out_dir else Path(runs[0]).resolve().parent / "compare"
    lines = ["| run | student ROUGE-L | teacher ROUGE-L | prompts | decoding |", "|---|---|---|---|---|"]
    for name, m in loaded.items():
        teacher = f"{m['teacher']['rougeL']:.2f}" if m.get("teacher") else "-"
        lines.append(f"| {name} | {m['student']['rougeL']:.2f} | {teacher} | {m['examples']} | {m['decoding']} |")
    atomic_write_text(out_dir / "compare_dolly.md", "\n".join(lines) + "\n")
    atomic_write_json(out_dir / "compare_dolly.json", loaded)
    return out_dir
