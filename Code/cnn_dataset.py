"""CNN/DailyMail (abisee/cnn_dailymail 3.0.0) as prompt/response documents for LM data and summarization.

A record is `{article, highlights, id}`. For LM use the document is the article followed by a
`TL;DR:` cue (the prompt) and the highlights (the response, what a summarizer should produce); the
prompt length is kept so training or ROUGE evaluation can score the summary alone.
"""

from __future__ import annotations

from pathlib import Path

HUB_ID = "abisee/cnn_dailymail"
CONFIG = "3.0.0"
FIELDS = ("article", "highlights")
CUE = "\n\nTL;DR:"


class CNNFormatError(ValueError):
    """A record that lacks CNN/DailyMail's fields."""


def format_record(record: dict) -> tuple[str, str]:
    """(prompt, response): article + TL;DR cue, then the highlights after one space."""
    missing = [f for f in FIELDS if not isinstance(record.get(f), str)]
    if missing:
        raise CNNFormatError(
            f"CNN/DailyMail record lacks text field(s) {missing} (has {sorted(record)}): "
            "local files must be JSON lines with 'article' and 'highlights'"
        )
    return record["article"].strip() + CUE, " " + record["highlights"].strip()


def load_cnn_dailymail(
    split: str = "test",
    max_docs: int | None = None,
    cache_dir: str | None = None,
    files: list[Path] | None = None,
) -> list[dict]:
    """Records of one split (`train`, `valid`/`validation`, `test`) from the hub, its cache, or local
    JSON-lines files with the hub's fields."""
    # data_download owns hub access and JSON-lines reading; imported here to keep this module light
    from Code.data_download import load_hub_dataset, read_jsonl

    if files:
        records = read_jsonl(files)
    else:
        splits = load_hub_dataset(HUB_ID, CONFIG, "cnn_dailymail", max_docs=max_docs, cache_dir=cache_dir)
        name = "valid" if split == "validation" else split
        if name not in splits:
            raise CNNFormatError(f"CNN/DailyMail has no split {split!r}: use train, valid or test")
        records = splits[name]
    return records[:max_docs] if max_docs else records
