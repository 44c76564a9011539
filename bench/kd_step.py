"""Distillation step benchmark: tokens/s per loss, overhead over the bare work, MFU, the HF Trainer peer.

    python bench/kd_step.py --quick      # small GPT-2 shapes, under two minutes on 2 CPU cores
    python bench/kd_step.py              # GPT-2 124M teacher -> 6-layer student (see bench/README.md)

Every case runs the project's own code path: `DistillStudent` under `engines.make_engine` (DeepSpeed by
default), a `training.steps.DistillStep` per case driven by `trainer.train_micro_batch` (what the
`Trainer` runs per micro-batch), the run's `CriticTrainer` and the run's data stream, with the config
resolved by `arguments.parse_config`. One student, one engine and one batch stream serve every case, so all
cases train the same model on the same data. Timing runs in rounds; each round visits the cases in a
rotated order and runs each right next to the bare work it contains, so every overhead ratio is the median
over rounds of two neighbouring measurements (the machine's load drifts; neighbours share it).

Cases (each distillation case also has the `lm` term, so the student's own work is the same in all):
  bare/student, bare/teacher-hidden, bare/teacher-logits  the bare work: teacher no-grad forward (none; body
      only; body + lm_head), student forward + cross-entropy + backward + optimizer step, with the engine
  lm, mse, wd, kd   `--loss lm`, `mse+lm`, `wd+lm` (n_critic critic updates), `kd+lm` via distill_forward;
      overhead_ratio = median over rounds of (its step time / its neighbouring bare step time)
  wd_gp, wd_unpaired, swd, sinkhorn, sinkhorn_blur5, sinkhorn_unpaired, gauss_w2   issue 21's estimators
      (`--cases` picks them): the critic with the two-sided penalty / unpaired samples, and the critic-free terms
  peer   the same MSE distillation (`mse+lm`) as a typical Hugging Face `Trainer` with a custom
      `compute_loss` (output_hidden_states=True on both models, the teacher in fp32 on the same device);
      speedup_vs_peer = median over rounds of (peer's overhead ratio / mse's overhead ratio)
Peak memory of `mse` and of the peer: each in a fresh subprocess; CPU: rise of the RSS high-water mark
(VmHWM, reset after the imports) over the RSS before any model is built; GPU: `torch.cuda.max_memory_allocated`.
Prints a table, then one JSON line per case.

Parts, by job (siblings in bench/): kd_setup.py (case table, options, `Setup`), kd_flops.py (FLOPs, device
peak, step clock), kd_peer.py (the Trainer peer), kd_memory.py (the peak-memory children); this file: CLI, timing.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from Code.training.engines import init_distributed  # noqa: E402
from Code.training.trainer import single_process_env  # noqa: E402
from kd_flops import CLOCK, device_name, device_peak, flops_per_token, matmul_flops, matmul_params, sync
from kd_memory import measure_memory, memory_child
from kd_peer import make_peer, peer_steps
from kd_setup import CASES, Setup, bench_data, resolve


# ------------------------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python bench/kd_step.py", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small shapes, under two minutes on 2 CPU cores")
    p.add_argument("--teacher", help="a local GPT-2 folder (default: random weights of the shape below)")
    p.add_argument("--n-layer", type=int, help="teacher layers (default 12; quick 4)")
    p.add_argument("--n-embd", type=int, help="width (default 768; quick 256)")
    p.add_argument("--n-head", type=int, help="heads (default 12; quick 4)")
    p.add_argument("--vocab", type=int, help="vocabulary (default 50257 = GPT-2's tokenizer; quick 4096)")
    p.add_argument("--student-layers", help="teacher blocks copied (default 0,2,4,6,8,10; quick 0,2)")
    p.add_argument("--seq-len", type=int, help="tokens per sequence (default 256; quick 128)")
    p.add_argument("--batch", type=int, help="sequences per step (default 4; quick 4)")
    p.add_argument("--n-critic", type=int, default=5)
    p.add_argument("--critic-samples", type=int, help="positions the critics see per step (project default)")
    p.add_argument("--rounds", type=int, help="interleaved timing rounds (default 3)")
    p.add_argument("--steps", type=int, help="timed steps per case per round (default 1)")
    p.add_argument("--cases", default="lm,mse,wd,kd", help=f"comma list of {', '.join(CASES)}")
    p.add_argument("--no-peer", action="store_true", help="skip the Hugging Face Trainer peer")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                   help="auto: bf16 on GPU, fp32 on CPU")
    p.add_argument("--compile", default="auto", choices=["auto", "on", "off"], help="as train_related.py")
    p.add_argument("--launcher", default="deepspeed", choices=["deepspeed", "torchrun"])
    p.add_argument("--zero-stage", type=int, default=1, choices=[0, 1, 2])
    p.add_argument("--num-workers", type=int, default=1, help="data-loader workers (the project default)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                   help="step clock: wall time, or process CPU time (a shared CPU: use with --threads 1)")
    p.add_argument("--data-dir", type=Path, help="prepared data (default: built from WikiText-2, cached)")
    p.add_argument("--memory-child", choices=["ours", "peer"], help=argparse.SUPPRESS)
    return p


def bare_of(name: str) -> str:
    """The bare work a case contains (the peer does the work of `mse`)."""
    if name.startswith("bare/"):
        return name
    return CASES["mse" if name == "peer" else name][1]


def median_step(samples: list[float]) -> float:
    return statistics.median(samples) if samples else float("nan")


def main(argv: list[str] | None = None) -> int:
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    opts = resolve(build_parser().parse_args(raw_argv))
    cases = [c.strip() for c in opts.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        print(f"error: unknown case(s) {unknown}: choose from {sorted(CASES)}", file=sys.stderr)
        return 2
    if opts.threads:
        torch.set_num_threads(opts.threads)
        os.environ["OMP_NUM_THREADS"] = str(opts.threads)  # else accelerate (the peer) resets it to the cores
    if opts.clock == "cpu":
        CLOCK[0] = time.process_time
    single_process_env()
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    data_dir = opts.data_dir or bench_data(opts.vocab)
    device = torch.device(opts.device)
    init_distributed(opts.launcher)
    if opts.memory_child:
        memory_child(opts, data_dir, opts.memory_child)
        return 0

    t_start = time.perf_counter()
    setup = Setup(opts, data_dir, device, with_peer=not opts.no_peer)
    tokens = opts.batch * opts.seq_len
    bares = sorted({CASES[c][1] for c in cases})
    targets = cases + ([] if opts.no_peer else ["peer"])
    names = bares + targets
    ratios: dict[str, list[float]] = {n: [] for n in targets}
    times: dict[str, list[float]] = {n: [] for n in names}
    waits: dict[str, list[float]] = {n: [] for n in names}
    walls: dict[str, list[float]] = {n: [] for n in names}
    peaks: list[float] = []
    peak, peak_source = device_peak(device, setup.dtype)

    with tempfile.TemporaryDirectory() as tmp:
        trainer, clock = make_peer(setup, tmp) if not opts.no_peer else (None, None)
        if opts.threads:
            torch.set_num_threads(opts.threads)

        def run(name: str, steps: int) -> None:
            if name == "peer":
                per_step = peer_steps(trainer, clock, steps)
                times[name].append(sum(per_step) / len(per_step))
                return
            sync(device)
            t0, w0 = CLOCK[0](), time.perf_counter()
            wait = 0.0
            for _ in range(steps):
                wait += setup.bare_step(name) if name.startswith("bare/") else setup.case_step(name)
            setup.log_interval_sync()
            sync(device)
            times[name].append((CLOCK[0]() - t0) / steps)
            walls[name].append((time.perf_counter() - w0) / steps)
            waits[name].append(wait / steps)

        for name in names:  # warm-up: lazy optimizer state, allocator, first-call paths
            run(name, 1)
        for name in names:
            times[name], waits[name], walls[name] = [], [], []
        for r in range(opts.rounds):
            # Each target runs right next to the bare work it contains (alternating which goes first), so
            # its ratio comes from two neighbouring measurements under the same machine load.
            order = targets[r % len(targets):] + targets[: r % len(targets)]
            for i, name in enumerate(order):
                pair = [bare_of(name), name] if (r + i) % 2 == 0 else [name, bare_of(name)]
                for each in pair:
                    run(each, opts.steps)
                ratios[name].append(times[name][-1] / times[bare_of(name)][-1])
            if peak is None:
                peaks.append(matmul_flops(device, setup.dtype, 2048 if device.type == "cpu" else 8192))
    timing_s = time.perf_counter() - t_start
    memory = None
    if not opts.no_peer and not opts.no_memory:
        memory = measure_memory([a for a in raw_argv if a != "--memory-child"])
    peak_flops = peak if peak is not None else statistics.median(peaks)

    # ---------------------------------------------------------------------------------- results
    cfg = setup.teacher.config
    head_dim = cfg.n_embd // cfg.n_head
    student = setup.engine.module
    s_cfg = student.student.config
    train_fpt = flops_per_token(matmul_params(student, True), s_cfg.n_layer, s_cfg.n_head, head_dim,
                                opts.seq_len, training=True)
    teacher_fpt = {
        "bare/student": 0.0,
        "bare/teacher-hidden": flops_per_token(matmul_params(setup.teacher, False), cfg.n_layer, cfg.n_head,
                                               head_dim, opts.seq_len, training=False),
        "bare/teacher-logits": flops_per_token(matmul_params(setup.teacher, True), cfg.n_layer, cfg.n_head,
                                               head_dim, opts.seq_len, training=False),
    }
    common = {"device": device_name(device), "precision": opts.precision, "teacher_layers": cfg.n_layer,
              "student_layers": s_cfg.n_layer, "n_embd": cfg.n_embd, "vocab": cfg.vocab_size,
              "seq_len": opts.seq_len, "batch": opts.batch, "tokens_per_step": tokens,
              "n_critic": setup.cfg.critic.n_critic, "critic_samples": setup.cfg.critic.max_samples,
              "launcher": opts.launcher, "zero_stage": opts.zero_stage, "compile": opts.compile,
              "num_workers": opts.num_workers, "peak_flops": peak_flops, "peak_source": peak_source,
              "quick": opts.quick}
    rows = []
    for name in names:
        bare = bare_of(name)
        step = median_step(times[name])
        fpt = train_fpt + teacher_fpt[bare]
        row = {"case": name, "loss": CASES[name][0] if name in CASES else ("mse+lm" if name == "peer" else None),
               "tokens_per_s": tokens / step, "step_ms": 1e3 * step,
               "overhead_ratio": statistics.median(ratios[name]) if name in ratios else 1.0, "bare": bare,
               "mfu": fpt * tokens / step / peak_flops, "model_flops_per_token": fpt,
               "data_wait_share": (sum(waits[name]) / sum(walls[name])) if waits[name] else None,
               "samples": len(times[name]), "clock": opts.clock,
               "step_ms_all": [round(1e3 * t, 1) for t in times[name]],
               "ratios_all": [round(x, 4) for x in ratios.get(name, [])]}
        rows.append(row)
    by_name = {r["case"]: r for r in rows}
    if "peer" in by_name and "mse" in by_name:
        # Paired per round: (peer / its neighbouring bare) over (mse / its neighbouring bare).
        speedup = statistics.median(p / m for p, m in zip(ratios["peer"], ratios["mse"], strict=True))
        for key in ("mse", "peer"):
            by_name[key]["speedup_vs_peer"] = speedup
        if memory:
            ratio = memory["ours"]["peak_bytes"] / memory["peer"]["peak_bytes"]
            by_name["mse"]["peak_mem_bytes"] = memory["ours"]["peak_bytes"]
            by_name["peer"]["peak_mem_bytes"] = memory["peer"]["peak_bytes"]
            for key in ("mse", "peer"):
                by_name[key]["peak_mem_ratio"] = ratio
                by_name[key]["peak_mem_method"] = memory["ours"]["method"]
    ours_steps = [n for n in names if n != "peer"]
    stall = sum(sum(waits[n]) for n in ours_steps) / max(1e-12, sum(sum(walls[n]) for n in ours_steps))

    print(f"\n{common['device']}, {opts.precision}, teacher {cfg.n_layer}x{cfg.n_embd} -> student "
          f"{s_cfg.n_layer} layers, vocab {cfg.vocab_size}, {opts.batch}x{opts.seq_len} tokens/step, "
          f"n_critic {setup.cfg.critic.n_critic}, critic samples {setup.cfg.critic.max_samples}, "
          f"median of {opts.rounds} "
          f"rounds x {opts.steps} step(s), {opts.clock} clock; peak {peak_flops / 1e12:.3g} TFLOP/s ({peak_source})")
    print(f"{'case':20s} {'loss':7s} {'tokens/s':>9s} {'ms/step':>8s} {'overhead':>8s} {'MFU':>6s} "
          f"{'data wait':>9s}  vs peer / peak mem")
    for r in rows:
        extra = ""
        if "speedup_vs_peer" in r and r["case"] == "mse":
            extra = f"{r['speedup_vs_peer']:.2f}x peer"
            if "peak_mem_ratio" in r:
                extra += f", peak mem {r['peak_mem_bytes'] / 2**20:.0f} MiB ({r['peak_mem_ratio']:.2f}x peer)"
        if r["case"] == "peer" and "peak_mem_bytes" in r:
            extra = f"peak mem {r['peak_mem_bytes'] / 2**20:.0f} MiB"
        wait = f"{100 * r['data_wait_share']:.2f}%" if r["data_wait_share"] is not None else "-"
        print(f"{r['case']:20s} {r['loss'] or '-':7s} {r['tokens_per_s']:9.0f} {r['step_ms']:8.1f} "
              f"{r['overhead_ratio']:8.3f} {100 * r['mfu']:5.1f}% {wait:>9s}  {extra}")
    print(f"data-loader stall over all our steps: {100 * stall:.2f}% of step time; "
          f"bench wall time {time.perf_counter() - t_start:.0f} s (timing {timing_s:.0f} s)")
    for r in rows:
        print(json.dumps({**r, **common, "data_stall_share_all": stall}))
    return 0



if __name__ == "__main__":
    sys.exit(main())
