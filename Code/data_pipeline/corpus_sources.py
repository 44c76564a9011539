"""Read a corpus as it comes: plain-text files split into documents, JSON-lines records, or the splits of a
Hugging Face hub dataset (from the hub or its local cache). Turning records into documents is
`record_formats.py`'s job; choosing the source for a `--dataset` is `corpus_splits.py`'s.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from itertools import islice
from pathlib import Path

from Code.data_pipeline.tokenization import HubUnreachableError
from Code.hub import hub_reachable

HUB_SPLIT_NAMES = {"train": "train", "validation": "valid", "valid": "valid", "test": "test"}
OFFLINE_HOW = "python Code/data_download.py --dataset text --train FILE... [--valid FILE... --test FILE...]"

# A WikiText level-1 heading " = Title = " (not " = = Section = = "): one article per heading.
_TITLE = re.compile(r"^ ?= (?!=)(.*[^=\s]) = ?$")


class SourceError(ValueError):
    """A corpus that cannot be read or split as asked."""


def split_documents(lines: Iterable[str]) -> list[str]:
    """Documents of one text: a WikiText article per level-1 heading when the text has any, else a
    block per run of non-blank lines. Lines are kept verbatim (with their newlines) except the blank
    lines around each document, so a document decodes back to exactly its lines."""
    lines = list(lines)
    articles = any(_TITLE.match(line.rstrip("\r\n")) for line in lines)
    docs: list[str] = []
    current: list[str] = []

    def flush() -> None:
        while current and not current[-1].strip():
            current.pop()
        if current:
            docs.append("".join(current))
        current.clear()

    for line in lines:
        blank = not line.strip()
        if articles and _TITLE.match(line.rstrip("\r\n")):
            flush()
        elif not articles and blank:
            flush()
            continue
        if blank and not current:  # no leading blank lines
            continue
        current.append(line)
    flush()
    return docs


def read_utf8(path: Path) -> str:
    """A local file's text, or one line saying why it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SourceError(f"no such file: {path}") from None
    except UnicodeDecodeError as e:
        raise SourceError(f"{path} is not UTF-8 text (byte {e.start}): convert it to UTF-8 first") from None


def read_text_documents(paths: Sequence[Path]) -> list[str]:
    """Documents of plain-text files, split per file (WikiText articles or blank-line blocks)."""
    docs: list[str] = []
    for p in paths:
        text = read_utf8(p)
        found = split_documents(text.splitlines(keepends=True))
        if not found:
            raise SourceError(f"{p} holds no text")
        docs.extend(found)
    return docs


def read_jsonl(paths: Sequence[Path]) -> list[dict]:
    """Records of JSON-lines files (one object per line; a file holding one JSON list also works)."""
    records: list[dict] = []
    for p in paths:
        text = read_utf8(p)
        try:
            if text.lstrip().startswith("["):
                records.extend(json.loads(text))
            else:
                records.extend(json.loads(line) for line in text.splitlines() if line.strip())
        except json.JSONDecodeError as e:
            raise SourceError(f"{p} is not JSON lines ({e.msg} at line {e.lineno}): one object per line") from None
    return records


def load_hub_dataset(
    hub_id: str, config: str | None, label: str, max_docs: int | None = None, cache_dir: str | None = None
) -> dict[str, list]:
    """All splits of a hub dataset as lists of records (train/valid/test names), from the hub or its cache.

    Offline, the hub libraries are switched to offline mode first so this fails in seconds."""
    online = hub_reachable()
    import datasets

    datasets.logging.set_verbosity_error()
    try:
        if max_docs and online:  # stream: a subset should not download the whole corpus
            dd = datasets.load_dataset(hub_id, config, streaming=True, cache_dir=cache_dir)
            return {HUB_SPLIT_NAMES[s]: list(islice(dd[s], max_docs)) for s in dd if s in HUB_SPLIT_NAMES}
        dd = datasets.load_dataset(hub_id, config, cache_dir=cache_dir)
    except Exception as e:  # the hub stack raises many types; each becomes one line
        if not online:
            raise HubUnreachableError(
                f"the Hugging Face hub is unreachable and {label} ({hub_id}) is not in the local datasets "
                f"cache; offline, convert local files instead: {OFFLINE_HOW}"
            ) from None
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise SourceError(f"cannot load {hub_id} {config or ''} from the hub: {first}") from None
    out: dict[str, list] = {}
    for s in dd:
        if s in HUB_SPLIT_NAMES:
            ds = dd[s] if not max_docs else dd[s].select(range(min(max_docs, len(dd[s]))))
            out[HUB_SPLIT_NAMES[s]] = ds.to_list()
    return out
