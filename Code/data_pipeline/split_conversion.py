"""One split's documents to token files: `<split>.bin/.idx` (EOS after each document), the prompt/response
side files, and the input fingerprint that lets a rerun keep a finished split."""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from Code.data_pipeline.data_layout import write_prompt_side_files
from Code.data_pipeline.doc_encoding import Doc, encode_documents
from Code.data_pipeline.indexed_dataset import IndexedDataset, IndexedDatasetBuilder, IndexedDatasetError, best_dtype

FORMAT = "megatron-mmidx-v1"  # bump when the bytes written for the same inputs change


def docs_fingerprint(docs: Sequence[Doc], *extra: str) -> str:
    """sha256 of the documents (and of `extra`: tokenizer hash, format); length-prefixed, so unambiguous."""
    h = hashlib.sha256("\0".join(extra).encode())
    for d in docs:
        for part in d if isinstance(d, tuple) else (d,):
            b = part.encode("utf-8")
            h.update(len(b).to_bytes(8, "little") + (b"P" if isinstance(d, tuple) else b"T") + b)
    return h.hexdigest()


def convert_split(
    docs: Sequence[Doc], tok, prefix: Path, workers: int = 0, desc: str = "", progress: bool = True
) -> dict:
    """Tokenize `docs` (EOS after each) into `<prefix>.bin/.idx`; returns tokens, documents, sha256,
    seconds, and `prompt_lengths` (np.int32 per document) when documents are (prompt, response) pairs."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    tokens = 0
    prompt_lengths: list[int] = []
    with (
        IndexedDatasetBuilder(prefix, best_dtype(len(tok))) as builder,
        tqdm(total=len(docs), desc=desc, unit="doc", mininterval=0.5, file=sys.stderr, leave=False,
             disable=not progress) as bar,
    ):
        for batch in encode_documents(tok, docs, workers=workers):
            for ids, plen in batch:
                builder.add_document(ids)
                tokens += len(ids)
                if plen is not None:
                    prompt_lengths.append(plen)
            bar.update(len(batch))
            bar.set_postfix_str(f"{tokens / (time.perf_counter() - t0):,.0f} tok/s", refresh=False)
        info = builder.finalize()
    info["seconds"] = round(time.perf_counter() - t0, 3)
    if prompt_lengths:
        info["prompt_lengths"] = np.asarray(prompt_lengths, dtype=np.int32)
    return info


def write_split(out: Path, split: str, docs: Sequence[Doc], records: list[dict] | None, tok, fingerprint: str,
                workers: int = 0) -> dict:
    """Token files of one split and, for (prompt, response) documents, their side files (prompt lengths, the
    raw records); returns the split's meta.json entry."""
    info = convert_split(docs, tok, Path(out) / split, workers=workers, desc=split)
    info["input_fingerprint"] = fingerprint
    plens = info.pop("prompt_lengths", None)
    if plens is not None:
        info.update(write_prompt_side_files(out, split, plens, records))
    return info


def split_is_current(info: dict | None, fingerprint: str, prefix: Path) -> bool:
    """Whether a split's meta.json entry describes token (and side) files made from the same inputs."""
    if not info or info.get("input_fingerprint") != fingerprint:
        return False
    try:
        ds = IndexedDataset(prefix)
    except IndexedDatasetError:
        return False
    extras = [info[k] for k in ("prompt_lengths", "records") if k in info]
    return (ds.num_tokens, len(ds)) == (info["tokens"], info["documents"]) and all(
        (Path(prefix).parent / name).is_file() for name in extras
    )
