"""Run the teacher once over a token split and store its top-k next-token targets (training then reads them).

    python Code/cache_teacher.py --teacher DIR --data-dir Code/data/wikitext-103 --seq-len 512 --top-k 32
    python Code/train_related.py ... --loss kd+lm --seq-len 512 --teacher-cache Code/data/wikitext-103

The split is cut into the blocks training reads (`LMBlocks`, `--seq-len` tokens each); for each position
the teacher's k most likely next tokens, their log-probabilities at `--temperature` and the log of the
rest's mass are written beside the token files (format: `Code/data_pipeline/teacher_cache.py`). An
interrupted run continues where it stopped when started again with the same flags. `kd` reads the cache
as top-k KD with the rest as one bucket (`Code/objectives/topk_kd.py`); hidden-state terms still need the
live teacher. Exit 0 done, 2 bad input (one `error:` line).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from Code.knobs import ConfigError, Knob, Knobs, at_least

CACHE_TEACHER = Knobs([
    Knob("teacher", help="hub name or local save_pretrained folder (required)", group="inputs"),
    Knob("data_dir", help="converted data folder (meta.json, <split>.bin/.idx) (required)", group="inputs"),
    Knob("split", "train", group="inputs", help="the token split to run the teacher over"),
    Knob("seq_len", None, int, group="inputs", check=at_least(2),
         help="block length: the --seq-len of the runs that will read the cache (required)"),
    Knob("top_k", 32, int, group="targets", check=at_least(1), help="tokens kept per position (any k' <= k "
         "can be read later)"),
    Knob("temperature", 1.0, float, group="targets", check=lambda v: None if v > 0 else "must be > 0",
         help="softmax temperature of the stored log-probabilities (kd must use the same)"),
    Knob("values_dtype", "float16", choices=("float16", "float32"), group="targets",
         help="storage of the log-probabilities (float16: 2 bytes, |error| <= ~0.01 nats at log p = -16)"),
    Knob("out_dir", help="where the cache goes (default: --data-dir, beside the token files)", group="output"),
    Knob("batch_size", 8, int, group="output", check=at_least(1), help="blocks per teacher forward"),
    Knob("device", "auto", choices=("auto", "cpu", "cuda"), group="output"),
    Knob("teacher_dtype", "auto", choices=("auto", "fp32", "bf16"), group="output",
         help="the teacher's weights; auto: bf16 on GPU, fp32 on CPU (what training's live teacher uses)"),
    Knob("overwrite", False, switch=True, group="output", help="rebuild a finished or partial cache"),
])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    return CACHE_TEACHER.add_to(parser)


def run(ns: argparse.Namespace) -> Path:
    """Write (or finish) the cache; the header's path."""
    import numpy as np
    import torch
    import transformers

    from Code.data_pipeline import teacher_cache as tc
    from Code.data_pipeline.lm_datasets import LMBlocks, check_vocab, load_meta, open_split
    from Code.modeling.loading import load_teacher
    from Code.objectives.topk_kd import topk_targets
    from Code.utils import pick_device

    for need in ("teacher", "data_dir", "seq_len"):
        if getattr(ns, need) is None:
            raise ConfigError(f"--{need.replace('_', '-')} is required (see --help)")
    CACHE_TEACHER.check(ns)
    out_dir = Path(ns.out_dir or ns.data_dir)
    done = out_dir / f"{tc.cache_name(ns.split, ns.seq_len, ns.top_k)}.json"
    if done.exists() and not ns.overwrite:  # before loading anything
        raise ConfigError(f"{done} already exists: pass --overwrite to rebuild it")
    transformers.utils.logging.disable_progress_bar()  # "Loading weights" bars: one error line means one line
    meta = load_meta(ns.data_dir)
    blocks = LMBlocks(open_split(ns.data_dir, ns.split), ns.seq_len)
    device = pick_device(ns.device)
    bf16 = ns.teacher_dtype == "bf16" or (ns.teacher_dtype == "auto" and device.type == "cuda")
    teacher = load_teacher(ns.teacher, device=device, dtype=torch.bfloat16 if bf16 else torch.float32)
    vocab = teacher.config.vocab_size
    check_vocab(meta, vocab, what=f"teacher {ns.teacher}")
    if ns.seq_len > teacher.config.max_position_embeddings:
        raise ConfigError(f"--seq-len {ns.seq_len} is longer than the teacher's context "
                          f"({teacher.config.max_position_embeddings}): lower --seq-len")
    k = min(ns.top_k, vocab)
    identity = {"split": ns.split, "temperature": ns.temperature, "data": tc.data_identity(ns.data_dir, ns.split),
                "teacher": tc.teacher_identity(ns.teacher), "teacher_dtype": "bf16" if bf16 else "fp32"}
    writer = tc.CacheWriter(out_dir, tc.cache_name(ns.split, ns.seq_len, k), len(blocks),
                            ns.seq_len, k, ns.values_dtype, vocab, identity, overwrite=ns.overwrite)
    if writer.done:
        print(f"resuming: {writer.done} of {len(blocks)} blocks already cached", flush=True)
    start, t0, reported = writer.done, time.perf_counter(), writer.done
    with torch.inference_mode():
        for lo in range(writer.done, len(blocks), ns.batch_size):
            hi = min(lo + ns.batch_size, len(blocks))
            inputs = torch.stack([blocks[i][:-1] for i in range(lo, hi)]).to(device)
            logits = teacher(input_ids=inputs, use_cache=False).logits
            targets = topk_targets(logits, k, ns.temperature)
            writer.write(lo, targets.logp, targets.ids, targets.log_rest)
            if hi - reported >= max(1, len(blocks) // 10) or hi == len(blocks):
                rate = (hi - start) * ns.seq_len / max(time.perf_counter() - t0, 1e-9)
                print(f"{hi}/{len(blocks)} blocks ({rate:,.0f} tokens/s)", flush=True)
                reported = hi
    path = writer.finish({"vocab_size": vocab})
    per_token = sum(np.dtype(d).itemsize * (k if a != "rest" else 1) for a, d in writer.dtypes.items())
    print(f"wrote {path} ({len(blocks)} blocks x {ns.seq_len} positions, top {k}, {per_token} bytes per token)",
          flush=True)
    return path


def main(argv: list[str] | None = None) -> int:
    from Code.cli import first_line

    ns = build_parser().parse_args(argv)
    try:
        run(ns)
    except (ValueError, FileNotFoundError) as exc:  # ConfigError, TeacherCacheError, missing data or teacher
        print(f"error: {first_line(exc)}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
