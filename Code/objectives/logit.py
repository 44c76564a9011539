"""Per-token divergences between next-token distributions, in fp32 and log space.

Every function takes logits flattened to rows, `(N, V)` in any float dtype (bf16 under training), and
returns one fp32 value per row; `losses.py` masks and averages them. At GPT-2's vocabulary (50,257) an
fp32 copy of `(B*T, V)` logits is 1.6 GB for 8k tokens, so the work runs over row chunks: `kd`, `lm` and
the top-k normalizer are custom autograd functions that recompute softmax chunk by chunk in backward
(nothing of size `(N, V)` in fp32 is ever kept); the other divergences run each chunk under activation
checkpointing for the same reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

# fp32 elements per chunk (32 Mi = 128 MB per temporary); module-level so tests can force many chunks.
CHUNK_ELEMENTS = 1 << 25


def _chunk_rows(vocab: int) -> int:
    return max(1, CHUNK_ELEMENTS // max(1, vocab))


class _ForwardKL(torch.autograd.Function):
    """Rows of KL(softmax(t/T) || softmax(s/T)); the gradient w.r.t. s is (q - p) / T, recomputed."""

    @staticmethod
    def forward(ctx, s: Tensor, t: Tensor, inv_temp: float) -> Tensor:  # type: ignore[override]
        out = torch.empty(s.shape[0], dtype=torch.float32, device=s.device)
        step = _chunk_rows(s.shape[1])
        for i in range(0, s.shape[0], step):
            logp = F.log_softmax(t[i : i + step].float() * inv_temp, dim=-1)
            logq = F.log_softmax(s[i : i + step].float() * inv_temp, dim=-1)
            out[i : i + step] = (logp.exp() * (logp - logq)).sum(-1)
        ctx.save_for_backward(s, t)
        ctx.inv_temp = inv_temp
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        s, t = ctx.saved_tensors
        grad = torch.empty_like(s)
        step = _chunk_rows(s.shape[1])
        for i in range(0, s.shape[0], step):
            p = F.softmax(t[i : i + step].float() * ctx.inv_temp, dim=-1)
            q = F.softmax(s[i : i + step].float() * ctx.inv_temp, dim=-1)
            grad[i : i + step] = ((q - p) * (grad_out[i : i + step, None] * ctx.inv_temp)).to(s.dtype)
        return grad, None, None


class _CrossEntropy(torch.autograd.Function):
    """Rows of -log softmax(s)[label]; labels < 0 give an arbitrary finite value the caller masks out."""

    @staticmethod
    def forward(ctx, s: Tensor, labels: Tensor) -> Tensor:  # type: ignore[override]
        safe = labels.clamp(min=0)
        out = torch.empty(s.shape[0], dtype=torch.float32, device=s.device)
        step = _chunk_rows(s.shape[1])
        for i in range(0, s.shape[0], step):
            x = s[i : i + step].float()
            out[i : i + step] = torch.logsumexp(x, -1) - x.gather(1, safe[i : i + step, None]).squeeze(1)
        ctx.save_for_backward(s, safe)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        s, safe = ctx.saved_tensors
        grad = torch.empty_like(s)
        step = _chunk_rows(s.shape[1])
        for i in range(0, s.shape[0], step):
            g = F.softmax(s[i : i + step].float(), dim=-1)
            g.scatter_add_(1, safe[i : i + step, None], torch.full_like(g[:, :1], -1.0))
            grad[i : i + step] = (g * grad_out[i : i + step, None]).to(s.dtype)
        return grad, None


class _LogSumExp(torch.autograd.Function):
    """Rows of logsumexp(s / T) accumulated in fp32 without keeping an fp32 copy of s."""

    @staticmethod
    def forward(ctx, s: Tensor, inv_temp: float) -> Tensor:  # type: ignore[override]
        out = torch.empty(s.shape[0], dtype=torch.float32, device=s.device)
        step = _chunk_rows(s.shape[1])
        for i in range(0, s.shape[0], step):
            out[i : i + step] = torch.logsumexp(s[i : i + step].float() * inv_temp, -1)
        ctx.save_for_backward(s, out)
        ctx.inv_temp = inv_temp
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        s, lse = ctx.saved_tensors
        grad = torch.empty_like(s)
        step = _chunk_rows(s.shape[1])
        for i in range(0, s.shape[0], step):
            q = torch.exp(s[i : i + step].float() * ctx.inv_temp - lse[i : i + step, None])
            grad[i : i + step] = (q * (grad_out[i : i + step, None] * ctx.inv_temp)).to(s.dtype)
        return grad, None


def cross_entropy_rows(student: Tensor, labels: Tensor) -> Tensor:
    """Next-token cross-entropy per row (labels already shifted; the caller masks rows labelled -100)."""
    return _CrossEntropy.apply(student, labels)


def forward_kl_rows(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """KL(teacher || student) per row at temperature T (not yet scaled by T^2)."""
    return _ForwardKL.apply(student, teacher, 1.0 / temperature)


def topk_kl_rows(student: Tensor, teacher: Tensor, temperature: float, k: int) -> Tensor:
    """KL over the teacher's top-k tokens: teacher renormalized over them, student's full log-softmax.

    The student's normalizer still covers the whole vocabulary, so mass it puts outside the teacher's
    top-k is penalized; with k = V this is exactly the full forward KL.
    """
    k = min(k, teacher.shape[-1])
    inv_temp = 1.0 / temperature
    top_vals, top_idx = teacher.topk(k, dim=-1, sorted=False)
    logp = F.log_softmax(top_vals.float() * inv_temp, dim=-1)
    logq = student.gather(1, top_idx).float() * inv_temp - _LogSumExp.apply(student, inv_temp)[:, None]
    return (logp.exp() * (logp - logq)).sum(-1)


def _chunked(fn: Callable[[Tensor, Tensor], Tensor], student: Tensor, teacher: Tensor) -> Tensor:
    """Apply a row function chunk by chunk; checkpointing keeps only one chunk's fp32 temporaries alive."""
    step = _chunk_rows(student.shape[1])
    if student.shape[0] <= step:
        return fn(student, teacher)
    return torch.cat(
        [
            checkpoint(fn, student[i : i + step], teacher[i : i + step], use_reentrant=False)
            for i in range(0, student.shape[0], step)
        ]
    )


