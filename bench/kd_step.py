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
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from Code.arguments import parse_config  # noqa: E402
from Code.config import RunConfig  # noqa: E402
from Code.modeling.layer_map import default_layer_map  # noqa: E402
from Code.modeling.loading import load_teacher  # noqa: E402
from Code.modeling.student import DistillStudent  # noqa: E402
from Code.modeling.truncation import parse_student_layers, truncate_teacher  # noqa: E402
from Code.objectives.parsing import parse_losses  # noqa: E402
from Code.training.data_stream import endless_batches  # noqa: E402
from Code.training.engines import init_distributed, make_engine  # noqa: E402
from Code.training.setup import as_batch, build_critics, train_loader  # noqa: E402
from Code.training.steps import DistillStep  # noqa: E402
from Code.training.trainer import single_process_env, train_micro_batch  # noqa: E402

CORPUS = REPO.parent / "shared" / "corpus" / "wikitext-2"

# Dense BF16 peak (no sparsity) per GPU, TFLOP/s, from the vendors' data sheets (SXM parts).
GPU_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 70.0, "4090": 165.0}

CASES = {  # name -> (--loss spec, bare case it contains)
    "lm": ("lm", "bare/student"),
    "mse": ("mse+lm", "bare/teacher-hidden"),
    "wd": ("wd+lm", "bare/teacher-hidden"),
    "kd": ("kd+lm", "bare/teacher-logits"),
    # issue 21's estimators beside the critic (`wd` runs the default critic, one-sided LP)
    "wd_gp": ("wd+lm", "bare/teacher-hidden"),
    "wd_unpaired": ("wd+lm", "bare/teacher-hidden"),
    "swd": ("swd+lm", "bare/teacher-hidden"),
    "sinkhorn": ("sinkhorn+lm", "bare/teacher-hidden"),
    "sinkhorn_blur5": ("sinkhorn[sinkhorn_blur=5]+lm", "bare/teacher-hidden"),
    "sinkhorn_unpaired": ("sinkhorn_unpaired+lm", "bare/teacher-hidden"),
    "gauss_w2": ("gauss_w2+lm", "bare/teacher-hidden"),
}
CRITIC_VARIANTS = {"wd_gp": {"penalty": "gp"}, "wd_unpaired": {"pairing": "unpaired"}}  # case -> CriticConfig fields


# ---------------------------------------------------------------------------------------------- FLOPs
def flops_per_token(n_params: int, n_layer: int, n_head: int, head_dim: int, seq_len: int,
                    training: bool) -> float:
    """Model FLOPs per token, nanoGPT's `estimate_mfu` (Chinchilla/PaLM appendix B accounting).

    Trained token: 6N + 12·L·H·Q·T (forward 2N + 4LHQT, backward twice that); a no-grad (teacher)
    token: 2N + 4·L·H·Q·T. N counts the matmul weights that run (position embeddings excluded; token
    embeddings only when they serve as the lm_head), L layers, H heads, Q head dim, T sequence length.
    """
    attention = 4 * n_layer * n_head * head_dim * seq_len
    return (6 * n_params + 3 * attention) if training else (2 * n_params + attention)


def matmul_params(model: torch.nn.Module, with_lm_head: bool) -> int:
    """Parameters that are matmul weights in a forward: all but wpe, and wte only when it is the lm_head."""
    gpt = model.transformer if hasattr(model, "transformer") else model.student.transformer
    total = sum(p.numel() for p in model.parameters())
    total -= gpt.wpe.weight.numel()
    if not with_lm_head:
        total -= gpt.wte.weight.numel()
    return total


def device_peak(device: torch.device, dtype: torch.dtype) -> tuple[float | None, str]:
    """(peak FLOP/s, its source) from the table for known GPUs; None means: measure a large matmul."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tflops in GPU_PEAK_TFLOPS.items():
            if key in name and dtype == torch.bfloat16:
                return tflops * 1e12, f"{name}: {tflops:g} TFLOP/s BF16 dense (data sheet)"
    return None, "large matmul measured in this run"


def matmul_flops(device: torch.device, dtype: torch.dtype, n: int, reps: int = 3) -> float:
    """FLOP/s of an n x n x n matmul in the models' compute dtype: the CPU's achievable peak."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    times = []
    for _ in range(reps):
        sync(device)
        t0 = CLOCK[0]()
        a @ b
        sync(device)
        times.append(CLOCK[0]() - t0)
    return 2 * n**3 / min(times)


