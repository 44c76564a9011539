"""bench/kd_step.py's case table and shared setup: the bench data, the resolved options and run config, the
teacher, and `Setup` (student engine, one `DistillStep` per case, critics, one batch stream)."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

from Code.arguments import parse_config
from Code.config import RunConfig
from Code.modeling.layer_map import default_layer_map
from Code.modeling.loading import load_teacher
from Code.modeling.student import DistillStudent
from Code.modeling.truncation import parse_student_layers, truncate_teacher
from Code.objectives.parsing import parse_losses
from Code.training.data_stream import endless_batches
from Code.training.engines import make_engine
from Code.training.setup import as_batch, build_critics, train_loader
from Code.training.steps import DistillStep
from Code.training.trainer import train_micro_batch

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus" / "wikitext-2"

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
