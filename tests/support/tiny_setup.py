"""Builders shared by end-to-end tests: a tiny GPT-2 teacher and indexed data from the real corpus."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from transformers import GPT2Config, GPT2LMHeadModel

REPO = Path(__file__).resolve().parents[2]
CODE = REPO / "Code"
VOCAB = 2048  # a small trained BPE keeps CPU steps cheap (GPT-2's 50,257-wide softmax dominates otherwise)


def make_teacher(path: Path, vocab_size: int = VOCAB, n_layer: int = 4, n_embd: int = 64, seed: int = 0) -> Path:
    """A randomly initialised GPT-2 saved with save_pretrained: what a user's local teacher looks like."""
    import torch

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab_size, n_positions=128, n_embd=n_embd, n_layer=n_layer, n_head=4,
                        bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(config).save_pretrained(path)
    return path


def make_data(corpus: Path, out_dir: Path, vocab: int = VOCAB) -> Path:
    """WikiText-2's valid split as train, its test split as valid and test, a small BPE trained on train."""
    wiki = corpus / "wikitext-2"
    cmd = [sys.executable, str(CODE / "data_download.py"), "--dataset", "text",
           "--train", str(wiki / "valid.txt"), "--valid", str(wiki / "test.txt"),
           "--test", str(wiki / "test.txt"), "--out-dir", str(out_dir), "--train-tokenizer", str(vocab)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, env=quiet_env())
    return out_dir


def data_and_teacher(corpus: Path, root: Path) -> tuple[Path, Path, Path]:
    """(data, teacher, root): a run's inputs under `root`, what most end-to-end tests' module fixture builds."""
    return make_data(corpus, root / "data"), make_teacher(root / "teacher"), root


def quiet_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env.update(extra)
    return env


def run_ok(cmd: list[str], env: dict[str, str], timeout: int = 600, cwd: Path = REPO) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def free_port() -> str:
    """A TCP port free on this host now: a MASTER_PORT for a launcher that must not collide with another test's."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])
