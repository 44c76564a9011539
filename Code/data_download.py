"""Turn a corpus into Megatron/fairseq indexed token files: `Code/data/<name>/{train,valid,test}.bin/.idx`,
`meta.json` and the tokenizer used (`tokenizer/`).

    python Code/data_download.py --dataset wikitext-103            # Hugging Face hub (or its cache)
    python Code/data_download.py --dataset text --train a.txt --valid b.txt --test c.txt --out-dir DIR

Run with --help for every flag; the README's "Data" section explains them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from itertools import islice
from pathlib import Path

import numpy as np

from Code import CODE_DIR, cnn_dataset  # noqa: E402
from Code.hub import hub_reachable  # noqa: E402
from Code.indexed_dataset import IndexedDataset, IndexedDatasetBuilder, IndexedDatasetError, best_dtype  # noqa: E402
from Code.tokenization import (  # noqa: E402
    Doc,
    HubUnreachableError,
    encode_documents,
    load_tokenizer,
    save_tokenizer,
    tokenizer_fingerprint,
    train_bpe_tokenizer,
)

SPLITS = ("train", "valid", "test")
FORMAT = "megatron-mmidx-v1"  # bump when the bytes written for the same inputs change
HUB = {  # name: (hub id, config, kind)
    "wikitext-103": ("Salesforce/wikitext", "wikitext-103-raw-v1", "wikitext"),
    "wikitext-2": ("Salesforce/wikitext", "wikitext-2-raw-v1", "wikitext"),
    "openwebtext": ("Skylion007/openwebtext", None, "field"),
    "dolly": ("databricks/databricks-dolly-15k", None, "dolly"),
    "cnn_dailymail": (cnn_dataset.HUB_ID, cnn_dataset.CONFIG, "cnn"),
}
LOCAL = {"text": "text", "jsonl": "field"}
HUB_SPLIT_NAMES = {"train": "train", "validation": "valid", "valid": "valid", "test": "test"}
DOLLY_HEAD = (
    "Below is an instruction that describes a task{}. Write a response that appropriately completes the request."
)
OFFLINE_HOW = "python Code/data_download.py --dataset text --train FILE... [--valid FILE... --test FILE...]"


class SourceError(ValueError):
    """A corpus that cannot be read or split as asked."""


# ---- sources -----------------------------------------------------------------------------------

# A WikiText level-1 heading " = Title = " (not " = = Section = = "): one article per heading.
_TITLE = re.compile(r"^ ?= (?!=)(.*[^=\s]) = ?$")


def split_documents(lines) -> list[str]:
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



def read_text_documents(paths: Sequence[Path]) -> list[str]:
    """Documents of plain-text files, split per file (WikiText articles or blank-line blocks)."""
    docs: list[str] = []
    for p in paths:
        try:
            text = Path(p).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SourceError(f"no such file: {p}") from None
        except UnicodeDecodeError as e:
            raise SourceError(f"{p} is not UTF-8 text (byte {e.start}): convert it to UTF-8 first") from None
        found = split_documents(text.splitlines(keepends=True))
        if not found:
            raise SourceError(f"{p} holds no text")
        docs.extend(found)
    return docs


def read_jsonl(paths: Sequence[Path]) -> list[dict]:
    """Records of JSON-lines files (one object per line; a file holding one JSON list also works)."""
    records: list[dict] = []
    for p in paths:
        try:
            text = Path(p).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SourceError(f"no such file: {p}") from None
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
            return {
                HUB_SPLIT_NAMES[s]: list(islice(dd[s], max_docs)) for s in dd if s in HUB_SPLIT_NAMES
            }
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


def format_dolly(record: dict) -> tuple[str, str]:
    """(prompt, response) of a databricks-dolly-15k record, in the Alpaca template MiniLLM uses."""
    try:
        instruction, response = record["instruction"].strip(), record["response"].strip()
    except (KeyError, AttributeError):
        raise SourceError(f"dolly record lacks 'instruction'/'response' (has {sorted(record)})") from None
    context = (record.get("context") or "").strip()
    if context:
        head = DOLLY_HEAD.format(", paired with an input that provides further context")
        prompt = f"{head}\n\n### Instruction:\n{instruction}\n\n### Input:\n{context}\n\n### Response:\n"
    else:
        prompt = f"{DOLLY_HEAD.format('')}\n\n### Instruction:\n{instruction}\n\n### Response:\n"
    return prompt, response


def records_to_docs(kind: str, records: list, text_field: str = "text") -> list[Doc]:
    if kind == "wikitext":  # hub WikiText rows are lines; articles are rebuilt from the headings
        return split_documents(r["text"] for r in records)
    if kind == "dolly":
        return [format_dolly(r) for r in records]
    if kind == "cnn":
        return [cnn_dataset.format_record(r) for r in records]
    docs = []
    for i, r in enumerate(records):
        value = r.get(text_field) if isinstance(r, dict) else None
        if not isinstance(value, str):
            have = sorted(r) if isinstance(r, dict) else type(r).__name__
            raise SourceError(f"record {i} has no text field {text_field!r} (has {have}): pass --text-field NAME")
        docs.append(value)
    return docs


def load_source(args) -> tuple[dict[str, list[Doc]], dict[str, list[dict]], str]:
    """Documents per split, the raw records per split (record datasets only) and a description."""
    files = {s: getattr(args, s) for s in SPLITS if getattr(args, s)}
    if args.dataset in LOCAL or files:
        if "train" not in files:
            raise SourceError(f"--dataset {args.dataset} with local files needs --train FILE...")
        kind = LOCAL.get(args.dataset) or HUB[args.dataset][2]
        if kind == "wikitext":
            kind = "text"
        raw = {s: (None if kind == "text" else read_jsonl(f)) for s, f in files.items()}
        where = "local " + ("text" if kind == "text" else "JSON-lines") + " files"
    else:
        hub_id, config, kind = HUB[args.dataset]
        hub_id, config = args.hub_id or hub_id, args.hub_config or config
        raw = load_hub_dataset(hub_id, config, args.dataset, args.max_docs, args.cache_dir)
        where = f"{hub_id}{' ' + config if config else ''} (Hugging Face datasets)"
        if "train" not in raw:
            raise SourceError(f"{hub_id} has no train split (has {sorted(raw)})")
    docs, records = {}, {}
    for s, rows in raw.items():
        if rows is None:
            docs[s] = read_text_documents(files[s])
        else:
            docs[s] = records_to_docs(kind, rows, args.text_field)
            if kind in ("dolly", "cnn"):
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


def docs_fingerprint(docs: Sequence[Doc], *extra: str) -> str:
    """sha256 of the documents (and of `extra`: tokenizer hash, format); length-prefixed, so unambiguous."""
    h = hashlib.sha256("\0".join(extra).encode())
    for d in docs:
        for part in d if isinstance(d, tuple) else (d,):
            b = part.encode("utf-8")
            h.update(len(b).to_bytes(8, "little") + (b"P" if isinstance(d, tuple) else b"T") + b)
    return h.hexdigest()


# ---- conversion --------------------------------------------------------------------------------


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_json(path: Path, obj) -> None:
    write_atomic(path, (json.dumps(obj, indent=2) + "\n").encode())


def convert_split(
    docs: Sequence[Doc], tok, prefix: Path, workers: int = 0, desc: str = "", progress: bool = True
) -> dict:
    """Tokenize `docs` (EOS after each) into `<prefix>.bin/.idx`; returns tokens, documents, sha256,
    seconds, and `prompt_lengths` (np.int32 per document) when documents are (prompt, response) pairs."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    tokens = 0
    prompt_lengths: list[int] = []
    with (
        IndexedDatasetBuilder(prefix, best_dtype(len(tok))) as builder,
        tqdm(total=len(docs), desc=desc, unit="doc", mininterval=0.5, file=sys.stderr, leave=False,
             disable=not progress) as bar,
    ):
        for batch in encode_documents(tok, docs, workers=workers):
            for ids, plen in batch:
                builder.add_document(ids)
                tokens += len(ids)
                if plen is not None:
                    prompt_lengths.append(plen)
            bar.update(len(batch))
            bar.set_postfix_str(f"{tokens / (time.perf_counter() - t0):,.0f} tok/s", refresh=False)
        info = builder.finalize()
    info["seconds"] = round(time.perf_counter() - t0, 3)
    if prompt_lengths:
        info["prompt_lengths"] = np.asarray(prompt_lengths, dtype=np.int32)
    return info