def _log_probs(student: Tensor, teacher: Tensor, inv_temp: float) -> tuple[Tensor, Tensor]:
    return (
        F.log_softmax(student.float() * inv_temp, dim=-1),
        F.log_softmax(teacher.float() * inv_temp, dim=-1),
    )


def reverse_kl_rows(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """KL(student || teacher) per row: mode-seeking (MiniLLM's objective, here as a direct loss)."""

    def fn(s: Tensor, t: Tensor) -> Tensor:
        logq, logp = _log_probs(s, t, 1.0 / temperature)
        return (logq.exp() * (logq - logp)).sum(-1)

    return _chunked(fn, student, teacher)


def jsd_rows(student: Tensor, teacher: Tensor, temperature: float, beta: float = 0.5) -> Tensor:
    """Generalized JSD: beta*KL(p || m) + (1-beta)*KL(q || m), m = beta*p + (1-beta)*q; <= log 2 at 0.5."""
    log_b, log_1b = math.log(beta), math.log1p(-beta)

    def fn(s: Tensor, t: Tensor) -> Tensor:
        logq, logp = _log_probs(s, t, 1.0 / temperature)
        logm = torch.logaddexp(logp + log_b, logq + log_1b)
        return beta * (logp.exp() * (logp - logm)).sum(-1) + (1 - beta) * (logq.exp() * (logq - logm)).sum(-1)

    return _chunked(fn, student, teacher)


def skew_kl_rows(student: Tensor, teacher: Tensor, temperature: float, alpha: float = 0.1) -> Tensor:
    """DistiLLM's skew KL: KL(p || alpha*p + (1-alpha)*q); alpha = 0 is the forward KL."""

    def fn(s: Tensor, t: Tensor) -> Tensor:
        logq, logp = _log_probs(s, t, 1.0 / temperature)
        if alpha == 0:
            logmix = logq
        else:
            logmix = torch.logaddexp(logp + math.log(alpha), logq + math.log1p(-alpha))
        return (logp.exp() * (logp - logmix)).sum(-1)

    return _chunked(fn, student, teacher)


def tvd_rows(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """Total variation 0.5 * sum |p - q| per row, in [0, 1]."""

    def fn(s: Tensor, t: Tensor) -> Tensor:
        logq, logp = _log_probs(s, t, 1.0 / temperature)
        return 0.5 * (logp.exp() - logq.exp()).abs().sum(-1)

    return _chunked(fn, student, teacher)
