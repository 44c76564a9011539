"""One distillation forward: teacher features, student features, critic updates, the weighted loss.

The loop calls `distill_forward` per micro-batch and backpropagates what it returns. What is computed
follows what the chosen losses need (`LossPlan`), never the losses' names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from transformers import GPT2LMHeadModel

from Code.objectives.registry import LossInputs, LossOptions, LossSpec, compute_losses


@dataclass(frozen=True)
class LossPlan:
    terms: list[tuple[LossSpec, float]]
    needs_teacher: bool
    needs_teacher_logits: bool
    needs_hidden: bool
    needs_critic: bool

    @classmethod
    def from_terms(cls, terms: list[tuple[LossSpec, float]]) -> LossPlan:
        return cls(
            terms=terms,
            needs_teacher=any(s.needs_teacher for s, _ in terms),
            needs_teacher_logits=any(s.needs_teacher and s.needs_logits for s, _ in terms),
            needs_hidden=any(s.needs_hidden for s, _ in terms),
            needs_critic=any(s.needs_critic for s, _ in terms),
        )


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


def distill_forward(model: Any, teacher: GPT2LMHeadModel | None, batch: dict[str, Tensor],
                    plan: LossPlan, teacher_idx: list[int], critics: Any,
                    options: LossOptions, step: int = 0) -> tuple[Tensor, dict[str, Tensor]]:
    """The weighted total loss of one micro-batch and its named, unweighted parts (detached)."""
    input_ids, labels = batch["input_ids"], batch["labels"]
    attention_mask = batch.get("attention_mask")
    mask = attention_mask.bool() if attention_mask is not None else torch.ones_like(input_ids, dtype=torch.bool)
    t_logits, t_hidden = (None, [])
    if plan.needs_teacher:
        t_logits, t_hidden = teacher_features(teacher, input_ids, attention_mask, teacher_idx,
                                              plan.needs_teacher_logits, plan.needs_hidden)
    s_logits, s_hidden = model(input_ids, attention_mask=attention_mask, need_hidden=plan.needs_hidden)
    parts: dict[str, Tensor] = {}
    if plan.needs_critic:
        # WGAN-GP order: the critics first catch up with the current student, then the student moves.
        # Its per-layer estimates are logged by the `wd` term as wd/layer<i>.
        critics.update(t_hidden, [h.detach() for h in s_hidden], mask)
    inputs = LossInputs(labels=labels, mask=mask, student_logits=s_logits, teacher_logits=t_logits,
                        student_hidden=s_hidden, teacher_hidden=t_hidden, critics=critics, options=options,
                        step=step)
    total, named = compute_losses(plan.terms, inputs)
    parts.update({k: v.detach() for k, v in named.items()})
    return total, parts