def pick_tokenizer(args, train_docs: Sequence[Doc], out: Path, old: dict):
    """The tokenizer to use (trained, reused or loaded) and its name for meta.json; always saved in
    `<out>/tokenizer/`."""
    tok_dir = out / "tokenizer"
    if args.train_tokenizer:
        fp = docs_fingerprint(train_docs, f"bpe-{args.train_tokenizer}")
        name = f"byte-level BPE {args.train_tokenizer} (trained on this train split)"
        if old.get("tokenizer_training") == fp and tok_dir.is_dir():
            return load_tokenizer(str(tok_dir)), name, fp
        texts = (d if isinstance(d, str) else d[0] + d[1] for d in train_docs)
        print(f"training a byte-level BPE of {args.train_tokenizer} tokens on {len(train_docs)} documents",
              file=sys.stderr)
        return train_bpe_tokenizer(texts, args.train_tokenizer, tok_dir), name, fp
    tok = load_tokenizer(args.tokenizer)
    if old.get("tokenizer_sha256") != tokenizer_fingerprint(tok) or not tok_dir.is_dir():
        save_tokenizer(tok, tok_dir)
    return tok, args.tokenizer, None


def _reusable(info: dict | None, fp: str, prefix: Path) -> bool:
    if not info or info.get("input_fingerprint") != fp:
        return False
    try:
        ds = IndexedDataset(prefix)
    except IndexedDatasetError:
        return False
    extras = [info[k] for k in ("prompt_lengths", "records") if k in info]
    return (ds.num_tokens, len(ds)) == (info["tokens"], info["documents"]) and all(
        (prefix.parent / name).is_file() for name in extras
    )


