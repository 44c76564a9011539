"""Language-model views of a converted data folder: meta.json, splits, training blocks, eval windows."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from Code.data_pipeline.data_layout import META
from Code.data_pipeline.indexed_dataset import IndexedDataset

HOW = "create it with python Code/data_download.py (offline: --dataset text --train FILE --out-dir DIR)"


class DataNotFoundError(FileNotFoundError):
    """A data folder, meta.json or split that has not been created."""


class VocabMismatchError(ValueError):
    """Token ids in the data that a model's embedding table cannot hold."""


class DataTooSmallError(ValueError):
    """A split with fewer tokens than one block/window needs."""


def load_meta(data_dir: str | Path) -> dict:
    """The folder's meta.json (source, tokenizer, vocab_size, eos_id, dtype, splits)."""
    path = Path(data_dir) / META
    if not path.is_file():
        raise DataNotFoundError(f"no converted data at {path}: {HOW}")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataNotFoundError(f"{path} is not valid JSON ({e.msg}): re-run the conversion with --overwrite") from e
    return meta


def open_split(data_dir: str | Path, split: str) -> IndexedDataset:
    """The split's IndexedDataset, checked against the token count meta.json recorded for it."""
    meta = load_meta(data_dir)
    info = meta.get("splits", {}).get(split)
    if info is None:
        have = ", ".join(meta.get("splits", {})) or "none"
        raise DataNotFoundError(f"split {split!r} not in {Path(data_dir) / META} (has: {have}): {HOW}")
    ds = IndexedDataset(Path(data_dir) / split)
    if ds.num_tokens != info.get("tokens", ds.num_tokens):
        raise DataNotFoundError(
            f"{Path(data_dir) / split}.bin holds {ds.num_tokens} tokens but meta.json says {info['tokens']}: "
            "re-run the conversion with --overwrite"
        )
    return ds


PAD_MULTIPLE = 128  # an embedding table padded up to a multiple of this (GPT-2: 50,257 ids -> 50,304) is fine


