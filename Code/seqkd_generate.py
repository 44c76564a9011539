"""Sequence-level KD (Kim & Rush, 2016), step 1: the teacher answers the training prompts, and its
answers become a new prompt/response data folder that the normal loop then trains a student on
(black-box KD: only the teacher's text is used).

    python Code/seqkd_generate.py --teacher Code/output/dolly_sft_teacher/best \
        --data-dir Code/data/dolly --out-dir Code/data/dolly_seqkd [--max-new-tokens 256] [--sample]

The output has the same layout as `data_download.py --dataset dolly` writes: `train.bin/.idx` with
documents `prompt + teacher response + EOS`, `train_prompt_len.npy`, `train_records.jsonl` (each record's
`response` replaced by the teacher's, the original kept as `reference`), the source's `valid`/`test`
splits copied unchanged (validation and ROUGE-L stay against human references), `tokenizer/` and
`meta.json` (written last, so a killed run never leaves a folder that looks complete).

Every file is written under a temporary name and renamed into place (Code.utils.atomic_write*, replace_dir).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from Code.data_pipeline.data_layout import META, write_prompt_side_files


class SeqKDError(ValueError):
    """Bad input for sequence-level KD generation."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", required=True, help="teacher folder (e.g. the SFT teacher's best/) or hub name")
    p.add_argument("--data-dir", required=True, help="prompt/response data folder (data_download.py --dataset dolly)")
    p.add_argument("--out-dir", required=True, help="new data folder to write")
    p.add_argument("--split", default="train", help="split whose prompts the teacher answers (train)")
    p.add_argument("--max-new-tokens", type=int, default=256, help="response tokens per prompt (256)")
    p.add_argument("--max-prompt-len", type=int, default=256, help="prompt tokens kept, the last ones (256)")
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (1.0)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1.0 = off)")
    p.add_argument("--batch-size", type=int, default=16, help="prompts per generate call (16)")
    p.add_argument("--max-examples", type=int, help="only the first N records (default: all)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--device", default="auto", help="auto (cuda if present), cpu, cuda, cuda:N")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out-dir")
    return p


def _check(args: argparse.Namespace, src: Path, out: Path) -> None:
    if src.resolve() == out.resolve():
        raise SeqKDError("--out-dir must differ from --data-dir: the source keeps its human responses")
    if (out / META).exists() and not args.overwrite:
        raise SeqKDError(f"{out} already holds data: pass --overwrite to regenerate it")
    if args.max_new_tokens < 1 or args.batch_size < 1:
        raise SeqKDError("--max-new-tokens and --batch-size must be positive")


def teacher_responses(args: argparse.Namespace, meta: dict, examples: list) -> tuple[list[list[int]], float]:
    """The teacher's response ids to each example's prompt, and the seconds generation took."""
    import torch

    from Code.data_pipeline.lm_datasets import check_vocab
    from Code.modeling.generation import generate_responses
    from Code.modeling.loading import load_teacher
    from Code.utils import pick_device

    device = pick_device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    teacher = load_teacher(args.teacher, device=device, dtype=dtype)
    check_vocab(meta, teacher.config.vocab_size, f"teacher {args.teacher}")
    t0 = time.perf_counter()
    print(f"teacher {args.teacher}: answering {len(examples)} {args.split} prompts "
          f"({'sampled' if args.sample else 'greedy'}, up to {args.max_new_tokens} tokens) on {device}",
          file=sys.stderr)
    responses = generate_responses(teacher, [e.prompt for e in examples], int(meta["eos_id"]), args.max_new_tokens,
                                   batch_size=args.batch_size, do_sample=args.sample, temperature=args.temperature,
                                   top_p=args.top_p, seed=args.seed, max_prompt_len=args.max_prompt_len,
                                   device=device)
    return responses, time.perf_counter() - t0


def _copy_tokenizer(src: Path, out: Path) -> None:
    from Code.utils import replace_dir

    tmp = out / f".tokenizer.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src / "tokenizer", tmp)
    replace_dir(tmp, out / "tokenizer")


def _copy_split(src: Path, dst: Path, split: str, info: dict) -> None:
    from Code.utils import atomic_write

    for name in (f"{split}.bin", f"{split}.idx", info.get("prompt_lengths"), info.get("records")):
        if name and (src / name).is_file():
            atomic_write(dst / name, lambda tmp, name=name: shutil.copyfile(src / name, tmp))


def _write_split(args: argparse.Namespace, out: Path, meta: dict, examples: list, responses: list, tokenizer) -> dict:
    """`prompt + teacher response + EOS` per example as the split's token files, plus its side files (the
    records carry the teacher's text as `response`, the original as `reference`); returns its meta entry."""
    import numpy as np

    from Code.data_pipeline.indexed_dataset import IndexedDatasetBuilder, best_dtype

    eos = int(meta["eos_id"])
    with IndexedDatasetBuilder(out / args.split, best_dtype(int(meta["vocab_size"]))) as builder:
        for e, r in zip(examples, responses, strict=True):
            builder.add_document(np.asarray(e.prompt + r + [eos], dtype=np.int64))
        info = builder.finalize()
    records = [{**e.record, "response": tokenizer.decode(r, skip_special_tokens=True), "reference": e.reference}
               for e, r in zip(examples, responses, strict=True)]
    info.update(write_prompt_side_files(out, args.split, [len(e.prompt) for e in examples], records))
    return info


def run(args: argparse.Namespace) -> Path:
    from Code.data_pipeline.instruction_data import load_examples
    from Code.data_pipeline.lm_datasets import load_meta
    from Code.data_pipeline.tokenization import load_tokenizer
    from Code.utils import atomic_write_json

    src, out = Path(args.data_dir), Path(args.out_dir)
    _check(args, src, out)
    meta = load_meta(src)
    examples = load_examples(src, args.split, args.max_examples)
    tokenizer = load_tokenizer(str(src / "tokenizer"))
    responses, seconds = teacher_responses(args, meta, examples)

    out.mkdir(parents=True, exist_ok=True)
    (out / META).unlink(missing_ok=True)  # the folder is incomplete until the new meta is written
    _copy_tokenizer(src, out)
    new_meta = {**meta, "source": f"seqkd: {args.teacher} answering {meta.get('source', src)}",
                "seqkd": {"teacher": args.teacher, "source_data_dir": str(src.resolve()), "split": args.split,
                          "max_new_tokens": args.max_new_tokens, "sample": args.sample,
                          "temperature": args.temperature, "top_p": args.top_p, "seed": args.seed,
                          "seconds": round(seconds, 2)},
                "splits": {args.split: _write_split(args, out, meta, examples, responses, tokenizer)}}
    for split, split_info in meta.get("splits", {}).items():
        if split != args.split:
            _copy_split(src, out, split, split_info)
            new_meta["splits"][split] = split_info
    atomic_write_json(out / META, new_meta)
    mean_len = sum(len(r) for r in responses) / max(1, len(responses))
    print(f"wrote {out}: {len(examples)} teacher responses (mean {mean_len:.1f} tokens) in {seconds:.1f}s")
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