def run(args) -> int:
    t0 = time.perf_counter()
    docs, records, source = load_source(args)
    missing = [s for s in SPLITS if s not in docs]
    if missing:
        idx = carve_indices(len(docs["train"]), missing, args.valid_fraction, args.seed)
        for table in (docs, records):
            if "train" in table:
                full = table["train"]
                for s, ix in idx.items():
                    table[s] = [full[i] for i in ix]
        print(f"carved {', '.join(missing)} from train ({len(idx[missing[0]])} documents each, seed {args.seed})",
              file=sys.stderr)
    name = args.dataset if args.dataset not in LOCAL else Path(args.train[0]).resolve().parent.name
    out = args.out_dir or CODE_DIR / "data" / name
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / "meta.json"
    old: dict = {}
    if meta_path.is_file() and not args.overwrite:
        try:
            old = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            old = {}
    tok, tok_name, training_fp = pick_tokenizer(args, docs["train"], out, old)
    tok_fp = tokenizer_fingerprint(tok)
    dtype = best_dtype(len(tok))
    meta = {
        "format": FORMAT, "source": source, "tokenizer": tok_name, "tokenizer_dir": "tokenizer",
        "tokenizer_sha256": tok_fp, "vocab_size": len(tok), "eos_id": tok.eos_token_id, "dtype": dtype.name,
        "documents": "text: WikiText article per ' = Title = ' heading, else blank-line block; records: one each",
        "eos_after_each_document": True, "carved": missing, "valid_fraction": args.valid_fraction,
        "seed": args.seed, "splits": {},
    }
    if training_fp:
        meta["tokenizer_training"] = training_fp
    fps = {s: docs_fingerprint(docs[s], FORMAT, tok_fp, dtype.name) for s in SPLITS}
    for s in SPLITS:  # keep what is still valid, so an interrupted rerun never loses finished splits
        if _reusable(old.get("splits", {}).get(s), fps[s], out / s):
            meta["splits"][s] = old["splits"][s]
    write_json(meta_path, meta)
    for s in SPLITS:
        if s in meta["splits"]:
            print(f"{s}: up to date ({meta['splits'][s]['tokens']:,} tokens), skipped; --overwrite redoes it",
                  file=sys.stderr)
            continue
        info = convert_split(docs[s], tok, out / s, workers=args.workers, desc=s)
        info["input_fingerprint"] = fps[s]
        plens = info.pop("prompt_lengths", None)
        if plens is not None:  # prompt lengths for masking: <split>_prompt_len.npy, int32 per document
            write_atomic(out / f"{s}_prompt_len.npy", _npy_bytes(plens))
            info["prompt_lengths"] = f"{s}_prompt_len.npy"
        if s in records:  # the raw fields (instruction/context/response, article/highlights) per document
            lines = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records[s])
            write_atomic(out / f"{s}_records.jsonl", lines.encode("utf-8"))
            info["records"] = f"{s}_records.jsonl"
        meta["splits"][s] = info
        write_json(meta_path, meta)
        rate = info["tokens"] / max(info["seconds"], 1e-3)
        print(f"{s}: {info['documents']:,} documents, {info['tokens']:,} tokens in {info['seconds']:.1f}s "
              f"({rate:,.0f} tok/s)", file=sys.stderr)
    print(f"wrote {out} ({dtype.name}, vocab {len(tok)}, eos {tok.eos_token_id}) in {time.perf_counter() - t0:.1f}s")
    return 0


