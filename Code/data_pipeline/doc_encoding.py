"""Documents to token ids, fast: batches encoded by the tokenizers library's own thread pool (or by
worker processes), EOS after each document, prompt length kept for (prompt, response) documents.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

# A document is plain text, or a (prompt, response) pair whose prompt length is kept for masking.
Doc = str | tuple[str, str]

_WORKER: dict = {}


def _worker_init(tokenizer_json: str) -> None:
    from tokenizers import Tokenizer

    _WORKER["tok"] = Tokenizer.from_str(tokenizer_json)


def _encode(backend, docs: Sequence[Doc], eos_id: int) -> list[tuple[np.ndarray, int | None]]:
    """One batch: texts (and prompts/responses) in one parallel call; EOS appended per document."""
    texts: list[str] = []
    for d in docs:
        texts.extend(d if isinstance(d, tuple) else (d,))
    ids = [e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=False)]
    out: list[tuple[np.ndarray, int | None]] = []
    k = 0
    for d in docs:
        if isinstance(d, tuple):
            prompt, response = ids[k], ids[k + 1]
            k += 2
            out.append((np.array(prompt + response + [eos_id], dtype=np.int64), len(prompt)))
        else:
            out.append((np.array(ids[k] + [eos_id], dtype=np.int64), None))
            k += 1
    return out


def _worker_encode(args: tuple[Sequence[Doc], int]) -> list[tuple[np.ndarray, int | None]]:
    return _encode(_WORKER["tok"], *args)


def _batches(docs: Iterable[Doc], batch_chars: int, max_docs: int = 8192) -> Iterator[list[Doc]]:
    batch: list[Doc] = []
    size = 0
    for d in docs:
        batch.append(d)
        size += len(d) if isinstance(d, str) else len(d[0]) + len(d[1])
        if size >= batch_chars or len(batch) >= max_docs:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def encode_documents(
    tok, docs: Iterable[Doc], workers: int = 0, batch_chars: int = 1 << 22
) -> Iterator[list[tuple[np.ndarray, int | None]]]:
    """Yield, batch by batch and in order, `(token ids + EOS, prompt length or None)` per document.

    workers=0 encodes in this process with the tokenizers library's own thread pool (every core);
    workers=N>0 uses N processes with one thread each. Special tokens are not added (no BOS): GPT-2
    style LM data is documents separated by EOS.
    """
    if workers <= 0:
        return _encode_in_threads(tok.backend_tokenizer, docs, tok.eos_token_id, batch_chars)
    return _encode_in_processes(tok.backend_tokenizer, docs, tok.eos_token_id, batch_chars, workers)


def _encode_in_threads(backend, docs: Iterable[Doc], eos_id: int, batch_chars: int) -> Iterator[list]:
    # The Rust call releases the GIL: encode batch k+1 in a helper thread while the caller stores
    # batch k, so the serial Python part (ids -> arrays -> file) hides behind the parallel part.
    with ThreadPoolExecutor(max_workers=1) as ahead:
        pending = None
        for batch in _batches(docs, batch_chars):
            future = ahead.submit(_encode, backend, batch, eos_id)
            if pending is not None:
                yield pending.result()
            pending = future
        if pending is not None:
            yield pending.result()


def _encode_in_processes(backend, docs: Iterable[Doc], eos_id: int, batch_chars: int, workers: int) -> Iterator[list]:
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    chunk = max(1 << 16, batch_chars // (4 * workers))  # several chunks per worker keep all busy
    # one thread per worker; set only while forking so this process keeps its own thread pool
    saved = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        pool = ctx.Pool(workers, initializer=_worker_init, initargs=(backend.to_str(),))
    finally:
        if saved is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = saved
    with pool:
        jobs = ((b, eos_id) for b in _batches(docs, chunk))
        yield from pool.imap(_worker_encode, jobs)
