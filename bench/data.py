"""Data pipeline benchmark: tokenization throughput as a ratio to the tokenizer's raw `encode_batch`, and
random block reads per second.

    python bench/data.py            # WikiText-2 train (10.8 MB), 3 rounds
    python bench/data.py --quick    # WikiText-2 valid (1.1 MB), 4 rounds: under a minute

Every timed run starts with the BPE cache cleared (a real conversion starts cold); methods run back to
back in each round, in rotating order; a ratio is the median over rounds of the paired time ratios.
Prints a table, then one JSON line (`tokenize_ratio`, `blocks_per_s`, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from Code.data_pipeline.corpus_sources import read_text_documents
from Code.data_pipeline.indexed_dataset import IndexedDataset
from Code.data_pipeline.lm_datasets import LMBlocks
from Code.data_pipeline.split_conversion import convert_split
from Code.data_pipeline.tokenization import load_tokenizer

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus" / "wikitext-2"


def timed(fn, clear) -> float:
    clear()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def block_reads(prefix: Path, seq_len: int, seconds: float, seed: int = 0) -> tuple[float, int]:
    """Random LMBlocks items (LongTensor of seq_len+1) per second over a fresh memory map."""
    blocks = LMBlocks(IndexedDataset(prefix), seq_len)
    order = np.random.default_rng(seed).integers(0, len(blocks), size=1_000_000)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for i in order[n : n + 1000]:
            blocks[int(i)]
        n += 1000
    return n / (time.perf_counter() - t0), len(blocks)


def tokenize_times(docs, tok, prefix: Path, workers: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per round of each method, methods back to back in rotating order, BPE cache cleared each run."""
    backend = tok.backend_tokenizer
    clear = getattr(backend.model, "_clear_cache", lambda: None)
    methods = {
        "raw encode_batch": lambda: backend.encode_batch(docs, add_special_tokens=False),
        "raw encode_batch_fast": lambda: backend.encode_batch_fast(docs, add_special_tokens=False),
        "pipeline, threads (workers=0)": lambda: convert_split(docs, tok, prefix, workers=0, progress=False),
        f"pipeline, {workers} processes": lambda: convert_split(docs, tok, prefix, workers=workers, progress=False),
    }
    names = list(methods)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(timed(methods[name], clear))
    return times


def paired(times: dict[str, list[float]], name: str, base: str = "raw encode_batch") -> float:
    """Median over rounds of base time / method time: each pair ran back to back, so load drifts
    on a shared machine cancel out better than in a ratio of bests."""
    return float(np.median(np.asarray(times[base]) / np.asarray(times[name])))


def summary(times: dict[str, list[float]], docs, mb: float, tokens: int, args, rounds: int,
            blocks_per_s: float, n_blocks: int) -> dict:
    """Print the table; return the JSON line's fields."""
    names = list(times)
    best = {name: min(t) for name, t in times.items()}
    print(f"{mb:.1f} MB, {len(docs)} documents, {tokens:,} tokens, {os.cpu_count()} cores, {rounds} rounds")
    print(f"{'method':34s} {'best s':>8s} {'tokens/s':>12s} {'ratio':>7s}  (ratio: median per round vs raw)")
    for name in names:
        print(f"{name:34s} {best[name]:8.2f} {tokens / best[name]:12,.0f} {paired(times, name):7.2f}")
    print(f"random block reads (seq_len {args.seq_len}, {n_blocks} blocks): {blocks_per_s:,.0f} blocks/s")
    return {
        "bench": "data",
        "quick": args.quick,
        "text_mb": round(mb, 2),
        "documents": len(docs),
        "tokens": tokens,
        "cores": os.cpu_count(),
        "raw_tokens_per_s": round(tokens / best[names[0]]),
        "raw_fast_tokens_per_s": round(tokens / best[names[1]]),
        "pipeline_tokens_per_s": round(tokens / best[names[2]]),
        "tokenize_ratio": round(paired(times, names[2]), 3),
        "tokenize_ratio_best": round(best[names[0]] / best[names[2]], 3),
        "tokenize_ratio_vs_fast": round(paired(times, names[2], names[1]), 3),
        "tokenize_ratio_processes": round(paired(times, names[3]), 3),
        "blocks_per_s": round(blocks_per_s),
        "seq_len": args.seq_len,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/data.py", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="1.1 MB of text, 4 rounds (under a minute)")
    p.add_argument("--text", type=Path, help="text file to tokenize (default: WikiText-2 train, valid if --quick)")
    p.add_argument("--tokenizer", default="gpt2")
    p.add_argument("--rounds", type=int, help="timed rounds per method (default 3, 4 with --quick)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for the process-pool mode")
    p.add_argument("--seq-len", type=int, default=1024)
    args = p.parse_args(argv)
    text = args.text or CORPUS / ("valid.txt" if args.quick else "train.txt")
    if not text.is_file():
        print(f"error: {text} not found: pass --text FILE", file=sys.stderr)
        return 2
    rounds = args.rounds or (4 if args.quick else 3)
    tok = load_tokenizer(args.tokenizer)
    docs = read_text_documents([text])
    mb = sum(len(d.encode()) for d in docs) / 1e6
    tokens = sum(len(e.ids) for e in tok.backend_tokenizer.encode_batch_fast(docs, add_special_tokens=False))
    with tempfile.TemporaryDirectory() as tmp:
        prefix = Path(tmp) / "bench"
        times = tokenize_times(docs, tok, prefix, args.workers, rounds)
        convert_split(docs, tok, prefix, workers=0, progress=False)
        blocks_per_s, n_blocks = block_reads(prefix, args.seq_len, 1.0 if args.quick else 3.0)
    print(json.dumps(summary(times, docs, mb, tokens, args, rounds, blocks_per_s, n_blocks)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
