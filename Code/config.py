"""A run's configuration as typed objects, built once from the parsed command line (`arguments.py`).

Past the command line nothing reads an argparse Namespace: the trainer, steps, engines, setup and
selection each take the part of `RunConfig` they need. `RunConfig.flags` keeps the flat resolved flags,
which is what `args.json` records (and what the study compares to reuse a run).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from Code.data_pipeline.instruction_data import PROMPT_TASKS
from Code.objectives.parsing import parse_losses
from Code.objectives.registry import Term


@dataclass(frozen=True)
class ModelConfig:
    teacher: str
    no_teacher: bool
    student: str | None
    student_config: str | None
    student_layers: str
    layer_map: str | None
    compile: str
    student_dropout: float | None = None  # resid/embd/attn dropout of the student; None: its config's own


@dataclass(frozen=True)
class DataConfig:
    data_dir: str
    seq_len: int
    num_workers: int
    task: str  # "lm" or "prompt"

    @property
    def prompt_masked(self) -> bool:
        return self.task == "prompt"


@dataclass(frozen=True)
class OptimConfig:
    micro_batch_size: int
    grad_accum: int
    lr: float
    min_lr_ratio: float
    warmup_steps: int
    weight_decay: float
    clip_grad: float
    max_steps: int | None
    epochs: float
    zero_stage: int
    precision: str
    ds_config: str
    launcher: str


@dataclass(frozen=True)
class CriticConfig:
    n_critic: int
    hidden: int
    optimizer: str
    lr: float
    betas: tuple[float, float]
    schedule: str
    gp_lambda: float
    samples: int
    min_lr_ratio: float = 0.1   # a cosine critic schedule decays to this fraction of lr (0: to zero)
    standardize: bool = True    # critic inputs in units of the teacher's running per-dimension std
    warmup_steps: int = 0       # extra critic updates on a fresh run's first batch, before the student moves


@dataclass(frozen=True)
class LogConfig:
    log_interval: int
    eval_interval: int
    eval_iters: int
    save_interval: int
    keep_checkpoints: int
    tensorboard: bool
    progress: bool
    grad_share_interval: int = 0  # every N steps, each weighted term's gradient norm and share (0 = off)


@dataclass(frozen=True)
class SelectionConfig:
    select_by: str
    val_prompts: int
    max_new_tokens: int
    max_prompt_len: int


@dataclass(frozen=True)
class MiniLLMConfig:
    mix_alpha: float
    pt_weight: float
    pt_data_dir: str | None
    length_norm: bool


@dataclass(frozen=True)
class RunConfig:
    out_dir: Path
    seed: int
    resume: bool
    overwrite: bool
    model: ModelConfig
    data: DataConfig
    optim: OptimConfig
    losses: tuple[Term, ...]
    critic: CriticConfig
    log: LogConfig
    select: SelectionConfig
    minillm: MiniLLMConfig
    flags: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def loss_label(self) -> str:
        return "+".join(t.name for t in self.losses)


def from_namespace(ns: argparse.Namespace) -> RunConfig:
    """The one conversion from flags to typed config (`arguments.parse_config` calls it)."""
    return RunConfig(
        out_dir=Path(ns.out_dir), seed=ns.seed, resume=ns.resume, overwrite=ns.overwrite,
        model=ModelConfig(ns.teacher, ns.no_teacher, ns.student, ns.student_config, ns.student_layers,
                          ns.layer_map, ns.compile, ns.student_dropout),
        data=DataConfig(ns.data_dir, ns.seq_len, ns.num_workers, "prompt" if ns.task in PROMPT_TASKS else ns.task),
        optim=OptimConfig(ns.micro_batch_size, ns.grad_accum, ns.lr, ns.min_lr_ratio, ns.warmup_steps,
                          ns.weight_decay, ns.clip_grad, ns.max_steps, ns.epochs, ns.zero_stage, ns.precision,
                          ns.ds_config, ns.launcher),
        losses=tuple(parse_losses(ns.loss, ns.weights, defaults=vars(ns))),
        critic=CriticConfig(ns.n_critic, ns.critic_hidden, ns.critic_optimizer, ns.critic_lr,
                            tuple(float(b) for b in str(ns.critic_betas).split(",")),  # type: ignore[arg-type]
                            ns.critic_schedule, ns.gp_lambda, ns.critic_samples, ns.critic_min_lr_ratio,
                            ns.critic_standardize, ns.critic_warmup_steps),
        log=LogConfig(ns.log_interval, ns.eval_interval, ns.eval_iters, ns.save_interval, ns.keep_checkpoints,
                      not ns.no_tensorboard, not ns.no_progress, ns.grad_share_interval),
        select=SelectionConfig(ns.select_by, ns.val_prompts, ns.max_new_tokens, ns.max_prompt_len),
        minillm=MiniLLMConfig(ns.mix_alpha, ns.pt_weight, ns.pt_data_dir, not ns.no_length_norm),
        flags=dict(vars(ns)),
    )
