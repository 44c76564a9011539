"""Inputs of the language-model evaluation: which teacher and data, the token stream, the layer map and
the token blocks the layer metrics are computed on.

`plan_lm` checks everything that can be checked from files alone (teacher known, data present, the
student's vocabulary against the data, the `--ood-text` files readable and not empty) before any model
is loaded. Raw text (`--text-file`, `--ood-text`) is read and tokenized by `Code.evaluation.texts`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from Code.evaluation.common import EvalError, existing_path, model_vocab
from Code.evaluation.config import MeasureConfig, SourceConfig
from Code.evaluation.texts import TextSource, ood_files, read_texts, text_tokens


@dataclass(frozen=True)
class LmPlan:
    """One LM evaluation's inputs, resolved from the flags and the run's distill_info.json."""

    ckpt: Path            # as given (a run folder or a model folder): names the run
    model_dir: Path       # the student's save_pretrained folder
    info: dict            # distill_info.json ({} when absent)
    teacher_path: str
    data_dir: str | None  # None with --text-file and no data dir known
    student_vocab: int
    ood: tuple[TextSource, ...] = ()  # --ood-text, read and checked (empty: no out-of-domain pass)


def plan_lm(source: SourceConfig, ckpt: str | Path, model_dir: Path, info: dict) -> LmPlan:
    """Teacher, data folder and student vocabulary; a missing teacher or a vocabulary mismatch is an error here."""
    teacher_path = source.teacher or info.get("teacher")
    if not teacher_path:
        raise EvalError(f"no teacher known for {model_dir} (no distill_info.json): pass --teacher PATH")
    teacher_path = existing_path(str(teacher_path))
    data_dir = source.data_dir or (None if source.text_file else info.get("data_dir"))
    data_dir = existing_path(data_dir) if data_dir else None
    s_vocab = model_vocab(model_dir)
    if data_dir and not source.text_file:
        from Code.data_pipeline.lm_datasets import check_vocab, load_meta

        check_vocab(load_meta(data_dir), s_vocab, "student")
    ood = (tuple(read_texts(ood_files(list(source.ood_text)), "--ood-text", source.ood_format)) if source.ood_text
           else ())
    return LmPlan(Path(ckpt), model_dir, info, teacher_path, data_dir, s_vocab, ood)


def layer_map_for(measure: MeasureConfig, info: dict, s_layers: int,
                  t_layers: int) -> tuple[list[tuple[int, int]], str]:
    """(student, teacher) hidden-state pairs and where they came from: the run's map, --layer-map, or derived."""
    from Code.modeling.layer_map import parse_layer_map, resolve_layer_map
    from Code.modeling.truncation import parse_student_layers

    if not measure.layer_map and info.get("layer_map"):  # what the run trained with
        raw = info["layer_map"]
        pairs = parse_layer_map(raw, s_layers) if isinstance(raw, str) else [(int(s), int(t)) for s, t in raw]
        return pairs, "run"
    layers = measure.student_layers or info.get("student_layers")
    if isinstance(layers, str):
        layers = parse_student_layers(layers, t_layers)
    return resolve_layer_map(measure.layer_map, [int(i) for i in layers] if layers else None, s_layers, t_layers)


def token_stream(source: SourceConfig, data_dir: str | None, tokenizer, vocab_sizes: dict[str, int]):
    """The 1-D int64 token array to score (capped by --max-tokens) and a description of its source."""
    import numpy as np

    from Code.data_pipeline.lm_datasets import check_data, check_vocab, load_meta, open_split

    if source.text_file:
        path = Path(source.text_file)
        tokens, _ = text_tokens(read_texts([path], "--text-file"), tokenizer, vocab_sizes, source.max_tokens,
                                "--text-file")
        described = f"text file {path}"
    else:
        if not data_dir:
            raise EvalError("no data: pass --data-dir Code/data/<name> (or --text-file FILE)")
        meta = load_meta(data_dir)
        for what, size in vocab_sizes.items():
            check_vocab(meta, size, what)
        check_data(data_dir, list(vocab_sizes.values()), splits=[source.split])  # digest; largest id both ways
        tokens = open_split(data_dir, source.split).tokens
        described = f"{data_dir} split {source.split}"
    if source.max_tokens:
        tokens = tokens[: source.max_tokens]
    if len(tokens) < 2:
        raise EvalError(f"{described} has fewer than 2 tokens to score")
    return np.asarray(tokens, dtype=np.int64), described


def ood_stream(max_tokens: int | None, texts: tuple[TextSource, ...], tokenizer, vocab_sizes: dict[str, int]):
    """The --ood-text token stream (the in-domain cap, `max_tokens`) and its record for metrics.json."""
    tokens, shares = text_tokens(list(texts), tokenizer, vocab_sizes, max_tokens, "--ood-text")
    if len(tokens) < 2:
        raise EvalError(f"--ood-text {', '.join(str(t.path) for t in texts)} has fewer than 2 tokens to score")
    record = {"files": [str(t.path.resolve()) for t in texts], "tokens_per_file": shares,
              "gutenberg_stripped": [t.path.name for t in texts if t.gutenberg_stripped],
              "max_tokens": max_tokens, "conventions": texts[0].conventions}
    return tokens, record


def check_window(source: SourceConfig, context: int) -> int:
    """--window (default: the models' shared context) and --stride, validated: the window in tokens."""
    window = source.window or context
    if not 2 <= window <= context:
        raise EvalError(f"--window {window} must be in 2..{context} (the models' context)")
    if source.stride is not None and not 1 <= source.stride <= window:
        raise EvalError(f"--stride {source.stride} must be in 1..{window} (the window)")
    return window


def hidden_blocks(tokens, block_len: int, n_tokens: int, batch_size: int, seed: int) -> list:
    """Seeded random non-overlapping blocks of the stream, in stream order, batched: layer-metric inputs."""
    import numpy as np
    import torch

    n_avail = len(tokens) // block_len
    n_blocks = max(1, min(n_avail, math.ceil(n_tokens / block_len)))
    starts = np.sort(np.random.default_rng(seed).choice(n_avail, size=n_blocks, replace=False)) * block_len
    rows = [torch.from_numpy(tokens[s : s + block_len].copy()) for s in starts]
    return [torch.stack(rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)]
