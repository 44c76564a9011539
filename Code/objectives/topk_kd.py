"""Top-k knowledge distillation with the rest of the vocabulary as one bucket, from live or cached targets.

The teacher's next-token distribution p (at temperature T) is kept as its k most likely tokens, their
log-probabilities `logp` (sorted, largest first) and ids, plus the log of the mass it puts on every other
token, `log_rest` = log(1 - sum_k p_k), computed from the full softmax when the targets are made. The
student's q (full log-softmax at T) is coarsened the same way: q_k on the teacher's k ids and
q_rest = 1 - sum_k q_k. The loss is the forward KL between these two distributions over k + 1 outcomes,

    KL_k(p || q) = sum_k p_k (log p_k - log q_k) + p_rest (log p_rest - log q_rest),

times T^2 as for `kd`. It is a true KL (>= 0, 0 iff the student matches the teacher on the k tokens and
on the rest), never larger than the full-vocabulary KL (coarsening loses information), and equal to it at
k = V. Targets are the same whether they come from the live teacher's logits (`topk_targets`) or from a
cache written once (`Code/data_pipeline/teacher_cache.py`): only the storage dtype of `logp` differs.
Because `logp` is sorted, targets of k serve any k' <= k: the dropped tokens join the rest bucket.

q_rest is computed as 1 - sum q_k in fp32 and floored at `REST_FLOOR`, so a student that puts (almost) all
its mass on the teacher's k tokens gets a finite loss; the floor's effect is at most
p_rest * log(REST_FLOOR / q_rest) and zero where the teacher's own rest mass is zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from Code.objectives import logit as ll

REST_FLOOR = 1e-6


class TopKTargetError(ValueError):
    """Targets that cannot serve the requested loss (k too large, another temperature, bad shapes)."""


@dataclass(frozen=True)
class TopKTargets:
    """The teacher's top-k next-token targets at `temperature`, leading dims matching the student's rows."""

    logp: Tensor        # (..., k) log-probabilities, sorted descending (fp16/fp32)
    ids: Tensor         # (..., k) token ids (any integer dtype)
    log_rest: Tensor    # (...)    log of the teacher's mass outside the k tokens (-inf: none)
    temperature: float

    @property
    def k(self) -> int:
        return self.logp.shape[-1]

    def rows(self) -> TopKTargets:
        """The same targets flattened to rows, (N, k) and (N,)."""
        k = self.k
        return TopKTargets(self.logp.reshape(-1, k), self.ids.reshape(-1, k), self.log_rest.reshape(-1),
                           self.temperature)

    def first(self, k: int) -> TopKTargets:
        """The top `k` of these targets, the dropped tokens' mass moved into the rest bucket."""
        if k <= 0 or k == self.k:
            return self
        if k > self.k:
            raise TopKTargetError(f"targets hold the top {self.k} tokens, fewer than the {k} asked for: "
                                  f"lower kd_topk to <= {self.k} or rebuild the cache with --top-k {k}")
        dropped = self.logp[..., k:].float()
        log_rest = torch.logsumexp(torch.cat([dropped, self.log_rest.float()[..., None]], -1), -1)
        return TopKTargets(self.logp[..., :k], self.ids[..., :k], log_rest, self.temperature)


@torch.no_grad()
def topk_targets(teacher_logits: Tensor, k: int, temperature: float) -> TopKTargets:
    """The teacher's top-k targets from its logits (..., V), in fp32: what the cache stores, and what the
    live teacher gives `kd` when `kd_topk` is set."""
    logp = torch.log_softmax(teacher_logits.float() / temperature, dim=-1)
    k = min(k, logp.shape[-1])
    top, ids = logp.topk(k, dim=-1, sorted=True)
    if k == logp.shape[-1]:
        log_rest = torch.full(top.shape[:-1], -math.inf, device=top.device)
    else:  # exact: the rest's own logsumexp, not log(1 - sum p_k) (which cancels when the rest is tiny)
        log_rest = torch.logsumexp(logp.scatter(-1, ids, -math.inf), dim=-1)
    return TopKTargets(top, ids, log_rest, temperature)


def topk_kl_rows(student: Tensor, targets: TopKTargets) -> Tensor:
    """KL_k(p || q) per row (not yet scaled by T^2): `student` (N, V) logits, `targets` flattened to N rows.

    Only the student gets a gradient: through its k gathered logits and its log-normalizer (chunked, so no
    fp32 copy of the (N, V) logits is made).
    """
    if targets.logp.shape[0] != student.shape[0] or targets.logp.dim() != 2:
        raise TopKTargetError(f"top-k targets have shape {tuple(targets.logp.shape)} for {student.shape[0]} "
                              "student rows: flatten them with .rows()")
    inv_temp = 1.0 / targets.temperature
    logp = targets.logp.float()
    logq = student.gather(1, targets.ids.long()).float() * inv_temp - ll.logsumexp_rows(student, inv_temp)[:, None]
    head = (logp.exp() * (logp - logq)).sum(-1)
    log_q_rest = torch.log((-torch.expm1(torch.logsumexp(logq, -1))).clamp(min=REST_FLOOR))
    log_p_rest = targets.log_rest.float()
    p_rest = log_p_rest.exp()
    # where p_rest is 0 (k = V, or underflow) the bucket contributes 0, not 0 * (-inf)
    tail = p_rest * (log_p_rest.clamp(min=math.log(1e-38)) - log_q_rest)
    return head + tail