# The step clock (--clock): wall time, or this process's CPU time (all its threads), which on an
# oversubscribed machine measures the work done rather than the wait for a free core.
CLOCK = [time.perf_counter]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------------------------- setup
def bench_data(vocab: int) -> Path:
    """WikiText-2 (valid split as train) through the project's converter, built once and cached."""
    out = REPO / "Code" / "data" / f"bench-wikitext2-v{vocab}"
    if (out / "meta.json").is_file():
        return out
    if not CORPUS.is_dir():
        raise FileNotFoundError(f"{CORPUS} not found: pass --data-dir of a prepared data folder")
    cmd = [sys.executable, str(REPO / "Code" / "data_download.py"), "--dataset", "text",
           "--train", str(CORPUS / "valid.txt"), "--valid", str(CORPUS / "test.txt"),
           "--test", str(CORPUS / "test.txt"), "--out-dir", str(out)]
    if vocab != 50257:
        cmd += ["--train-tokenizer", str(vocab)]
    print(f"building bench data {out} (once)", file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out


def resolve(opts: argparse.Namespace) -> argparse.Namespace:
    if opts.quick:
        defaults = dict(n_layer=4, n_embd=256, n_head=4, vocab=4096, student_layers="0,2", seq_len=128,
                        batch=4, rounds=3, steps=1)
    else:
        defaults = dict(n_layer=12, n_embd=768, n_head=12, vocab=50257, student_layers="0,2,4,6,8,10",
                        seq_len=256, batch=4, rounds=3, steps=1)
    for key, value in defaults.items():
        if getattr(opts, key) is None:
            setattr(opts, key, value)
    on_gpu = torch.cuda.is_available() and opts.device != "cpu"
    opts.device = "cuda" if on_gpu else "cpu"
    if opts.precision == "auto":
        # CPUs without native bf16 matmul (AVX2-only here) run bf16 GEMMs ~60x slower than fp32.
        opts.precision = "bf16" if on_gpu else "fp32"
    return opts


def run_config(opts: argparse.Namespace, data_dir: Path, loss: str) -> RunConfig:
    """The training config exactly as `train_related.py` would resolve it."""
    argv = ["--data-dir", str(data_dir), "--loss", loss, "--seq-len", str(opts.seq_len),
            "--micro-batch-size", str(opts.batch), "--precision", opts.precision, "--n-critic", str(opts.n_critic),
            "--compile", opts.compile, "--launcher", opts.launcher, "--num-workers", str(opts.num_workers),
            "--out-dir", tempfile.gettempdir(), "--max-steps", "1000000", "--zero-stage", str(opts.zero_stage)]
    if opts.critic_samples is not None:
        argv += ["--critic-samples", str(opts.critic_samples)]
    return parse_config(argv)


def make_teacher(opts: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> GPT2LMHeadModel:
    if opts.teacher:
        return load_teacher(opts.teacher, device=device, dtype=dtype)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=opts.vocab, n_positions=max(1024, opts.seq_len), n_embd=opts.n_embd,
                        n_layer=opts.n_layer, n_head=opts.n_head, bos_token_id=opts.vocab - 1,
                        eos_token_id=opts.vocab - 1)
    config._attn_implementation = "sdpa"  # what load_teacher asks for
    teacher = GPT2LMHeadModel(config).to(device=device, dtype=dtype).eval()
    teacher.requires_grad_(False)
    return teacher


class Setup:
    """Everything the cases share: teacher, student engine, critics, one batch stream."""

    def __init__(self, opts: argparse.Namespace, data_dir: Path, device: torch.device,
                 with_peer: bool = True, with_engine: bool = True) -> None:
        self.opts, self.device = opts, device
        self.cfg = cfg = run_config(opts, data_dir, "lm")
        self.dtype = torch.bfloat16 if opts.precision == "bf16" else torch.float32
        teacher_dtype = self.dtype if device.type == "cuda" else torch.float32  # as train_related.py
        if not with_engine:  # the peer alone (its memory child): no bf16 teacher of ours in its memory
            teacher_dtype = torch.float32
        self.teacher = make_teacher(opts, device, teacher_dtype)
        layers = parse_student_layers(opts.student_layers, self.teacher.config.n_layer)
        self.layer_map = default_layer_map(layers, self.teacher.config.n_layer)
        student = truncate_teacher(self.teacher, layers).float()
        student.config.use_cache = False
        self.peer_student = copy.deepcopy(student) if with_peer else None
        self.peer_teacher = None
        if with_peer:  # the peer keeps its teacher in fp32 on the same device, as a typical script does
            self.peer_teacher = self.teacher if teacher_dtype == torch.float32 \
                else copy.deepcopy(self.teacher).float()
        self.blocks, sampler, loader_kwargs = train_loader(
            data_dir, opts.seq_len, opts.batch, 0, 1, cfg.seed, cfg.data.num_workers, pin=device.type == "cuda")
        self.batches = endless_batches(self.blocks, sampler, loader_kwargs, cfg.seed, 0)
        self.engine = None
        self.steps: dict[str, DistillStep] = {}
        if with_engine:
            dim = self.teacher.config.n_embd
            model = DistillStudent(student, [s for s, _ in self.layer_map], dim)
            self.engine = make_engine(cfg.optim, model, 1_000_000, device, cfg.model.compile)
            self.engine.train()
            critics = build_critics(cfg.critic, len(self.layer_map), dim, 1_000_000, cfg.seed, device)
            for name, (spec, _) in CASES.items():  # one step per case over the same engine and critics
                terms = tuple(parse_losses(spec, None, defaults=cfg.flags))
                own = critics if name not in CRITIC_VARIANTS else build_critics(
                    dataclasses.replace(cfg.critic, **CRITIC_VARIANTS[name]), len(self.layer_map), dim, 1_000_000,
                    cfg.seed, device)
                step = DistillStep(self.teacher, model, self.layer_map, terms, cfg.seed, lambda _n, c=own: c)
                step.bind(self.engine, 1_000_000)
                self.steps[name] = step
        self.step_no = 0
        self.sums: dict[str, torch.Tensor] = {}

    def next_batch(self) -> tuple[dict[str, torch.Tensor], float]:
        t0 = time.perf_counter()
        batch = as_batch(next(self.batches), self.device)
        return batch, time.perf_counter() - t0

    def case_step(self, name: str) -> float:
        """One micro-step exactly as train_related.py's loop runs it; returns the time spent getting data."""
        batch, wait = self.next_batch()
        parts = train_micro_batch(self.engine, self.steps[name], batch, self.step_no + 1, 0).parts
        for k, v in parts.items():
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
        self.step_no += 1
        return wait

    def bare_step(self, name: str) -> float:
        """Teacher no-grad forward (none / body / body + lm_head), student forward + CE + backward + step."""
        batch, wait = self.next_batch()
        if name != "bare/student":
            with torch.no_grad():
                body = self.teacher.transformer(input_ids=batch["input_ids"], use_cache=False)
                if name == "bare/teacher-logits":
                    self.teacher.lm_head(body.last_hidden_state)
        logits, _ = self.engine(batch["input_ids"])
        loss = F.cross_entropy(logits.float().flatten(0, 1), batch["labels"].flatten())
        self.engine.backward(loss)
        self.engine.step()
        return wait

    def log_interval_sync(self) -> None:
        """What the loop does at a log interval: one host sync over the accumulated values."""
        if self.sums:
            torch.stack([v.float() for v in self.sums.values()]).tolist()
        self.sums = {}


# ------------------------------------------------------------------------------------------------ peer
def make_peer(setup: Setup, out_dir: str) -> Any:
    """A typical user's MSE distillation with the Hugging Face Trainer (what `mse` is compared with)."""
    from torch.utils.data import Dataset
    from transformers import Trainer, TrainerCallback, TrainingArguments

    class Blocks(Dataset):
        def __init__(self, blocks) -> None:
            self.blocks = blocks

        def __len__(self) -> int:
            return len(self.blocks)

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            ids = self.blocks[i][:-1]
            return {"input_ids": ids, "labels": ids.clone()}  # the model shifts labels itself

    pairs = setup.layer_map
    teacher = setup.peer_teacher

    class DistillTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = model(**inputs, output_hidden_states=True)
            with torch.no_grad():
                t_out = teacher(input_ids=inputs["input_ids"], output_hidden_states=True)
            mse = sum(F.mse_loss(out.hidden_states[s], t_out.hidden_states[t]) for s, t in pairs) / len(pairs)
            loss = out.loss + mse
            return (loss, out) if return_outputs else loss

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            sync(setup.device)
            self.ends.append(CLOCK[0]())

    on_gpu = setup.device.type == "cuda"
    targs = TrainingArguments(output_dir=out_dir, per_device_train_batch_size=setup.opts.batch, max_steps=2,
                              learning_rate=setup.cfg.optim.lr, warmup_steps=0, logging_strategy="no",
                              save_strategy="no", report_to=[], disable_tqdm=True, use_cpu=not on_gpu,
                              bf16=setup.opts.precision == "bf16", seed=setup.cfg.seed,
                              # this process holds a one-rank process group (ours needs it), so Trainer
                              # wraps the peer in DDP; spare it the unused-parameter search a plain
                              # single-GPU script would not pay
                              ddp_find_unused_parameters=False)
    clock = StepClock()
    trainer = DistillTrainer(model=setup.peer_student, args=targs, train_dataset=Blocks(setup.blocks),
                             callbacks=[clock])
    return trainer, clock


def peer_steps(trainer: Any, clock: Any, steps: int) -> list[float]:
    """One `train()` call of 1 + steps steps; per-step times after the first (setup stays out)."""
    clock.ends = []
    trainer.args.max_steps = 1 + steps
    trainer.train()
    return [b - a for a, b in zip(clock.ends[:-1], clock.ends[1:], strict=True)]


# ---------------------------------------------------------------------------------------------- memory
def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_rss_peak() -> None:
    """Linux: "5" to clear_refs resets VmHWM to the current RSS (imports peaked above it already)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def rss_peak_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def memory_child(opts: argparse.Namespace, data_dir: Path, which: str) -> None:
    """Build only `which` (ours or peer) in this fresh process, run 3 steps, print its peak memory."""
    device = torch.device(opts.device)
    reset_rss_peak()
    base = rss_bytes()
    setup = Setup(opts, data_dir, device, with_peer=which == "peer", with_engine=which == "ours")
    if which == "ours":
        for _ in range(3):
            setup.case_step("mse")
        setup.log_interval_sync()
    else:
        with tempfile.TemporaryDirectory() as tmp:
            trainer, clock = make_peer(setup, tmp)
            peer_steps(trainer, clock, 2)
    if device.type == "cuda":
        peak, method = torch.cuda.max_memory_allocated(device), "torch.cuda.max_memory_allocated"
    else:
        peak = rss_peak_bytes() - base
        method = "RSS high-water mark (VmHWM, reset before the models) minus RSS then, fresh subprocess"
    print(json.dumps({"which": which, "peak_bytes": peak, "method": method}))


def measure_memory(argv: list[str]) -> dict[str, dict]:
    """Both children side by side (memory is not timing), each in its own process."""
    # Without the rendezvous variables of this process: each child picks its own free port.
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    procs = {which: subprocess.Popen([sys.executable, __file__, *argv, "--memory-child", which], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for which in ("ours", "peer")}
    out = {}
    for which, proc in procs.items():
        stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"memory child {which} failed:\n{stderr[-3000:]}")
        out[which] = json.loads(stdout.strip().splitlines()[-1])
    return out


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


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


if __name__ == "__main__":
    sys.exit(main())