def _npy_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints the usage block)
        print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = _Parser(prog="python Code/data_download.py", description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="wikitext-103", choices=[*HUB, *LOCAL],
                   help="hub corpus, or 'text'/'jsonl' for local files (default: wikitext-103)")
    for s in SPLITS:
        p.add_argument(f"--{s}", nargs="+", type=Path, metavar="PATH",
                       help=f"local file(s) for the {s} split (text, or JSON lines for record datasets)")
    p.add_argument("--text-field", default="text", help="JSON field holding the text (--dataset jsonl; default text)")
    p.add_argument("--max-docs", type=int, help="keep the first N documents of each source split")
    p.add_argument("--valid-fraction", type=float, default=0.01,
                   help="documents of train carved into each missing valid/test split (default 0.01)")
    p.add_argument("--seed", type=int, default=1234, help="seed of the valid/test carving (default 1234)")
    p.add_argument("--out-dir", type=Path,
                   help="output folder (default Code/data/<dataset>, or <train file's folder name> for text/jsonl)")
    p.add_argument("--tokenizer", default="gpt2", help="AutoTokenizer name or folder (default gpt2; offline fallback)")
    p.add_argument("--train-tokenizer", type=int, metavar="VOCAB",
                   help="train a byte-level BPE of VOCAB tokens on the train split instead of --tokenizer")
    p.add_argument("--workers", type=int, default=0,
                   help="0: tokenizers' own threads on every core (default); N: N processes (measured no faster)")
    p.add_argument("--overwrite", action="store_true", help="redo every split even if up to date")
    p.add_argument("--cache-dir", help="Hugging Face datasets cache folder")
    p.add_argument("--hub-id", help="override the hub repository of --dataset (e.g. a mirror)")
    p.add_argument("--hub-config", help="override the hub config of --dataset")
    args = p.parse_args(argv)
    if args.max_docs is not None and args.max_docs < 1:
        p.error("--max-docs must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except (ValueError, OSError) as e:  # every input problem is one of ours: one line, no traceback
        print(f"error: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; finished splits are kept, rerun the same command to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