def check_vocab(meta: dict, model_vocab_size: int, what: str = "model") -> None:
    """Refuse, before any work, a model whose vocabulary is not the data's tokenizer's, both ways: one that
    cannot embed every id of the data, and one with more ids than the tokenizer has beyond the padding rule (a
    table of at most the tokenizer's size rounded up to a multiple of PAD_MULTIPLE): a model trained with
    another tokenizer reads every id as another token (a 50,257-id teacher over 4,096-id data trains and
    scores, meaninglessly)."""
    vocab, eos = int(meta["vocab_size"]), int(meta["eos_id"])
    padded = -(-vocab // PAD_MULTIPLE) * PAD_MULTIPLE
    if vocab > model_vocab_size or not 0 <= eos < model_vocab_size or model_vocab_size > padded:
        raise VocabMismatchError(
            f"the data's tokenizer ({meta.get('tokenizer', '?')}) has {vocab} tokens (eos {eos}) but the {what} "
            f"has {model_vocab_size} (a model may only pad the tokenizer's size up to a multiple of "
            f"{PAD_MULTIPLE}, here {padded}): convert the data with the {what}'s tokenizer or use a matching {what}"
        )


CHECKED = ".verified.json"  # beside meta.json: the files already hashed and scanned, by size and mtime


def _file_key(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def check_data(data_dir: str | Path, model_vocab_sizes: list[int] | tuple[int, ...] = (),
               splits: list[str] | None = None) -> None:
    """Every split's `.bin` matches meta.json's sha256 and holds no token id the models cannot embed.

    The largest id is one np.max over the memmap; the sha256 reads each file once. Both results are cached
    in `<data_dir>/.verified.json` under the file's size and mtime (when the folder is writable), so a start
    after the first re-reads nothing (measured in bench/faults.py's output: hash and scan time per MB)."""
    from Code.utils import atomic_write_json

    data_dir = Path(data_dir)
    meta = load_meta(data_dir)
    try:
        cache = json.loads((data_dir / CHECKED).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cache = {}
    changed = False
    for split, info in meta.get("splits", {}).items():
        if splits is not None and split not in splits:
            continue
        path = data_dir / f"{split}.bin"
        if not path.is_file():
            raise DataNotFoundError(f"{path} is missing but {data_dir / META} lists split {split!r}: {HOW}")
        key = _file_key(path)
        known = cache.get(split) if isinstance(cache.get(split), dict) else {}
        if known.get("key") != key:
            import hashlib

            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                while block := handle.read(1 << 22):
                    digest.update(block)
            tokens = open_split(data_dir, split).tokens
            known = {"key": key, "sha256": digest.hexdigest(), "max_id": int(np.max(tokens)) if len(tokens) else -1}
            cache[split], changed = known, True
        want = info.get("sha256")
        if want and known["sha256"] != want:
            raise DataNotFoundError(f"{path} does not match the sha256 in {data_dir / META} (changed or damaged "
                                    "since it was converted): re-run the conversion with --overwrite")
        for size in model_vocab_sizes:
            if known["max_id"] >= size:
                raise VocabMismatchError(f"{path} holds token id {known['max_id']}, beyond the vocabulary of {size} "
                                         f"ids: the file does not match {data_dir / META}'s tokenizer; re-run the "
                                         "conversion with --overwrite")
    if changed and os.access(data_dir, os.W_OK):
        try:
            atomic_write_json(data_dir / CHECKED, cache)
        except OSError:
            pass  # a cache only: a full or read-only disk just means hashing again next time


def _stream(data_or_tokens) -> np.ndarray | torch.Tensor:
    if isinstance(data_or_tokens, IndexedDataset):
        return data_or_tokens.tokens
    if isinstance(data_or_tokens, torch.Tensor | np.ndarray):
        return data_or_tokens.reshape(-1)
    return np.asarray(data_or_tokens).reshape(-1)


def _long(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.long()
    return torch.from_numpy(np.asarray(x, dtype=np.int64))


class LMBlocks(Dataset):
    """Contiguous blocks over the concatenated token stream, no padding: item i is the `seq_len + 1`
    tokens starting at `i * seq_len` (inputs = item[:-1], targets = item[1:]); blocks share one token."""

    def __init__(self, data: IndexedDataset, seq_len: int) -> None:
        if seq_len < 1:
            raise ValueError(f"seq_len must be at least 1, got {seq_len}")
        self.tokens = _stream(data)
        self.seq_len = seq_len
        self.n = (len(self.tokens) - 1) // seq_len
        if self.n < 1:
            raise DataTooSmallError(
                f"{len(self.tokens)} tokens cannot fill one block of {seq_len}+1: use a smaller --seq-len or more data"
            )

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        i = int(i)
        if not -self.n <= i < self.n:
            raise IndexError(f"block {i} out of range for {self.n} blocks")
        start = (i % self.n) * self.seq_len
        return _long(self.tokens[start : start + self.seq_len + 1])


class EvalWindows(Dataset):
    """Sliding windows for perplexity ("perplexity of fixed-length models", Hugging Face docs).

    Every token after the first is scored exactly once, with as much left context as fits in `window`.
    Window k scores `stride` new tokens (the first window scores `window - 1`); `labels` repeat the
    input ids (the model shifts them) with -100 on tokens already scored and on the window's first token.
    `stride` None (or `window`) gives non-overlapping scored spans: consecutive windows share exactly the
    one context token that the next window's first score needs.
    """

    def __init__(self, data_or_tokens, window: int, stride: int | None = None) -> None:
        if window < 2:
            raise ValueError(f"window must be at least 2 tokens, got {window}")
        stride = window - 1 if stride is None or stride == window else stride
        if not 1 <= stride < window:
            raise ValueError(f"stride must be between 1 and the window ({window}), got {stride}")
        self.tokens = _stream(data_or_tokens)
        self.window, self.stride = window, stride
        n = len(self.tokens)
        if n < 2:
            raise DataTooSmallError(f"{n} tokens: perplexity needs at least 2")
        # window k scores targets [t_k, e_k): t_0 = 1, e_0 = window, then spans of `stride`
        self.num_windows = 1 + max(0, math.ceil((n - window) / stride))

    def __len__(self) -> int:
        return self.num_windows

    def span(self, k: int) -> tuple[int, int, int]:
        """(begin, first scored position, end) of window k in the token stream."""
        if not 0 <= k < self.num_windows:
            raise IndexError(f"window {k} out of range for {self.num_windows} windows")
        n = len(self.tokens)
        first = 1 if k == 0 else self.window + (k - 1) * self.stride
        end = min(n, self.window + k * self.stride)
        return max(0, end - self.window), first, end

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        begin, first, end = self.span(int(k))
        ids = _long(self.tokens[begin:end])
        labels = ids.clone()
        labels[: first - begin] = -100
        return {"input_ids": ids, "labels": labels}

    @property
    def num_scored(self) -> int:
        """Tokens that contribute to perplexity (all but the first)."""
        return len(self.tokens) - 1
