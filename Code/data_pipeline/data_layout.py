"""A converted data folder's layout: split names, meta.json, and the side files of a prompt/response split
(`<split>_prompt_len.npy`, int32 prompt tokens per document; `<split>_records.jsonl`, the raw record of each).

Written by `data_download.py` and `seqkd_generate.py`, read through `meta.json` by `lm_datasets.py` and
`instruction_data.py`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

SPLITS = ("train", "valid", "test")
META = "meta.json"


def write_prompt_side_files(out: Path, split: str, prompt_lengths: Sequence[int] | np.ndarray,
                            records: Sequence[dict] | None = None) -> dict[str, str]:
    """Write the split's prompt lengths (and records, when given), each atomically; returns the meta.json
    entries naming them (`prompt_lengths`, `records`)."""
    from Code.utils import atomic_write, atomic_write_text  # imports torch: only once there is data to write

    def save_lengths(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a handle: np.save would add ".npy" to a bare temp name
            np.save(handle, np.asarray(prompt_lengths, dtype=np.int32))

    entries = {"prompt_lengths": f"{split}_prompt_len.npy"}
    atomic_write(Path(out) / entries["prompt_lengths"], save_lengths)
    if records is not None:
        entries["records"] = f"{split}_records.jsonl"
        lines = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records)
        atomic_write_text(Path(out) / entries["records"], lines)
    return entries
