"""What one method does with one micro-batch; the `Trainer` owns everything else (loop, logs, saves).

A step is built for a run (`for_run`), told its engine and budget (`bind`), asked for its batch stream
from a position (`stream`), and per micro-batch returns the loss to backpropagate (`compute`). The
distillation step covers every `--loss` of the registry; MiniLLM's step lives in `minillm_step.py`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from transformers import GPT2LMHeadModel

from Code.config import RunConfig
from Code.critic import CriticTrainer
from Code.modeling.student import DistillStudent
from Code.objectives.registry import LossInputs, LossPlan, Term, compute_losses
from Code.training.data_stream import endless_batches
from Code.training.engines import Engine
from Code.training.setup import Models, as_batch, build_critics, train_loader
from Code.utils import rank, world_size


@dataclass
class StepOutput:
    loss: Tensor                 # what the engine backpropagates
    parts: dict[str, Tensor]     # detached values to log, by name (`kd`, `wd/layer2`, ...)
    tokens: int                  # tokens this micro-batch processed (throughput)


class Step(Protocol):
    """The interface the `Trainer` drives; `DistillStep` and `MiniLLMStep` implement it."""

    module: nn.Module            # what the engine trains
    info: dict[str, Any]         # what `distill_info.json` records about the method
    tokens_per_step: int | None  # fixed token budget per optimizer step, all ranks (None: it varies)

    def batches_per_epoch(self) -> int: ...
    def bind(self, engine: Engine, total_micro_steps: int) -> None: ...
    def stream(self, start_batch: int) -> Iterator[Any]: ...
    def compute(self, batch: Any, step: int, micro: int) -> StepOutput: ...
    def after_update(self) -> None: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...
    def log_key(self, key: str) -> str: ...


@torch.no_grad()
def teacher_features(teacher: GPT2LMHeadModel, input_ids: Tensor, attention_mask: Tensor | None,
                     teacher_idx: list[int], need_logits: bool,
                     need_hidden: bool) -> tuple[Tensor | None, list[Tensor]]:
    """Only what the losses need: the lm_head (a 50k-wide matmul) is skipped when no logit loss asks."""
    body = teacher.transformer(input_ids=input_ids, attention_mask=attention_mask,
                               output_hidden_states=need_hidden, use_cache=False)
    hidden = [body.hidden_states[i] for i in teacher_idx] if need_hidden else []
    logits = teacher.lm_head(body.last_hidden_state) if need_logits else None
    return logits, hidden


class DistillStep:
    """Teacher features, student features, the critics' turn (WGAN-GP), then the weighted loss."""

    def __init__(self, teacher: GPT2LMHeadModel | None, module: DistillStudent, layer_map: list[tuple[int, int]],
                 terms: tuple[Term, ...], seed: int, critic_factory: Any = None) -> None:
        self.teacher = teacher
        self.module = module
        self.plan = LossPlan.from_terms(terms)
        self.teacher_idx = [t for _, t in layer_map]
        self.layer_ids = tuple(s for s, _ in layer_map) or None
        self.seed = seed
        self.critic_factory = critic_factory  # (total_micro_steps) -> CriticTrainer, when a term needs critics
        self.critics: CriticTrainer | None = None
        self.engine: Engine | None = None
        self.data: tuple[Any, Any, dict] | None = None
        self.device = torch.device("cpu")
        self.info: dict[str, Any] = {}
        self.tokens_per_step: int | None = None

    @classmethod
    def for_run(cls, cfg: RunConfig, models: Models, device: torch.device, tokenizer: Any = None) -> DistillStep:
        module = DistillStudent(models.student, [s for s, _ in models.layer_map], models.teacher_dim)

        def critics(total_micro_steps: int) -> CriticTrainer:
            return build_critics(cfg.critic, len(models.layer_map), models.teacher_dim, total_micro_steps,
                                 cfg.seed, device)

        step = cls(models.teacher, module, models.layer_map, cfg.losses, cfg.seed, critics)
        step.device = device
        step.data = train_loader(cfg.data.data_dir, cfg.data.seq_len, cfg.optim.micro_batch_size, rank(), world_size(),
                                 cfg.seed, cfg.data.num_workers, pin=device.type == "cuda", task=cfg.data.task)
        step.info = {"loss": cfg.loss_label, "weights": cfg.flags.get("weights"),
                     "layer_map": [list(p) for p in models.layer_map]}
        step.tokens_per_step = cfg.optim.micro_batch_size * cfg.data.seq_len * cfg.optim.grad_accum * world_size()
        return step

    @staticmethod
    def needs_teacher(cfg: RunConfig) -> bool:
        return LossPlan.from_terms(cfg.losses).needs_teacher

    def batches_per_epoch(self) -> int:
        _, sampler, kwargs = self._data()
        return sampler.samples_per_rank // kwargs["batch_size"]

    def bind(self, engine: Engine, total_micro_steps: int) -> None:
        self.engine = engine
        if self.plan.needs_critic and self.critics is None:
            self.critics = self.critic_factory(total_micro_steps)

    def stream(self, start_batch: int) -> Iterator[dict[str, Tensor]]:
        blocks, sampler, kwargs = self._data()
        for block in endless_batches(blocks, sampler, kwargs, self.seed, start_batch):
            yield as_batch(block, self.device)

    def compute(self, batch: dict[str, Tensor], step: int, micro: int = 0) -> StepOutput:
        input_ids, labels = batch["input_ids"], batch["labels"]
        attention_mask = batch.get("attention_mask")
        mask = attention_mask.bool() if attention_mask is not None else torch.ones_like(input_ids, dtype=torch.bool)
        plan = self.plan
        t_logits, t_hidden = (None, [])
        if plan.needs_teacher:
            t_logits, t_hidden = teacher_features(self.teacher, input_ids, attention_mask, self.teacher_idx,
                                                  plan.needs_teacher_logits, plan.needs_hidden)
        s_logits, s_hidden = self.engine(input_ids, attention_mask=attention_mask, need_hidden=plan.needs_hidden)
        if plan.needs_critic:
            self.train_critics(t_hidden, s_hidden, mask)
        inputs = LossInputs(labels=labels, mask=mask, student_logits=s_logits, teacher_logits=t_logits,
                            student_hidden=s_hidden, teacher_hidden=t_hidden, critic=self.critics,
                            layer_ids=self.layer_ids, seed=self.seed, step=step)
        total, parts = compute_losses(plan.terms, inputs)
        return StepOutput(total, parts, input_ids.numel())

    def train_critics(self, teacher_hidden: list[Tensor], student_hidden: list[Tensor], mask: Tensor) -> None:
        """The critics' turn (WGAN-GP order): `n_critic` updates against the current student, which then moves.

        The student's features are detached here: the critics' updates never reach the student.
        """
        self.critics.update(teacher_hidden, [h.detach() for h in student_hidden], mask)

    def after_update(self) -> None:
        if self.critics is not None:
            self.critics.step_scheduler()

    def state_dict(self) -> dict[str, Any]:
        return {"critics": self.critics.state_dict() if self.critics is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.critics is not None and state.get("critics") is not None:
            self.critics.load_state_dict(state["critics"])

    def log_key(self, key: str) -> str:
        return f"loss/{key}"

    def _data(self) -> tuple[Any, Any, dict]:
        if self.data is None:
            raise ValueError("this step was built without training data: use DistillStep.for_run")
        return self.data
