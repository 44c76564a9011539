"""CNN/DailyMail (abisee/cnn_dailymail 3.0.0) records as prompt/response documents for LM data and summarization.

A record is `{article, highlights, id}`. For LM use the document is the article followed by a
`TL;DR:` cue (the prompt) and the highlights (the response, what a summarizer should produce); the
prompt length is kept so training or ROUGE evaluation can score the summary alone.
"""

from __future__ import annotations

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
