"""A small databricks-dolly-15k-format fixture made from real text (WikiText-2 articles), for offline tests.

Records carry dolly's fields (instruction, context, response, category). Three kinds, like dolly's
open_qa, summarization and information_extraction: "Tell me about <title>." -> the article's first
sentence; "Summarize ..." with the opening paragraph as context -> its first sentence; "List the
sections ..." -> the article's section headings.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.support.tiny_setup import CODE, quiet_env

_TITLE = re.compile(r"^ = ([^=].*[^=]) = $")
_SECTION = re.compile(r"^ = = ([^=].*[^=]) = = $")


def _clean(text: str) -> str:
    """Undo WikiText's tokenization (" @-@ ", " , ", ...) so the records read like dolly's."""
    text = re.sub(r" @(.)@ ", r"\1", text)
    text = re.sub(r" ([,.;:!?)'])", r"\1", text)
    text = re.sub(r"([(]) ", r"\1", text)
    return re.sub(r"\s+", " ", text).strip()


def _sentences(paragraph: str, k: int) -> str:
    parts = re.split(r"(?<=[a-z]{4}[.!?]) (?=[A-Z])", paragraph)  # not after "U.S." or "lit."
    return " ".join(parts[:k])


def _words(text: str, n: int) -> str:
    words = text.split()
    return " ".join(words[:n]) + ("." if len(words) > n and not words[n - 1].endswith(".") else "")


def articles(path: Path) -> list[dict]:
    """Title, first paragraph and section headings of each WikiText article."""
    out: list[dict] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        title, section = _TITLE.match(line), _SECTION.match(line)
        if title:
            out.append({"title": _clean(title.group(1)), "paragraph": "", "sections": []})
        elif section and out:
            out[-1]["sections"].append(_clean(section.group(1)))
        elif out and line.strip() and not out[-1]["paragraph"]:
            out[-1]["paragraph"] = _clean(line)
    return [a for a in out if len(a["paragraph"].split()) >= 12]


def records(path: Path) -> list[dict]:
    recs = []
    for i, a in enumerate(articles(path)):
        first = _words(_sentences(a["paragraph"], 1), 40)
        kind = i % 3
        if kind == 0 or (kind == 2 and len(a["sections"]) < 2):
            recs.append({"instruction": f"Tell me about {a['title']}.", "context": "", "response": first,
                         "category": "open_qa"})
        elif kind == 1:
            recs.append({"instruction": f"Summarize this passage about {a['title']} in one sentence.",
                         "context": _words(_sentences(a["paragraph"], 2), 60), "response": first,
                         "category": "summarization"})
        else:
            recs.append({"instruction": f"List the sections of the Wikipedia article on {a['title']}.",
                         "context": "", "response": ", ".join(a["sections"][:6]),
                         "category": "information_extraction"})
    return recs


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def make_dolly_files(corpus: Path, out_dir: Path, n_train: int = 240, n_valid: int = 24,
                     n_test: int = 24) -> dict[str, Path]:
    """train/valid/test JSONL files in dolly's format, from WikiText-2's train articles."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = records(corpus / "wikitext-2" / "train.txt")
    assert len(rows) >= n_train + n_valid + n_test, len(rows)
    splits = {"train": rows[:n_train], "valid": rows[n_train : n_train + n_valid],
              "test": rows[n_train + n_valid : n_train + n_valid + n_test]}
    return {s: write_jsonl(out_dir / f"dolly_{s}.jsonl", r) for s, r in splits.items()}


def make_dolly_data(corpus: Path, root: Path, vocab: int = 1024) -> Path:
    """An indexed dolly data folder (prompt lengths, records, a small BPE trained on it) under root/dolly."""
    files = make_dolly_files(corpus, root / "jsonl")
    out = root / "dolly"
    cmd = [sys.executable, str(CODE / "data_download.py"), "--dataset", "dolly", "--train", str(files["train"]),
           "--valid", str(files["valid"]), "--test", str(files["test"]), "--out-dir", str(out),
           "--train-tokenizer", str(vocab)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=quiet_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out
