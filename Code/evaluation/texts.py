"""Raw text to score (`--text-file`, `--ood-text`), through one path: `read_texts` (UTF-8, else Latin-1;
Project Gutenberg's licence header and footer cut off; out-of-domain text put into the training text's
conventions, `Code.evaluation.ood_format`) then `text_tokens` (the run's tokenizer, at most
`--max-tokens` in all, shared fairly between the files). Light at import (numpy loads when tokens are made).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from Code.evaluation.common import EvalError
from Code.evaluation.ood_format import to_conventions

if TYPE_CHECKING:  # numpy loads with the models, not at import
    import numpy as np


@dataclass(frozen=True)
class TextSource:
    """One raw-text file as it will be tokenized."""

    path: Path
    text: str = field(repr=False)
    gutenberg_stripped: bool = False  # a Project Gutenberg header or footer was cut off
    conventions: str = "raw"  # the layout `text` was put into (ood_format.FORMATS); raw: as read


# Project Gutenberg's own markers around a book: "*** START OF THE PROJECT GUTENBERG EBOOK <TITLE> ***" ends
# the header, "*** END OF THE PROJECT GUTENBERG EBOOK <TITLE> ***" (or the "End of the Project Gutenberg
# EBook of <title>" line that older files put just before it) starts the footer (the licence).
GUTENBERG_START = re.compile(r"^[ \t]*\*{3}[ \t]*START OF (?:THE |THIS )?PROJECT GUTENBERG[^\n]*\n?", re.I | re.M)
GUTENBERG_END = re.compile(r"^[ \t]*(?:\*{3}[ \t]*END OF (?:THE |THIS )?PROJECT GUTENBERG|End of (?:the )?Project "
                           r"Gutenberg)", re.I | re.M)


def strip_gutenberg(text: str) -> tuple[str, bool]:
    """The book's own text: everything before the first end marker and after the last start marker before
    it (both lines dropped); text with neither marker comes back unchanged. Returns (text, stripped)."""
    end = GUTENBERG_END.search(text)
    body = text[: end.start()] if end else text
    starts = list(GUTENBERG_START.finditer(body))
    if starts:
        body = body[starts[-1].end():]
    return (body, True) if end or starts else (text, False)


def read_text_file(path: Path) -> str:
    """A text file as str: UTF-8 (a byte-order mark dropped), else Latin-1 (older Gutenberg files); universal
    newlines, as `Path.read_text` gives them."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def ood_files(specs: list[str]) -> list[Path]:
    """--ood-text arguments as files: a file as given, a folder as its *.txt files in name order."""
    files: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = sorted(p for p in path.glob("*.txt") if p.is_file())
            if not found:
                raise EvalError(f"--ood-text {path} is a folder without .txt files")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise EvalError(f"--ood-text {path} not found")
    return files


def read_texts(paths: list[Path], flag: str, conventions: str = "raw") -> list[TextSource]:
    """Each file read, stripped of Project Gutenberg boilerplate and put into `conventions` (raw: as read);
    a missing or empty file is an error."""
    out = []
    for path in paths:
        if not path.is_file():
            raise EvalError(f"{flag} {path} not found")
        text, stripped = strip_gutenberg(read_text_file(path))
        if not text.strip():
            raise EvalError(f"{flag} {path} is empty" + (" once its Project Gutenberg header and footer are cut off"
                                                        if stripped else ""))
        out.append(TextSource(path, to_conventions(text, conventions), stripped, conventions))
    return out


def _check_tokenizer(tokenizer, vocab_sizes: dict[str, int], flag: str) -> None:
    if tokenizer is None:
        raise EvalError(f"{flag} needs a tokenizer: none in the checkpoint, and no --data-dir/tokenizer")
    for what, size in vocab_sizes.items():
        if len(tokenizer) > size:
            raise EvalError(f"tokenizer has {len(tokenizer)} tokens but the {what} only {size}; "
                            "use the tokenizer the models were trained with")


MARGIN = 64  # tokens encoded past a cap, so that the kept ones do not depend on where the text was cut


def _encode(tokenizer, text: str, limit: int | None) -> tuple[list[int], bool]:
    """(token ids of `text`, at most `limit`; whether they are all of its tokens). With a limit only a prefix
    is encoded (cut at a line break, grown until it yields MARGIN tokens past the limit): the kept ids are
    those of the whole text's encoding, since the pre-tokenizer splits at white space, and a 4 MB book is not
    encoded for its first 3,000 tokens."""
    chars = 8 * (limit + MARGIN) if limit is not None else len(text)
    while True:
        cut = text.find("\n", chars)
        prefix = text if cut < 0 else text[: cut + 1]
        ids = tokenizer(prefix, verbose=False)["input_ids"]
        whole = len(prefix) == len(text)
        if limit is None:
            return ids, True
        if whole or len(ids) >= limit + MARGIN:
            return ids[:limit], whole and len(ids) <= limit
        chars *= 4


def fair_shares(sizes: list[int], cap: int | None) -> list[int]:
    """How many tokens to take from each file: all without a cap; with one, an equal share each, what a
    short file leaves over going to the others (every file represented, the total the cap when there is
    that much text)."""
    if not cap:
        return list(sizes)
    shares, left = [0] * len(sizes), cap
    order = sorted(range(len(sizes)), key=lambda i: sizes[i])
    for rank, i in enumerate(order):
        shares[i] = min(sizes[i], left // (len(sizes) - rank))
        left -= shares[i]
    return shares


def _capped(tokenizer, texts: list[TextSource], cap: int | None) -> list[list[int]]:
    """Each file's tokens, at most its fair share of `cap`; files are encoded only as far as their share
    needs, their share growing while shorter files leave some over."""
    if not cap:
        return [_encode(tokenizer, t.text, None)[0] for t in texts]
    want = fair_shares([cap] * len(texts), cap)
    encoded: list[tuple[list[int], bool] | None] = [None] * len(texts)
    while True:
        for i, t in enumerate(texts):
            have = encoded[i]
            if have is None or (not have[1] and len(have[0]) < want[i]):
                encoded[i] = _encode(tokenizer, t.text, want[i])
        # a file encoded only in part has at least its share: for the sharing it counts as plenty
        sizes = [len(ids) if complete else cap for ids, complete in encoded]
        shares = fair_shares(sizes, cap)
        if shares == want:
            return [ids[:share] for (ids, _), share in zip(encoded, shares, strict=True)]
        want = shares


def text_tokens(texts: list[TextSource], tokenizer, vocab_sizes: dict[str, int], max_tokens: int | None,
                flag: str) -> tuple[np.ndarray, list[int]]:
    """Raw text as one int64 token stream, at most `max_tokens` in all (shared fairly between the files),
    files joined by the tokenizer's end-of-text token (the separators count); also the tokens from each file."""
    import numpy as np

    _check_tokenizer(tokenizer, vocab_sizes, flag)
    eos = getattr(tokenizer, "eos_token_id", None)
    separators = len(texts) - 1 if eos is not None else 0
    cap = max(1, max_tokens - separators) if max_tokens else None
    stream: list[int] = []
    parts = _capped(tokenizer, texts, cap)
    for k, ids in enumerate(parts):
        if k and eos is not None:
            stream.append(eos)
        stream += ids
    return np.asarray(stream[:max_tokens] if max_tokens else stream, dtype=np.int64), [len(p) for p in parts]
