"""The documents of each split for a `--dataset` request: which source it names (hub dataset or local files),
read and formatted, and a valid/test split carved from train when the source has none."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from Code.data_pipeline import cnn_dataset
from Code.data_pipeline.corpus_sources import SourceError, load_hub_dataset, read_jsonl, read_text_documents
from Code.data_pipeline.data_layout import SPLITS
from Code.data_pipeline.doc_encoding import Doc
from Code.data_pipeline.record_formats import PROMPT_KINDS, records_to_docs

HUB = {  # name: (hub id, config, kind)
    "wikitext-103": ("Salesforce/wikitext", "wikitext-103-raw-v1", "wikitext"),
    "wikitext-2": ("Salesforce/wikitext", "wikitext-2-raw-v1", "wikitext"),
    "openwebtext": ("Skylion007/openwebtext", None, "field"),
    "dolly": ("databricks/databricks-dolly-15k", None, "dolly"),
    "cnn_dailymail": (cnn_dataset.HUB_ID, cnn_dataset.CONFIG, "cnn"),
}
LOCAL = {"text": "text", "jsonl": "field"}


def _read_raw(args) -> tuple[str, dict[str, list | None], str]:
    """(record kind, records per split (None: a plain-text split, read by file), where they came from)."""
    files = {s: getattr(args, s) for s in SPLITS if getattr(args, s)}
    if args.dataset in LOCAL or files:
        if "train" not in files:
            raise SourceError(f"--dataset {args.dataset} with local files needs --train FILE...")
        kind = LOCAL.get(args.dataset) or HUB[args.dataset][2]
        if kind == "wikitext":
            kind = "text"
        raw = {s: (None if kind == "text" else read_jsonl(f)) for s, f in files.items()}
        return kind, raw, "local " + ("text" if kind == "text" else "JSON-lines") + " files"
    hub_id, config, kind = HUB[args.dataset]
    hub_id, config = args.hub_id or hub_id, args.hub_config or config
    raw = load_hub_dataset(hub_id, config, args.dataset, args.max_docs, args.cache_dir)
    if "train" not in raw:
        raise SourceError(f"{hub_id} has no train split (has {sorted(raw)})")
    return kind, raw, f"{hub_id}{' ' + config if config else ''} (Hugging Face datasets)"


def load_source(args) -> tuple[dict[str, list[Doc]], dict[str, list[dict]], str]:
    """Documents per split, the raw records per split (prompt/response datasets only) and a description.

    `args` holds data_download's flags: dataset, train/valid/test, text_field, max_docs, cache_dir,
    hub_id, hub_config."""
    kind, raw, where = _read_raw(args)
    docs, records = {}, {}
    for s, rows in raw.items():
        if rows is None:
            docs[s] = read_text_documents(getattr(args, s))
        else:
            docs[s] = records_to_docs(kind, rows, args.text_field)
            if kind in PROMPT_KINDS:
                records[s] = rows
        if args.max_docs:
            docs[s] = docs[s][: args.max_docs]
            if s in records:
                records[s] = records[s][: args.max_docs]
        if not docs[s]:
            raise SourceError(f"the {s} split of {args.dataset} has no documents")
    return docs, records, f"{args.dataset}: {where}"


def carve_indices(n: int, missing: Sequence[str], fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Document indices of train and each missing split: round(fraction * n) (at least 1) documents
    each, drawn by a permutation seeded by `seed`; every split keeps the original document order."""
    if not 0 < fraction < 0.5:
        raise SourceError(f"--valid-fraction must be between 0 and 0.5, got {fraction}")
    k = max(1, round(n * fraction))
    if n < k * len(missing) + 1:
        raise SourceError(
            f"train has {n} documents, too few to carve {'/'.join(missing)} from it: pass --valid/--test files"
        )
    perm = np.random.default_rng(seed).permutation(n)
    out = {s: np.sort(perm[j * k : (j + 1) * k]) for j, s in enumerate(missing)}
    out["train"] = np.sort(perm[len(missing) * k :])
    return out


def carve_missing(docs: dict[str, list], records: dict[str, list], fraction: float, seed: int) -> list[str]:
    """Carve every split `docs` lacks from train, in place (documents and their records alike); returns
    the carved split names."""
    missing = [s for s in SPLITS if s not in docs]
    if not missing:
        return missing
    idx = carve_indices(len(docs["train"]), missing, fraction, seed)
    for table in (docs, records):
        if "train" in table:
            full = table["train"]
            for s, ix in idx.items():
                table[s] = [full[i] for i in ix]
    print(f"carved {', '.join(missing)} from train ({len(idx[missing[0]])} documents each, seed {seed})",
          file=sys.stderr)
    return missing
