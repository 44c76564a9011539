"""Teacher cache benchmark: steps/s of a logit-KD run with the live teacher vs reading `--teacher-cache`, the
cache's bytes per token and build time, when it pays off, and how far top-k KD is from full KD.

    python bench/teacher_cache.py            # 12-layer teacher -> 6-layer student, n_embd 256, V 50,257; ~2 min CPU

One run, the project's own code path: a `DistillStep` per case (`kd+lm`, the live teacher's top-k vs the same
top-k read from a cache written by `Code/cache_teacher.py`'s writer) over one DDP engine, driven by
`trainer.train_micro_batch`, each fed by the run's data stream (`endless_batches`; the cached case through
`CachedBlocks`, so reading the cache is timed too). Timing runs in rounds, each visiting both cases in a
rotated order; the speed-up is the median over rounds of the paired time ratio. Times are this process's CPU
time (`time.process_time`, all its threads), not wall time: the machine is shared, and CPU time is what
another process's load disturbs least. The teacher and student are
GPT-2's shape scaled down (12 and 6 layers, n_embd 256, 4 heads, GPT-2's 50,257-token vocabulary, whose
lm_head is most of the teacher's cost at this width), random-initialised with a wide init (0.3) so their
next-token distributions are peaked rather than uniform. Data: the first `--chars` characters of WikiText-2's
valid split, a BPE of 8,192 tokens. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus" / "wikitext-2"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from Code.arguments import parse_config  # noqa: E402
from Code.data_pipeline import teacher_cache as tc  # noqa: E402
from Code.data_pipeline.distributed_indexed import DistributedBlockSampler  # noqa: E402
from Code.data_pipeline.lm_datasets import LMBlocks, open_split  # noqa: E402
from Code.modeling.layer_map import default_layer_map  # noqa: E402
from Code.modeling.student import DistillStudent  # noqa: E402
from Code.modeling.truncation import truncate_teacher  # noqa: E402
from Code.objectives import logit as ll  # noqa: E402
from Code.objectives.registry import LossPlan  # noqa: E402
from Code.objectives.topk_kd import topk_kl_rows, topk_targets  # noqa: E402
from Code.training.data_stream import endless_batches  # noqa: E402
from Code.training.engines import init_distributed, make_engine  # noqa: E402
from Code.training.setup import as_batch  # noqa: E402
from Code.training.steps import DistillStep  # noqa: E402
from Code.training.trainer import single_process_env, train_micro_batch  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-layer", type=int, default=12)
    p.add_argument("--n-embd", type=int, default=256)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--vocab", type=int, default=50257)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--top-k", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=2, help="micro-steps per case per round")
    p.add_argument("--chars", type=int, default=60_000, help="characters of WikiText-2 valid used as the split")
    p.add_argument("--threads", type=int, default=2)
    return p


def small_data(out: Path, chars: int) -> Path:
    text = out / "train.txt"
    out.mkdir(parents=True, exist_ok=True)
    text.write_text((CORPUS / "valid.txt").read_text(encoding="utf-8")[:chars], encoding="utf-8")
    data = out / "data"
    subprocess.run([sys.executable, str(REPO / "Code" / "data_download.py"), "--dataset", "text", "--train",
                    str(text), "--valid", str(text), "--test", str(text), "--out-dir", str(data),
                    "--train-tokenizer", "8192"], check=True, capture_output=True, text=True)
    return data


def make_teacher(opts: argparse.Namespace) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=opts.vocab, n_positions=max(1024, opts.seq_len), n_embd=opts.n_embd,
                        n_layer=opts.n_layer, n_head=opts.n_head, bos_token_id=0, eos_token_id=0,
                        initializer_range=0.3)
    config._attn_implementation = "sdpa"  # what load_teacher asks for
    return GPT2LMHeadModel(config).eval().requires_grad_(False)


def write_cache(teacher: GPT2LMHeadModel, blocks: LMBlocks, out: Path, opts: argparse.Namespace) -> tuple[Path, float]:
    """The cache as Code/cache_teacher.py writes it (same writer, same targets); seconds per block."""
    writer = tc.CacheWriter(out, tc.cache_name("train", opts.seq_len, opts.top_k), len(blocks), opts.seq_len,
                            opts.top_k, "float16", opts.vocab, {"split": "train", "temperature": 1.0,
                                                                "data": {}, "teacher": {"name": "bench"}})
    t0 = time.process_time()
    with torch.inference_mode():
        for lo in range(0, len(blocks), 8):
            ids = torch.stack([blocks[i][:-1] for i in range(lo, min(lo + 8, len(blocks)))])
            t = topk_targets(teacher(input_ids=ids, use_cache=False).logits, opts.top_k, 1.0)
            writer.write(lo, t.logp, t.ids, t.log_rest)
    seconds = time.process_time() - t0
    return writer.finish({"vocab_size": opts.vocab}), seconds / len(blocks)


def topk_gaps(teacher: GPT2LMHeadModel, student: torch.nn.Module, blocks: LMBlocks) -> dict[str, float]:
    """Top-k KD (k = 8, 32, 128, rest as a bucket) against full-vocabulary KD on 8 blocks: the fraction of
    the full KL each keeps, and the teacher's mean top-k mass."""
    ids = torch.stack([blocks[i][:-1] for i in range(8)])
    with torch.no_grad():
        t = teacher(input_ids=ids).logits.reshape(-1, teacher.config.vocab_size)
        s = student(input_ids=ids).logits.reshape(-1, teacher.config.vocab_size)
    full = float(ll.forward_kl_rows(s, t, 1.0).mean())
    out = {"full_kd": full}
    for k in (8, 32, 128):
        targets = topk_targets(t, k, 1.0)
        out[f"kd_top{k}"] = float(topk_kl_rows(s, targets).mean())
        out[f"kd_top{k}_of_full"] = out[f"kd_top{k}"] / full
        out[f"teacher_top{k}_mass"] = float(targets.logp.exp().sum(-1).mean())
    return out


