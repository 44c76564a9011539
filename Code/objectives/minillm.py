"""MiniLLM (Gu et al., 2024, "MiniLLM: Knowledge Distillation of Large Language Models"): the reverse KL
KL(q_theta || p) between student q and teacher p over whole responses, minimized by policy gradient on
responses sampled for training prompts.

With y ~ q and per-token reward r_t = log p(y_t | y_<t, x) - log q(y_t | y_<t, x), the gradient splits
("single-step decomposition") into
  - a single-step part, the exact reverse KL of the next-token distributions at every response position,
    sum_t KL(q(.|y_<t, x) || p(.|y_<t, x)), differentiated directly (low variance, no sampling);
  - a long-term part, -sum_t R_{t+1} grad log q(y_t | y_<t, x), R_{t+1} the reward of the tokens after t
    (with length normalization, their mean rather than their sum, so long responses are not favoured).
Teacher-mixed sampling: responses are drawn from p~ = alpha p + (1 - alpha) q (alpha 0.2 by default),
which keeps early, poor students from reward hacking; each position is reweighted by the per-token
importance weight w_t = q(y_t) / p~(y_t) (at most 1 / (1 - alpha)). The surrogate minimized here is

    L = sum_t w_t [ KL(q_t || p_t) + sg(R_t+1) * (-log q(y_t)) ] / #tokens   (+ pt_weight * LM loss)

and the pretraining term (an LM loss on plain text) keeps the student's language modelling intact.
One gradient step per rollout (on-policy), so the PPO ratio of the reference implementation is 1 and
its clipping never acts; rollouts use the student in eval mode, the update in train mode.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from Code.modeling.generation import left_pad
from Code.objectives import logit as ll


@dataclass
class Rollout:
    """Prompt + sampled response per row, right-padded for the training forward.

    `labels[i, j]` is the response token that position j predicts (-100 elsewhere); `logq`, `logp` and
    `logmix` hold, at the same positions, the log-probabilities of that token under the student, the
    teacher and the sampling mixture when it was drawn.
    """

    input_ids: Tensor       # (B, L)
    attention_mask: Tensor  # (B, L)
    labels: Tensor          # (B, L)
    logq: Tensor            # (B, L) float32
    logp: Tensor
    logmix: Tensor
    lengths: Tensor         # (B,) response tokens, the closing EOS included


def mixture_logprobs(student_logits: Tensor, teacher_logits: Tensor, alpha: float) -> tuple[Tensor, Tensor, Tensor]:
    """(log q, log p, log(alpha p + (1 - alpha) q)) over the vocabulary, in fp32."""
    logq = F.log_softmax(student_logits.float(), dim=-1)
    logp = F.log_softmax(teacher_logits.float(), dim=-1)
    if alpha <= 0:
        return logq, logp, logq
    logmix = torch.logaddexp(logp + math.log(alpha), logq + math.log1p(-alpha)) if alpha < 1 else logp
    return logq, logp, logmix


@torch.no_grad()
def rollout(student, teacher, prompts: Sequence[Sequence[int]], eos_id: int, max_new_tokens: int,
            alpha: float, generator: torch.Generator | None = None) -> Rollout:
    """Sample a response per prompt from alpha*teacher + (1-alpha)*student, both with KV caches."""
    device = next(student.parameters()).device
    was_training = student.training
    student.eval()
    try:
        ids, mask = left_pad(prompts, eos_id, device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        s_out = student(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
        t_out = teacher(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
        batch = ids.shape[0]
        done = torch.zeros(batch, dtype=torch.bool, device=device)
        tokens, lq, lp, lm, live = [], [], [], [], []
        last = pos[:, -1:]
        for _ in range(max_new_tokens):
            logq, logp, logmix = mixture_logprobs(s_out.logits[:, -1], t_out.logits[:, -1], alpha)
            y = torch.multinomial(logmix.exp(), 1, generator=generator).squeeze(1)
            y = torch.where(done, torch.full_like(y, eos_id), y)
            live.append(~done)
            tokens.append(y)
            for store, table in ((lq, logq), (lp, logp), (lm, logmix)):
                store.append(table.gather(1, y[:, None]).squeeze(1))
            done = done | (y == eos_id)
            if bool(done.all()):
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            last = last + 1
            step = {"input_ids": y[:, None], "attention_mask": mask, "position_ids": last, "use_cache": True}
            s_out = student(**step, past_key_values=s_out.past_key_values)
            t_out = teacher(**step, past_key_values=t_out.past_key_values)
    finally:
        student.train(was_training)
    alive = torch.stack(live, 1)
    return _pack(prompts, torch.stack(tokens, 1), alive, torch.stack(lq, 1), torch.stack(lp, 1),
                 torch.stack(lm, 1), eos_id)


def _pack(prompts: Sequence[Sequence[int]], tokens: Tensor, alive: Tensor, logq: Tensor, logp: Tensor,
          logmix: Tensor, eos_id: int) -> Rollout:
    """Right-padded [prompt, response] rows; positions start at 0 in every row, so no position ids needed."""
    lengths = alive.sum(1)
    width = max(len(p) + int(n) for p, n in zip(prompts, lengths.tolist(), strict=True))
    batch, device = tokens.shape[0], tokens.device
    ids = torch.full((batch, width), eos_id, dtype=torch.long, device=device)
    attn = torch.zeros((batch, width), dtype=torch.long, device=device)
    labels = torch.full((batch, width), -100, dtype=torch.long, device=device)
    out = [torch.zeros((batch, width), dtype=torch.float32, device=device) for _ in range(3)]
    for i, (prompt, n) in enumerate(zip(prompts, lengths.tolist(), strict=True)):
        p = len(prompt)
        ids[i, :p] = torch.as_tensor(list(prompt), dtype=torch.long, device=device)
        ids[i, p : p + n] = tokens[i, :n]
        attn[i, : p + n] = 1
        # position p-1+k predicts response token k
        labels[i, p - 1 : p - 1 + n] = tokens[i, :n]
        for dst, src in zip(out, (logq, logp, logmix), strict=True):
            dst[i, p - 1 : p - 1 + n] = src[i, :n]
    return Rollout(ids, attn, labels, *out, lengths)


def future_rewards(rewards: Tensor, mask: Tensor, length_norm: bool = True) -> Tensor:
    """R_{t+1} per position: the sum (or, normalized, the mean) of the rewards strictly after t in its row."""
    r = rewards * mask
    after = r.flip(1).cumsum(1).flip(1) - r
    if not length_norm:
        return after
    count = mask.float().flip(1).cumsum(1).flip(1) - mask.float()
    return after / count.clamp(min=1)


def minillm_loss(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, logq_old: Tensor,
                 logp_old: Tensor, logmix_old: Tensor, length_norm: bool = True) -> tuple[Tensor, dict[str, Tensor]]:
    """The policy-gradient surrogate of the module docstring, averaged over response tokens.

    `student_logits` carry gradients; every `*_old` value comes from the rollout (no gradients).
    Returns the loss and detached parts: single-step and long-term terms, the mean importance weight,
    and the length-normalized sequence reverse KL estimate (what MiniLLM reports).
    """
    mask = labels != -100
    maskf = mask.float()
    rewards = (logp_old - logq_old) * maskf
    future = future_rewards(rewards, maskf, length_norm)
    weights = torch.exp(logq_old - logmix_old) * maskf
    # Only response positions matter: select them (B*L -> N rows) before any vocabulary-wide work.
    flat = mask.reshape(-1)
    vocab = student_logits.shape[-1]
    s_rows = student_logits.reshape(-1, vocab)[flat]
    t_rows = teacher_logits.reshape(-1, vocab)[flat].detach()
    y = labels.reshape(-1)[flat]
    w, r_future = weights.reshape(-1)[flat], future.reshape(-1)[flat].detach()
    n = max(int(flat.sum()), 1)
    kl = ll.reverse_kl_rows(s_rows, t_rows, 1.0)       # single-step: exact, differentiable
    nll = ll.cross_entropy_rows(s_rows, y)             # -log q(y_t), differentiable
    single = (w * kl).sum() / n
    long_term = (w * r_future * nll).sum() / n
    lengths = maskf.sum(1).clamp(min=1)
    seq_rev_kl = (-(rewards.sum(1)) / lengths).mean()
    parts = {"single": single.detach(), "long": long_term.detach(), "w_mean": w.mean().detach(),
             "rev_kl": seq_rev_kl.detach(), "response_len": maskf.sum(1).mean().detach()}
    return single + long_term, parts
