"""A small real-text data folder, a tiny teacher and its top-k cache, for the teacher-cache tests (fast tier).

A few tens of thousands of characters of WikiText-2 (the first articles of its valid and test splits), so a
4-layer teacher runs over the whole train split in a second or two.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from transformers import GPT2Config, GPT2LMHeadModel

from tests.support.tiny_setup import CODE, quiet_env

SEQ_LEN, TOP_K = 32, 16


def small_data(corpus: Path, out_dir: Path, chars: int = 40_000, vocab: int = 512) -> Path:
    wiki = corpus / "wikitext-2"
    texts = out_dir.parent / f"{out_dir.name}-text"
    texts.mkdir(parents=True, exist_ok=True)
    for split, source in (("train", "valid.txt"), ("valid", "test.txt")):
        (texts / f"{split}.txt").write_text((wiki / source).read_text(encoding="utf-8")[:chars], encoding="utf-8")
    cmd = [sys.executable, str(CODE / "data_download.py"), "--dataset", "text", "--train", str(texts / "train.txt"),
           "--valid", str(texts / "valid.txt"), "--test", str(texts / "valid.txt"), "--out-dir", str(out_dir),
           "--train-tokenizer", str(vocab)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, env=quiet_env())
    return out_dir


def peaked_teacher(path: Path, vocab_size: int = 512, seed: int = 0) -> Path:
    """A random 4-layer GPT-2 with a wide initialisation: its next-token distributions are peaked (a top few
    tokens hold most of the mass, as a trained model's do), so top-k KD has something to match; GPT-2's 0.02
    gives near-uniform ones."""
    import torch

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab_size, n_positions=128, n_embd=64, n_layer=4, n_head=4, bos_token_id=0,
                        eos_token_id=0, initializer_range=0.3)
    GPT2LMHeadModel(config).save_pretrained(path)
    return path


def cache_world(root: Path, corpus: Path) -> tuple[Path, Path, Path]:
    """(data folder, teacher folder, cache folder) with the cache written by Code/cache_teacher.py."""
    from Code.cache_teacher import main

    data = small_data(corpus, root / "data")
    teacher = peaked_teacher(root / "teacher")
    cache = root / "cache"
    argv = ["--teacher", str(teacher), "--data-dir", str(data), "--seq-len", str(SEQ_LEN), "--top-k", str(TOP_K),
            "--out-dir", str(cache), "--batch-size", "16"]
    assert main(argv) == 0
    return data, teacher, cache
