"""Turn a corpus into Megatron/fairseq indexed token files: `Code/data/<name>/{train,valid,test}.bin/.idx`,
`meta.json` and the tokenizer used (`tokenizer/`).

    python Code/data_download.py --dataset wikitext-103            # Hugging Face hub (or its cache)
    python Code/data_download.py --dataset text --train a.txt --valid b.txt --test c.txt --out-dir DIR

Run with --help for every flag; the README's "Data" section explains them. This file is the command: it
reads the flags and runs the steps, each in its own module (corpus_splits: documents per split;
tokenizer_choice: the tokenizer; split_conversion: token files; data_layout: the folder's file names).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from Code import CODE_DIR
from Code.cli import cli_main
from Code.data_pipeline.corpus_splits import HUB, LOCAL, carve_missing, load_source
from Code.data_pipeline.data_layout import META, SPLITS
from Code.data_pipeline.indexed_dataset import best_dtype
from Code.data_pipeline.split_conversion import FORMAT, docs_fingerprint, split_is_current, write_split
from Code.data_pipeline.tokenization import tokenizer_fingerprint
from Code.data_pipeline.tokenizer_choice import pick_tokenizer


def previous_meta(path: Path, overwrite: bool) -> dict:
    """The folder's meta.json from an earlier run ({} when absent, unreadable or --overwrite)."""
    if overwrite or not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return {}


def new_meta(source: str, tok, tok_name: str, training_fp: str | None, carved: list[str], args) -> dict:
    dtype = best_dtype(len(tok))
    meta = {
        "format": FORMAT, "source": source, "tokenizer": tok_name, "tokenizer_dir": "tokenizer",
        "tokenizer_sha256": tokenizer_fingerprint(tok), "vocab_size": len(tok), "eos_id": tok.eos_token_id,
        "dtype": dtype.name,
        "documents": "text: WikiText article per ' = Title = ' heading, else blank-line block; records: one each",
        "eos_after_each_document": True, "carved": carved, "valid_fraction": args.valid_fraction,
        "seed": args.seed, "splits": {},
    }
    if training_fp:
        meta["tokenizer_training"] = training_fp
    return meta


def convert_splits(out: Path, docs: dict, records: dict, tok, meta: dict, old: dict, workers: int) -> None:
    """Convert each split not already up to date, rewriting meta.json after each, so an interrupted rerun
    never loses finished splits."""
    from Code.utils import atomic_write_json  # imports torch: paid only once the conversion starts

    fps = {s: docs_fingerprint(docs[s], FORMAT, meta["tokenizer_sha256"], meta["dtype"]) for s in SPLITS}
    for s in SPLITS:
        if split_is_current(old.get("splits", {}).get(s), fps[s], out / s):
            meta["splits"][s] = old["splits"][s]
    atomic_write_json(out / META, meta)
    for s in SPLITS:
        if s in meta["splits"]:
            print(f"{s}: up to date ({meta['splits'][s]['tokens']:,} tokens), skipped; --overwrite redoes it",
                  file=sys.stderr)
            continue
        info = write_split(out, s, docs[s], records.get(s), tok, fps[s], workers=workers)
        meta["splits"][s] = info
        atomic_write_json(out / META, meta)
        rate = info["tokens"] / max(info["seconds"], 1e-3)
        print(f"{s}: {info['documents']:,} documents, {info['tokens']:,} tokens in {info['seconds']:.1f}s "
              f"({rate:,.0f} tok/s)", file=sys.stderr)


def run(args) -> int:
    t0 = time.perf_counter()
    docs, records, source = load_source(args)
    carved = carve_missing(docs, records, args.valid_fraction, args.seed)
    name = args.dataset if args.dataset not in LOCAL else Path(args.train[0]).resolve().parent.name
    out = args.out_dir or CODE_DIR / "data" / name
    out.mkdir(parents=True, exist_ok=True)
    old = previous_meta(out / META, args.overwrite)
    tok, tok_name, training_fp = pick_tokenizer(args.tokenizer, args.train_tokenizer, docs["train"],
                                                out / "tokenizer", old)
    meta = new_meta(source, tok, tok_name, training_fp, carved, args)
    convert_splits(out, docs, records, tok, meta, old, args.workers)
    print(f"wrote {out} ({meta['dtype']}, vocab {len(tok)}, eos {tok.eos_token_id}) in {time.perf_counter() - t0:.1f}s")
    return 0


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
    # every input problem is one of ours (ValueError, OSError): one line, no traceback
    return cli_main(lambda: run(args), (ValueError, OSError),
                    "finished splits are kept, rerun the same command to continue")


if __name__ == "__main__":
    sys.exit(main())
