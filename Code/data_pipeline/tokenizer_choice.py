"""The tokenizer a conversion uses: a byte-level BPE trained on the train split (reused while its training
documents are unchanged) or a loaded one; either way saved in the data folder's `tokenizer/`."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from Code.data_pipeline.doc_encoding import Doc
from Code.data_pipeline.split_conversion import docs_fingerprint
from Code.data_pipeline.tokenization import load_tokenizer, save_tokenizer, tokenizer_fingerprint, train_bpe_tokenizer


def pick_tokenizer(name: str, train_vocab: int | None, train_docs: Sequence[Doc], tok_dir: Path, previous: dict):
    """(tokenizer, its name for meta.json, the BPE training fingerprint or None). `previous` is the folder's
    old meta.json ({} when there is none or --overwrite): a tokenizer trained on the same documents is
    reused from `tok_dir`, a loaded one is saved there only when it changed."""
    tok_dir = Path(tok_dir)
    if train_vocab:
        fp = docs_fingerprint(train_docs, f"bpe-{train_vocab}")
        label = f"byte-level BPE {train_vocab} (trained on this train split)"
        if previous.get("tokenizer_training") == fp and tok_dir.is_dir():
            return load_tokenizer(str(tok_dir)), label, fp
        texts = (d if isinstance(d, str) else d[0] + d[1] for d in train_docs)
        print(f"training a byte-level BPE of {train_vocab} tokens on {len(train_docs)} documents", file=sys.stderr)
        return train_bpe_tokenizer(texts, train_vocab, tok_dir), label, fp
    tok = load_tokenizer(name)
    if previous.get("tokenizer_sha256") != tokenizer_fingerprint(tok) or not tok_dir.is_dir():
        save_tokenizer(tok, tok_dir)
    return tok, name, None
