"""Inputs of the language-model evaluation: which teacher and data, the token stream, the layer map and
the token blocks the layer metrics are computed on.

`plan_lm` checks everything that can be checked from files alone (teacher known, data present, the
student's vocabulary against the data) before any model is loaded.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

from Code.evaluation.common import EvalError, existing_path, model_vocab


@dataclass(frozen=True)
class LmPlan:
    """One LM evaluation's inputs, resolved from the flags and the run's distill_info.json."""

    ckpt: Path            # as given (a run folder or a model folder): names the run
    model_dir: Path       # the student's save_pretrained folder
    info: dict            # distill_info.json ({} when absent)
    teacher_path: str
    data_dir: str | None  # None with --text-file and no data dir known
    student_vocab: int


def plan_lm(args: argparse.Namespace, ckpt: str | Path, model_dir: Path, info: dict) -> LmPlan:
    """Teacher, data folder and student vocabulary; a missing teacher or a vocabulary mismatch is an error here."""
    teacher_path = args.teacher or info.get("teacher")
    if not teacher_path:
        raise EvalError(f"no teacher known for {model_dir} (no distill_info.json): pass --teacher PATH")
    teacher_path = existing_path(str(teacher_path))
    data_dir = args.data_dir or (None if args.text_file else info.get("data_dir"))
    data_dir = existing_path(data_dir) if data_dir else None
    if args.task != "lm":
        raise EvalError(f"--task {args.task} is not available yet; use --task lm")
    s_vocab = model_vocab(model_dir)
    if data_dir and not args.text_file:
        from Code.lm_datasets import check_vocab, load_meta

        check_vocab(load_meta(data_dir), s_vocab, "student")
    return LmPlan(Path(ckpt), model_dir, info, teacher_path, data_dir, s_vocab)


def layer_map_for(args, info: dict, s_layers: int, t_layers: int) -> tuple[list[tuple[int, int]], str]:
    """(student, teacher) hidden-state pairs and where they came from: the run's map, --layer-map, or derived."""
    from Code.modeling.layer_map import parse_layer_map, resolve_layer_map
    from Code.modeling.truncation import parse_student_layers

    if not args.layer_map and info.get("layer_map"):  # what the run trained with
        raw = info["layer_map"]
        pairs = parse_layer_map(raw, s_layers) if isinstance(raw, str) else [(int(s), int(t)) for s, t in raw]
        return pairs, "run"
    layers = args.student_layers or info.get("student_layers")
    if isinstance(layers, str):
        layers = parse_student_layers(layers, t_layers)
    return resolve_layer_map(args.layer_map, [int(i) for i in layers] if layers else None, s_layers, t_layers)


def _check_tokenizer(path: Path, tokenizer, vocab_sizes: dict[str, int]) -> None:
    if not path.is_file():
        raise EvalError(f"--text-file {path} not found")
    if tokenizer is None:
        raise EvalError("--text-file needs a tokenizer: none in the checkpoint, and no --data-dir/tokenizer")
    for what, size in vocab_sizes.items():
        if len(tokenizer) > size:
            raise EvalError(f"tokenizer has {len(tokenizer)} tokens but the {what} only {size}; "
                            "use the tokenizer the models were trained with")


def token_stream(args, data_dir: str | None, tokenizer, vocab_sizes: dict[str, int]):
    """The 1-D int64 token array to score (capped by --max-tokens) and a description of its source."""
    import numpy as np

    from Code.lm_datasets import check_vocab, load_meta, open_split

    if args.text_file:
        path = Path(args.text_file)
        _check_tokenizer(path, tokenizer, vocab_sizes)
        tokens = np.asarray(tokenizer(path.read_text(encoding="utf-8"))["input_ids"], dtype=np.int64)
        source = f"text file {path}"
    else:
        if not data_dir:
            raise EvalError("no data: pass --data-dir Code/data/<name> (or --text-file FILE)")
        meta = load_meta(data_dir)
        for what, size in vocab_sizes.items():
            check_vocab(meta, size, what)
        tokens = open_split(data_dir, args.split).tokens
        source = f"{data_dir} split {args.split}"
    if args.max_tokens:
        tokens = tokens[: args.max_tokens]
    if len(tokens) < 2:
        raise EvalError(f"{source} has fewer than 2 tokens to score")
    return np.asarray(tokens, dtype=np.int64), source


def check_window(args, context: int) -> int:
    """--window (default: the models' shared context) and --stride, validated: the window in tokens."""
    window = args.window or context
    if not 2 <= window <= context:
        raise EvalError(f"--window {window} must be in 2..{context} (the models' context)")
    if args.stride is not None and not 1 <= args.stride <= window:
        raise EvalError(f"--stride {args.stride} must be in 1..{window} (the window)")
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
