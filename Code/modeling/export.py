"""Make a saved student folder usable by the tools people point at it, with their defaults.

`transformers.pipeline("text-generation", model=folder)` asks for 256 new tokens unless the generation config
sets a length; a 128-position student then indexes past its position table (IndexError). And a tokenizer
copied from GPT-2 says `model_max_length: 1024` whatever the student holds. Both files get the model's own
context length here.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import AutoConfig

from Code.modeling.families import context_length
from Code.utils import atomic_write_json

GENERATION_CONFIG = "generation_config.json"
TOKENIZER_CONFIG = "tokenizer_config.json"


def _read(path: Path) -> dict:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return data


def write_context_length(folder: str | Path) -> int:
    """Record the model's context length in `generation_config.json` (`max_length`, with no `max_new_tokens`
    that would outgrow it) and, when the folder has a tokenizer, in `tokenizer_config.json`
    (`model_max_length`). Returns the length written."""
    folder = Path(folder)
    n = context_length(AutoConfig.from_pretrained(str(folder)))
    gen_path = folder / GENERATION_CONFIG
    gen = _read(gen_path)
    gen["max_length"] = n
    if int(gen.get("max_new_tokens") or 0) >= n:
        gen.pop("max_new_tokens")
    atomic_write_json(gen_path, gen)
    tok_path = folder / TOKENIZER_CONFIG
    if tok_path.is_file():
        tok = _read(tok_path)
        tok["model_max_length"] = n
        atomic_write_json(tok_path, tok)
    return n
