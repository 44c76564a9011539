"""What one method does with one micro-batch; the `Trainer` owns everything else (loop, logs, saves).

A step is built for a run (`for_run`), told its engine and budget (`bind`), asked for its batch stream
from a position (`stream`), and per micro-batch returns the loss to backpropagate (`compute`). The
distillation step covers every `--loss` of the registry; MiniLLM's step lives in `minillm_step.py`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from Code.config import RunConfig
from Code.critic import CriticTrainer
from Code.data_pipeline.teacher_cache import CachedBlocks
from Code.modeling import families
from Code.modeling.student import DistillStudent
from Code.objectives.registry import LossInputs, LossPlan, Term, compute_losses, term_values
from Code.objectives.topk_kd import TopKTargets
from Code.training.data_stream import endless_batches
from Code.training.engines import Engine
from Code.training.setup import Models, as_batch, build_critics, train_loader
from Code.training.teacher_targets import open_run_cache
from Code.utils import print0, rank, world_size


@dataclass
class StepOutput:
    loss: Tensor                 # what the engine backpropagates
    parts: dict[str, Tensor]     # detached values to log, by name (`kd`, `wd/layer2`, ...)
    tokens: int                  # tokens this micro-batch processed (throughput)
    # measured now and then, logged under their own names (`grad_share/kd`), averaged over the measurements
    # of the log interval (not over its micro-batches)
    probes: dict[str, Tensor] = field(default_factory=dict)


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
def teacher_features(teacher: PreTrainedModel, input_ids: Tensor, attention_mask: Tensor | None,
                     teacher_idx: list[int], need_logits: bool,
                     need_hidden: bool) -> tuple[Tensor | None, list[Tensor]]:
    """Only what the losses need: the lm_head (a 50k-wide matmul) is skipped when no logit loss asks."""
    last, states = families.decoder_forward(teacher, input_ids, attention_mask, need_hidden)
    hidden = [states[i] for i in teacher_idx] if states is not None else []
    logits = families.head(teacher)(last) if need_logits else None
    return logits, hidden


def _flat_tensors(outputs: Any) -> list[Tensor]:
    if isinstance(outputs, Tensor):
        return [outputs]
    if isinstance(outputs, list | tuple):
        return [t for item in outputs for t in _flat_tensors(item)]
    return []


@contextlib.contextmanager
def engine_output_hooks_suspended(outputs: Any) -> Iterator[None]:
    """Let a probing `torch.autograd.grad` through the engine's outputs without starting the engine's backward.

    DeepSpeed (0.19 here, with its PyTorch-style backward support) hooks the tensors its engine's forward
    returns: the first gradient to reach them starts its backward bookkeeping (timers, ZeRO's reduction
    state, gradient-accumulation scaling; at ZeRO stage 0 an error for a backward outside `engine.backward`),
    once per forward. The hooks come off the outputs here and go back on as the forward left them, so
    `engine.backward` then runs exactly as without the probe. The DDP engine and older DeepSpeed hook no
    output: nothing to do.
    """
    tensors = _flat_tensors(outputs)
    managers: list[Any] = []
    for t in tensors:
        for m in getattr(t, "_backward_hook_managers", ()):
            if all(m is not seen for seen in managers):
                managers.append(m)
    for m in managers:
        m.remove_hooks()
    try:
        yield
    finally:
        for t in tensors:
            if hasattr(t, "_backward_hook_managers"):  # re-registering attaches each manager again
                t._backward_hook_managers = [m for m in t._backward_hook_managers
                                             if all(m is not ours for ours in managers)]
        for m in managers:
            m.register_hooks_on_outputs(outputs)


class DistillStep:
    """Teacher features, student features, the critics' turn (WGAN-GP), then the weighted loss."""

    def __init__(self, teacher: PreTrainedModel | None, module: DistillStudent, layer_map: list[tuple[int, int]],
                 terms: tuple[Term, ...], seed: int, critic_factory: Any = None, grad_share_interval: int = 0) -> None:
        self.teacher = teacher
        self.module = module
        self.plan = LossPlan.from_terms(terms)
        self.teacher_idx = [t for _, t in layer_map]
        self.layer_ids = tuple(s for s, _ in layer_map) or None
        self.seed = seed
        self.critic_factory = critic_factory  # (total_micro_steps) -> CriticTrainer, when a term needs critics
        self.grad_share_interval = grad_share_interval  # steps between gradient-share probes; 0 = never
        self.critics: CriticTrainer | None = None
        self.engine: Engine | None = None
        self.data: tuple[Any, Any, dict] | None = None
        self.device = torch.device("cpu")
        self.info: dict[str, Any] = {}
        self.tokens_per_step: int | None = None
        self.cache_temperature = 1.0  # of a teacher cache's targets (for_run sets it)

    @classmethod
    def for_run(cls, cfg: RunConfig, models: Models, device: torch.device, tokenizer: Any = None) -> DistillStep:
        module = DistillStudent(models.student, [s for s, _ in models.layer_map], models.teacher_dim)

        def critics(total_micro_steps: int) -> CriticTrainer:
            return build_critics(cfg.critic, len(models.layer_map), models.teacher_dim, total_micro_steps,
                                 cfg.seed, device)

        step = cls(models.teacher, module, models.layer_map, cfg.losses, cfg.seed, critics,
                   cfg.log.grad_share_interval)
        step.device = device
        step.data = train_loader(cfg.data.data_dir, cfg.data.seq_len, cfg.optim.micro_batch_size, rank(), world_size(),
                                 cfg.seed, cfg.data.num_workers, pin=device.type == "cuda", task=cfg.data.task)
        step.info = {"loss": cfg.loss_label, "weights": cfg.flags.get("weights"),
                     "layer_map": [list(p) for p in models.layer_map]}
        step.tokens_per_step = cfg.optim.micro_batch_size * cfg.data.seq_len * cfg.optim.grad_accum * world_size()
        cache = open_run_cache(cfg, verify=True)
        if cache is not None:  # the teacher's logits come from the cache, by block index: any rank, any order
            blocks, sampler, kwargs = step.data
            step.data = (CachedBlocks(blocks, cache), sampler, kwargs)
            step.plan = LossPlan.from_terms(cfg.losses, cached=True)
            step.cache_temperature = cache.temperature
            step.info["teacher_cache"] = str(cache.path)
            if not step.plan.needs_teacher:  # the teacher only built the student: free its memory
                step.teacher = models.teacher = None
        return step

    @staticmethod
    def needs_teacher(cfg: RunConfig) -> bool:
        return LossPlan.from_terms(cfg.losses, cached=bool(cfg.data.teacher_cache)).needs_teacher

    def batches_per_epoch(self) -> int:
        _, sampler, kwargs = self._data()
        return sampler.samples_per_rank // kwargs["batch_size"]

    def bind(self, engine: Engine, total_micro_steps: int) -> None:
        self.engine = engine
        if self.plan.needs_critic and self.critics is None:
            self.critics = self.critic_factory(total_micro_steps)
            print0("progress line: wd is the student's critic term, -E[f(student)] (f: each layer's critic); a critic "
                   "plus a constant is as good a critic, so its level means nothing and it is often negative: "
                   "watch it fall. wd_est is the critics' Wasserstein-1 estimate E[f(teacher)] - E[f(student)], "
                   "mean over layers: the distance itself (>= 0 up to noise; per layer: loss/wd/layer<i>)")

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
        t_topk = None
        if "topk_ids" in batch:  # --teacher-cache: the teacher's top-k targets of these blocks
            t_topk = TopKTargets(batch["topk_vals"], batch["topk_ids"], batch["topk_rest"], self.cache_temperature)
        s_logits, s_hidden = self.engine(input_ids, attention_mask=attention_mask, need_hidden=plan.needs_hidden)
        if plan.needs_critic:
            self.train_critics(t_hidden, s_hidden, mask)
        inputs = LossInputs(labels=labels, mask=mask, student_logits=s_logits, teacher_logits=t_logits,
                            teacher_topk=t_topk, student_hidden=s_hidden, teacher_hidden=t_hidden, critic=self.critics,
                            layer_ids=self.layer_ids, seed=self.seed, step=step)
        total, parts = compute_losses(plan.terms, inputs)
        probes: dict[str, Tensor] = {}
        if self.grad_share_interval and micro == 0 and (step - 1) % self.grad_share_interval == 0:
            probes = self.gradient_shares(inputs, (s_logits, s_hidden))
        return StepOutput(total, parts, input_ids.numel(), probes)

    def train_critics(self, teacher_hidden: list[Tensor], student_hidden: list[Tensor], mask: Tensor) -> None:
        """The critics' turn (WGAN-GP order): `n_critic` updates against the current student, which then moves.

        The student's features are detached here: the critics' updates never reach the student. A fresh
        run's first turn is the critics' warm-up (`--critic-warmup-steps` more updates on this batch), so the
        student's first step already follows a critic that measures something.
        """
        warmup = self.critics.warmup_pending
        estimates = self.critics.update(teacher_hidden, [h.detach() for h in student_hidden], mask)
        if warmup:
            shown = ", ".join(f"{v:.4g}" for v in estimates.tolist())
            print0(f"critic warm-up: {self.critics.warmup_steps} updates on the first batch before the student "
                   f"moves; per-layer estimates now {shown}")

    def gradient_shares(self, inputs: LossInputs, outputs: Any) -> dict[str, Tensor]:
        """`grad_norm/<term>`: L2 norm of the gradient `weight * term` sends into the student's trainable
        parameters (this micro-batch and rank, before the 1/grad_accum scaling and clipping);
        `grad_share/<term>`: its squared norm over the sum of the weighted terms' squared norms (shares sum
        to 1); `grad_norm/total`: the norm of their sum, the gradient the engine will backpropagate.

        Each term's value comes again from the registry (`term_values`, generic over terms) on this step's
        graph, kept with `retain_graph`; `autograd.grad` leaves `.grad`, the engine's hooks (see
        `engine_output_hooks_suspended`) and the RNG as they were, so the step's own backward is unchanged.
        """
        params = [p for p in self.module.parameters() if p.requires_grad]
        device = params[0].device
        squared: dict[str, Tensor] = {}
        total: list[Tensor | None] = [None] * len(params)  # running sum of the weighted terms' gradients
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
                engine_output_hooks_suspended(outputs):
            values = term_values(self.plan.terms, inputs)
            for term, (value, _) in zip(self.plan.terms, values, strict=True):
                if term.weight == 0:
                    continue
                grads: Any = [None] * len(params)
                if value.requires_grad:
                    grads = torch.autograd.grad(term.weight * value, params, retain_graph=True, allow_unused=True)
                sq = torch.zeros((), device=device)
                for i, g in enumerate(grads):
                    if g is not None:
                        g = g.float()
                        sq = sq + g.pow(2).sum()
                        total[i] = g if total[i] is None else total[i] + g
                squared[term.name] = sq
        if not squared:
            return {}
        whole = torch.stack(list(squared.values())).sum()
        probes = {f"grad_norm/{name}": sq.sqrt() for name, sq in squared.items()}
        probes.update({f"grad_share/{name}": sq / whole.clamp(min=1e-30) for name, sq in squared.items()})
        probes["grad_norm/total"] = sum((g.pow(2).sum() for g in total if g is not None),
                                        torch.zeros((), device=device)).sqrt()
        return probes

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
