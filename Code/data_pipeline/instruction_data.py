"""Prompt/response views (`--task prompt`, alias `dolly`) of a data folder converted with
`data_download.py --dataset dolly` (or `cnn_dailymail`, or written by `seqkd_generate.py`).

Each document there is `prompt tokens + response tokens + EOS`, and `<split>_prompt_len.npy` holds the
prompt's token count per document (named by `meta.json`'s `splits.<split>.prompt_lengths`). From that:

- `PromptMaskedBlocks`: the same fixed-length blocks over the token stream as `LMBlocks`, each carried
  with a flag per token saying "prompt"; `labels_from` turns a batch into next-token labels that are -100
  wherever the target is a prompt token. So `lm`, `kd`, `rkl`, ... score only responses (and the EOS that
  ends them), while hidden-state losses still see every position. Blocks are packed like pretraining
  data: a block may start mid-record, which costs a little context but keeps the sampler, resume and
  multi-rank logic of the LM path unchanged.
- `load_examples`: per record the prompt ids, the response ids and the reference text, for generation
  (ROUGE-L evaluation, sequence-level KD, MiniLLM rollouts).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from Code.data_pipeline.data_layout import META
from Code.data_pipeline.indexed_dataset import IndexedDataset
from Code.data_pipeline.lm_datasets import LMBlocks, load_meta, open_split

HOW = "convert the records with python Code/data_download.py --dataset dolly [--train FILE.jsonl ...]"
# `--task` names of prompt/response training (the prompt masked out of the labels): the canonical name first,
# then `dolly`, the name it had before, which means the same
PROMPT_TASKS = ("prompt", "dolly")


def is_prompt_task(task: str | None) -> bool:
    """Whether `--task` names prompt/response data with the prompt masked out of the labels (`prompt`, `dolly`)."""
    return task in PROMPT_TASKS


class InstructionDataError(ValueError):
    """A data folder without the prompt lengths that instruction training needs."""


def prompt_lengths(data_dir: str | Path, split: str, documents: int | None = None) -> np.ndarray:
    """Prompt token count per document of `split` (int64), checked against the document count."""
    info = load_meta(data_dir).get("splits", {}).get(split, {})
    name = info.get("prompt_lengths")
    if not name:
        raise InstructionDataError(f"--task prompt (or --task dolly) needs prompt/response data, but "
                                   f"{Path(data_dir) / META} has no prompt lengths for split {split!r}: {HOW}")
    path = Path(data_dir) / name
    if not path.is_file():
        raise InstructionDataError(f"prompt lengths file {path} is missing: {HOW} --overwrite")
    lengths = np.load(path).astype(np.int64)
    if documents is not None and len(lengths) != documents:
        raise InstructionDataError(f"{path} holds {len(lengths)} prompt lengths for {documents} documents: "
                                   f"{HOW} --overwrite")
    return lengths


def prompt_token_mask(data: IndexedDataset, lengths: np.ndarray) -> np.ndarray:
    """Bool per token of the concatenated stream: True where the token belongs to a record's prompt."""
    starts = np.asarray(data.document_starts[:-1], dtype=np.int64)
    if np.any(lengths > np.asarray(data.sizes)):
        raise InstructionDataError("a prompt length exceeds its document's length: the data folder is "
                                   f"inconsistent; {HOW} --overwrite")
    # +1 where a prompt starts, -1 where it ends: the running sum is 1 exactly inside prompts.
    edges = np.zeros(data.num_tokens + 1, dtype=np.int32)
    np.add.at(edges, starts, 1)
    np.add.at(edges, starts + lengths, -1)
    return np.cumsum(edges[:-1]) > 0


class PromptMaskedBlocks(Dataset):
    """`LMBlocks` over a prompt/response split; item i -> {"tokens": (seq_len+1,), "is_prompt": same, bool}."""

    def __init__(self, data: IndexedDataset, lengths: np.ndarray, seq_len: int) -> None:
        self.blocks = LMBlocks(data, seq_len)
        self.is_prompt = prompt_token_mask(data, lengths)
        self.seq_len = seq_len

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        tokens = self.blocks[i]
        start = (int(i) % len(self.blocks)) * self.seq_len
        flags = torch.from_numpy(self.is_prompt[start : start + self.seq_len + 1].copy())
        return {"tokens": tokens, "is_prompt": flags}


def task_blocks(data_dir: str | Path, split: str, seq_len: int, task: str) -> Dataset:
    """Training/validation blocks of a split: plain `LMBlocks` (task lm) or `PromptMaskedBlocks` (task
    prompt, alias dolly)."""
    data = open_split(data_dir, split)
    if is_prompt_task(task):
        return PromptMaskedBlocks(data, prompt_lengths(data_dir, split, len(data)), seq_len)
    return LMBlocks(data, seq_len)


def labels_from(tokens: torch.Tensor, is_prompt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L+1) tokens and prompt flags -> inputs (B, L) and labels (B, L), -100 where the target is prompt."""
    labels = tokens[:, 1:].masked_fill(is_prompt[:, 1:], -100)
    return tokens[:, :-1], labels


@dataclass
class InstructionExample:
    prompt: list[int]                  # prompt token ids (the template ends with "### Response:\n")
    response: list[int]                # response token ids, without the closing EOS
    reference: str | None = None       # the record's response text, when the records file is there
    record: dict = field(default_factory=dict)


def load_examples(data_dir: str | Path, split: str, limit: int | None = None) -> list[InstructionExample]:
    """The first `limit` (default all) records of `split` as prompt/response ids and reference text."""
    data = open_split(data_dir, split)
    lengths = prompt_lengths(data_dir, split, len(data))
    meta = load_meta(data_dir)
    info = meta["splits"][split]
    records: list[dict] = []
    if info.get("records") and (Path(data_dir) / info["records"]).is_file():
        text = (Path(data_dir) / info["records"]).read_text(encoding="utf-8")
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    eos = int(meta["eos_id"])
    n = len(data) if limit is None else min(limit, len(data))
    out = []
    for i in range(n):
        doc = np.asarray(data[i], dtype=np.int64).tolist()
        plen = int(lengths[i])
        response = doc[plen:]
        if response and response[-1] == eos:
            response = response[:-1]
        record = records[i] if i < len(records) else {}
        reference = record.get("response") if isinstance(record.get("response"), str) else None
        out.append(InstructionExample(doc[:plen], response, reference, record))
    if not out:
        raise InstructionDataError(f"split {split!r} of {data_dir} holds no records: {HOW}")
    return out


def clip_prompt(prompt: Sequence[int], max_len: int) -> list[int]:
    """Keep the last `max_len` prompt tokens: the instruction's end and "### Response:" matter most."""
    return list(prompt[-max_len:]) if max_len > 0 else list(prompt)