def main(argv: list[str] | None = None) -> int:
    opts = build_parser().parse_args(argv)
    torch.set_num_threads(opts.threads)
    single_process_env()
    init_distributed("torchrun")
    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="bench_teacher_cache_"))
    data = small_data(tmp, opts.chars)
    blocks = LMBlocks(open_split(data, "train"), opts.seq_len)
    teacher = make_teacher(opts)
    header, build_s_per_block = write_cache(teacher, blocks, tmp / "cache", opts)
    cache = tc.TeacherCache(header, verify=True)

    cfg = parse_config(["--data-dir", str(data), "--loss", "kd+lm", "--kd-topk", str(opts.top_k), "--seq-len",
                        str(opts.seq_len), "--micro-batch-size", str(opts.batch), "--precision", "fp32",
                        "--launcher", "torchrun", "--compile", "off", "--out-dir", str(tmp / "run")])
    layers = list(range(0, opts.n_layer, 2))
    layer_map = default_layer_map(layers, opts.n_layer)
    student = truncate_teacher(teacher, layers).float().requires_grad_(True)
    student.config.use_cache = False
    gaps = topk_gaps(teacher, student, blocks)
    module = DistillStudent(student, [s for s, _ in layer_map], opts.n_embd)
    engine = make_engine(cfg.optim, module, 1_000_000, torch.device("cpu"), "off")
    engine.train()
    steps, streams = {}, {}
    for name, data_set in (("live", blocks), ("cached", tc.CachedBlocks(blocks, cache))):
        step = DistillStep(teacher, module, layer_map, cfg.losses, cfg.seed)
        if name == "cached":
            step.plan, step.cache_temperature = LossPlan.from_terms(cfg.losses, cached=True), cache.temperature
        step.bind(engine, 1_000_000)
        sampler = DistributedBlockSampler(len(blocks), shuffle=True, seed=cfg.seed)
        steps[name] = step
        streams[name] = endless_batches(data_set, sampler, {"batch_size": opts.batch, "drop_last": True}, cfg.seed, 0)

    times: dict[str, list[float]] = {"live": [], "cached": []}
    step_no = 0
    for r in range(opts.rounds + 1):  # round 0 warms up (allocator, first-call costs) and is dropped
        for name in (("live", "cached") if r % 2 else ("cached", "live")):
            t0 = time.process_time()
            for _ in range(opts.steps):
                step_no += 1
                train_micro_batch(engine, steps[name], as_batch(next(streams[name]), torch.device("cpu")), step_no, 0)
            if r:
                times[name].append((time.process_time() - t0) / opts.steps)
    ratios = [a / b for a, b in zip(times["live"], times["cached"], strict=True)]
    live_s, cached_s = statistics.median(times["live"]), statistics.median(times["cached"])
    per_token = sum(np.dtype(i["dtype"]).itemsize * (i["shape"][-1] if len(i["shape"]) == 3 else 1)
                    for i in cache.header["arrays"].values())
    batches_per_epoch = len(blocks) // opts.batch
    build_s_per_epoch = build_s_per_block * len(blocks)
    saved_s_per_epoch = (live_s - cached_s) * batches_per_epoch
    result = {
        "bench": "teacher_cache", "teacher": f"{opts.n_layer}x{opts.n_embd}, V {opts.vocab}",
        "student_layers": len(layers), "seq_len": opts.seq_len, "batch": opts.batch, "top_k": opts.top_k,
        "live_steps_per_s": 1 / live_s, "cached_steps_per_s": 1 / cached_s,
        "speedup": statistics.median(ratios), "speedup_rounds": ratios,
        "cache_bytes_per_token": per_token, "token_file_bytes_per_token": 2,
        "full_logits_fp16_bytes_per_token": 2 * opts.vocab,
        "build_s_per_token": build_s_per_block / opts.seq_len,
        "live_step_s_per_token": live_s / (opts.batch * opts.seq_len),
        "cached_step_s_per_token": cached_s / (opts.batch * opts.seq_len),
        "break_even_epochs": build_s_per_epoch / saved_s_per_epoch if saved_s_per_epoch > 0 else None,
        **gaps, "threads": opts.threads, "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__, "wall_s": time.perf_counter() - t_start,
    }
    print(f"{'case':8} {'steps/s':>8}  (CPU time; median of {opts.rounds} rounds x {opts.steps} micro-steps, "
          f"batch {opts.batch} x {opts.seq_len})")
    print(f"{'live':8} {1 / live_s:8.3f}\n{'cached':8} {1 / cached_s:8.3f}\nspeed-up {result['speedup']:.2f}x "
          f"(rounds: {', '.join(f'{x:.2f}' for x in ratios)})")
    print(f"cache: {per_token} bytes/token at k={opts.top_k} (tokens: 2, fp16 full logits: {2 * opts.vocab}); "
          f"built at {result['build_s_per_token'] * 1e3:.2f} ms/token; pays off after "
          f"{result['break_even_epochs']:.2f} epochs of reading it" if result["break_even_epochs"] else "")
    print("top-k KD / full KD: " + ", ".join(f"k={k}: {gaps[f'kd_top{k}_of_full']:.3f} (teacher mass "
                                           f"{gaps[f'teacher_top{k}_mass']:.3f})" for k in (8, 32, 128)))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
