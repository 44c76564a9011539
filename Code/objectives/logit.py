"""Per-token divergences between next-token distributions, in fp32 and log space, chunked over tokens.

Every function takes logits flattened to rows, `(N, V)` in any float dtype (bf16 under training), and
returns one fp32 value per row; `registry.py` masks and averages them. At GPT-2's vocabulary (50,257) an
fp32 copy of `(B*T, V)` logits is 1.6 GB for 8k tokens, so every term is a custom autograd Function that
runs forward and backward over row chunks: forward keeps only per-row statistics (the two log-normalizers,
the row value and one row sum the gradient needs), backward recomputes the chunk's log-probabilities
from the inputs and writes the analytic gradient straight into the gradient tensor (in place in the
gradient's own rows when the logits are fp32). Beyond the inputs and their gradient, nothing larger than
a few `(chunk, V)` fp32 temporaries is ever alive, and a chunk holds at most `CHUNK_ELEMENTS` elements and
at most 1/`MIN_CHUNKS` of the rows: `python bench/logit_memory.py` measures every term's peak at
V = 50,257 against the student's own cross-entropy (`cross_entropy_rows`), which has the same structure.

Gradients, with a = s / T (student), q = softmax(a), p = softmax(t / T) (teacher), per row and times 1/T
for s: KL(p||q): q - p; KL(q||p): q (log q - log p - f); JSD_beta with m = beta p + (1 - beta) q:
(1 - beta) q (d - sum q d), d = log q - log m; skew KL(p || alpha p + (1 - alpha) q): -(1 - alpha) q
(w - sum q w), w = p / mix; TVD: q (g - sum q g), g = sign(q - p) / 2. The teacher gets no gradient (it
never has one in training); should a teacher tensor require grad, the term falls back to plain autograd
over checkpointed chunks, which is slower but differentiates both sides.

The same code runs on CUDA. liger-kernel's kl_div / jsd / tvd kernels are not used there: they take
(log-)probabilities, i.e. a full `(N, V)` log_softmax of each model first (the student's kept for its
backward), and jsd / tvd also hold an `(N, V)` gradient from forward to backward, so behind this interface
they would raise the peak, not lower it; its fused-linear variants take hidden states and the lm_head
weight, not logits.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint

# fp32 elements per chunk (32 Mi = 128 MB per temporary); module-level so tests can force many chunks.
CHUNK_ELEMENTS = 1 << 25
# A chunk holds at most 1/MIN_CHUNKS of the rows, so its fp32 temporaries stay small next to the (N, V)
# gradient every term (the cross-entropy included) must write, however few tokens a step has.
MIN_CHUNKS = 8


def _chunk_rows(rows: int, vocab: int) -> int:
    return max(1, min(CHUNK_ELEMENTS // max(1, vocab), -(-rows // MIN_CHUNKS)))


def _spans(rows: int, vocab: int):
    step = _chunk_rows(rows, vocab)
    for i in range(0, rows, step):
        yield i, min(rows, i + step)


def _scaled(x: Tensor, inv_temp: float, out: Tensor | None = None) -> Tensor:
    """An fp32 copy of `x * inv_temp` (cast first, then scaled in fp32), in `out` when given."""
    if out is None:
        out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    if inv_temp == 1.0:
        return out.copy_(x)
    if x.dtype == torch.float32:
        return torch.mul(x, inv_temp, out=out)
    return out.copy_(x).mul_(inv_temp)  # never multiply in the input's lower precision


def _log_probs(x: Tensor, inv_temp: float, lse: Tensor, out: Tensor | None = None) -> Tensor:
    """log softmax(x * inv_temp) rebuilt from the saved log-normalizer `lse` (rows,): one fp32 buffer."""
    return _scaled(x, inv_temp, out).sub_(lse[:, None])


def _log_softmax_(x: Tensor) -> Tensor:
    """Turn fp32 `x` into log softmax(x) in place; returns the log-normalizer per row."""
    lse = torch.logsumexp(x, -1)
    x.sub_(lse[:, None])
    return lse


def _grad_buffer(grad: Tensor, i: int, j: int) -> Tensor:
    """Where a chunk's fp32 gradient is built: the gradient's own rows when fp32, else a temporary."""
    return grad[i:j] if grad.dtype == torch.float32 else torch.empty(grad[i:j].shape, dtype=torch.float32,
                                                                     device=grad.device)


# ------------------------------------------------------------------------ the divergences, chunk by chunk
# Each kind has `forward(logq, logp, c) -> (value, aux)` on one chunk's fp32 log-probabilities (which it
# may overwrite), and `backward(g, logp, value, aux, c)`: `g` holds log q on entry and must hold
# d value / d a (a = the student's scaled logits) on exit; `logp` may be overwritten. `c` is the kind's
# constant (beta, alpha); `aux` is the one row statistic backward needs beyond the value.


def _fkl_forward(logq: Tensor, logp: Tensor, c: float) -> tuple[Tensor, Tensor | None]:
    torch.sub(logp, logq, out=logq)              # log p - log q
    return logq.mul_(logp.exp_()).sum(-1), None  # sum p (log p - log q)


def _fkl_backward(g: Tensor, logp: Tensor, value: Tensor, aux: Tensor | None, c: float) -> None:
    g.exp_().sub_(logp.exp_())                   # q - p


def _rkl_forward(logq: Tensor, logp: Tensor, c: float) -> tuple[Tensor, Tensor | None]:
    torch.sub(logq, logp, out=logp)              # r = log q - log p
    return logp.mul_(logq.exp_()).sum(-1), None  # sum q r


def _rkl_backward(g: Tensor, logp: Tensor, value: Tensor, aux: Tensor | None, c: float) -> None:
    torch.sub(g, logp, out=logp).sub_(value[:, None])  # r - f
    g.exp_().mul_(logp)                                # q (r - f)


def _mix(logp: Tensor, logq: Tensor, log_wp: float, log_wq: float) -> Tensor:
    """log(w_p p + w_q q) as a new buffer; `logp` holds log p + log w_p afterwards."""
    mix = torch.add(logq, log_wq)
    return torch.logaddexp(logp.add_(log_wp), mix, out=mix)


def _jsd_forward(logq: Tensor, logp: Tensor, beta: float) -> tuple[Tensor, Tensor | None]:
    log_b, log_1b = math.log(beta), math.log1p(-beta)
    logm = torch.add(logp, log_b)
    u = torch.add(logq, log_1b)
    torch.logaddexp(logm, u, out=logm)
    torch.exp(logp, out=u)                                  # p
    part_p = logp.sub_(logm).mul_(u).sum(-1)                # sum p (log p - log m)
    torch.exp(logq, out=u)                                  # q
    part_q = logq.sub_(logm).mul_(u).sum(-1)                # sum q (log q - log m) = sum q d
    return beta * part_p + (1 - beta) * part_q, part_q


def _jsd_backward(g: Tensor, logp: Tensor, value: Tensor, aux: Tensor | None, beta: float) -> None:
    logm = _mix(logp, g, math.log(beta), math.log1p(-beta))
    d = torch.sub(g, logm, out=logm).sub_(aux[:, None])    # d - sum q d
    g.exp_().mul_(d).mul_(1 - beta)


def _skl_forward(logq: Tensor, logp: Tensor, alpha: float) -> tuple[Tensor, Tensor | None]:
    log_a, log_1a = math.log(alpha), math.log1p(-alpha)
    logmix = torch.add(logp, log_a)
    u = torch.add(logq, log_1a)
    torch.logaddexp(logmix, u, out=logmix)
    aux = torch.add(logq, logp, out=u).sub_(logmix).exp_().sum(-1)  # sum q w, w = p / mix
    torch.exp(logp, out=u)                                           # p
    return logp.sub_(logmix).mul_(u).sum(-1), aux                    # sum p (log p - log mix)


def _skl_backward(g: Tensor, logp: Tensor, value: Tensor, aux: Tensor | None, alpha: float) -> None:
    logmix = _mix(logp, g, math.log(alpha), math.log1p(-alpha))
    w = logp.sub_(logmix).sub_(math.log(alpha)).exp_()     # p / mix
    del logmix
    w.sub_(aux[:, None])
    g.exp_().mul_(w).mul_(-(1 - alpha))


def _tvd_forward(logq: Tensor, logp: Tensor, c: float) -> tuple[Tensor, Tensor | None]:
    q = logq.exp_()
    diff = torch.sub(q, logp.exp_(), out=logp)              # q - p
    aux = 0.5 * torch.sign(diff).mul_(q).sum(-1)            # sum q g, g = sign(q - p) / 2
    return 0.5 * diff.abs_().sum(-1), aux


def _tvd_backward(g: Tensor, logp: Tensor, value: Tensor, aux: Tensor | None, c: float) -> None:
    q = g.exp_()
    torch.sub(q, logp.exp_(), out=logp).sign_().mul_(0.5).sub_(aux[:, None])  # g - sum q g
    q.mul_(logp)


_KINDS = {
    "fkl": (_fkl_forward, _fkl_backward),
    "rkl": (_rkl_forward, _rkl_backward),
    "jsd": (_jsd_forward, _jsd_backward),
    "skl": (_skl_forward, _skl_backward),
    "tvd": (_tvd_forward, _tvd_backward),
}


class _Divergence(torch.autograd.Function):
    """Rows of a divergence between softmax(t/T) and softmax(s/T), gradient to `s` only, chunk by chunk."""

    @staticmethod
    def forward(ctx, s: Tensor, t: Tensor, inv_temp: float, kind: str, c: float) -> Tensor:  # type: ignore[override]
        fwd, _ = _KINDS[kind]
        n, vocab = s.shape
        out = torch.empty(n, dtype=torch.float32, device=s.device)
        lse_s, lse_t = torch.empty_like(out), torch.empty_like(out)
        aux = None
        for i, j in _spans(n, vocab):
            logp = _scaled(t[i:j], inv_temp)
            lse_t[i:j] = _log_softmax_(logp)
            logq = _scaled(s[i:j], inv_temp)
            lse_s[i:j] = _log_softmax_(logq)
            value, a = fwd(logq, logp, c)
            out[i:j] = value
            if a is not None:
                if aux is None:
                    aux = torch.empty_like(out)
                aux[i:j] = a
            del logp, logq
        ctx.save_for_backward(s, t, lse_s, lse_t, out, aux)
        ctx.inv_temp, ctx.kind, ctx.c = inv_temp, kind, c
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        s, t, lse_s, lse_t, value, aux = ctx.saved_tensors
        _, bwd = _KINDS[ctx.kind]
        inv_temp = ctx.inv_temp
        grad = torch.empty(s.shape, dtype=s.dtype, device=s.device)
        for i, j in _spans(*s.shape):
            g = _log_probs(s[i:j], inv_temp, lse_s[i:j], _grad_buffer(grad, i, j))
            logp = _log_probs(t[i:j], inv_temp, lse_t[i:j])
            bwd(g, logp, value[i:j], None if aux is None else aux[i:j], ctx.c)
            del logp
            g.mul_(grad_out[i:j, None] * inv_temp)
            if g.data_ptr() != grad[i:j].data_ptr():
                grad[i:j].copy_(g)
            del g
        return grad, None, None, None, None


def _rows(kind: str, student: Tensor, teacher: Tensor, temperature: float, c: float = 0.0) -> Tensor:
    if teacher.requires_grad and torch.is_grad_enabled():
        return _plain_chunked(kind, student, teacher, 1.0 / temperature, c)
    return _Divergence.apply(student, teacher.detach(), 1.0 / temperature, kind, c)


class _CrossEntropy(torch.autograd.Function):
    """Rows of -log softmax(s)[label]; labels < 0 give an arbitrary finite value the caller masks out."""

    @staticmethod
    def forward(ctx, s: Tensor, labels: Tensor) -> Tensor:  # type: ignore[override]
        safe = labels.clamp(min=0)
        out = torch.empty(s.shape[0], dtype=torch.float32, device=s.device)
        lse = torch.empty_like(out)
        for i, j in _spans(*s.shape):
            x = s[i:j].float()
            lse[i:j] = torch.logsumexp(x, -1)
            out[i:j] = lse[i:j] - x.gather(1, safe[i:j, None]).squeeze(1)
            del x
        ctx.save_for_backward(s, safe, lse)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        s, safe, lse = ctx.saved_tensors
        grad = torch.empty(s.shape, dtype=s.dtype, device=s.device)
        for i, j in _spans(*s.shape):
            g = _log_probs(s[i:j], 1.0, lse[i:j], _grad_buffer(grad, i, j)).exp_()  # softmax
            g.scatter_add_(1, safe[i:j, None], torch.full((j - i, 1), -1.0, device=g.device))
            g.mul_(grad_out[i:j, None])
            if g.data_ptr() != grad[i:j].data_ptr():
                grad[i:j].copy_(g)
            del g
        return grad, None


class _LogSumExp(torch.autograd.Function):
    """Rows of logsumexp(s / T) accumulated in fp32 without keeping an fp32 copy of s."""

    @staticmethod
    def forward(ctx, s: Tensor, inv_temp: float) -> Tensor:  # type: ignore[override]
        out = torch.empty(s.shape[0], dtype=torch.float32, device=s.device)
        for i, j in _spans(*s.shape):
            out[i:j] = torch.logsumexp(_scaled(s[i:j], inv_temp), -1)
        ctx.save_for_backward(s, out)
        ctx.inv_temp = inv_temp
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        s, lse = ctx.saved_tensors
        grad = torch.empty(s.shape, dtype=s.dtype, device=s.device)
        for i, j in _spans(*s.shape):
            g = _log_probs(s[i:j], ctx.inv_temp, lse[i:j], _grad_buffer(grad, i, j)).exp_()
            g.mul_(grad_out[i:j, None] * ctx.inv_temp)
            if g.data_ptr() != grad[i:j].data_ptr():
                grad[i:j].copy_(g)
            del g
        return grad, None


# ------------------------------------------------------------------------------------ the public terms
def cross_entropy_rows(student: Tensor, labels: Tensor) -> Tensor:
    """Next-token cross-entropy per row (labels already shifted; the caller masks rows labelled -100)."""
    return _CrossEntropy.apply(student, labels)


def logsumexp_rows(student: Tensor, inv_temp: float = 1.0) -> Tensor:
    """logsumexp(s / T) per row in fp32, differentiable, without an fp32 copy of the rows (top-k KD's normalizer)."""
    return _LogSumExp.apply(student, inv_temp)


def forward_kl_rows(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """KL(teacher || student) per row at temperature T (not yet scaled by T^2)."""
    return _rows("fkl", student, teacher, temperature)


def reverse_kl_rows(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """KL(student || teacher) per row: mode-seeking (MiniLLM's objective, here as a direct loss)."""
    return _rows("rkl", student, teacher, temperature)


def jsd_rows(student: Tensor, teacher: Tensor, temperature: float, beta: float = 0.5) -> Tensor:
    """Generalized JSD: beta*KL(p || m) + (1-beta)*KL(q || m), m = beta*p + (1-beta)*q; <= log 2 at 0.5."""
    return _rows("jsd", student, teacher, temperature, beta)


def skew_kl_rows(student: Tensor, teacher: Tensor, temperature: float, alpha: float = 0.1) -> Tensor:
    """DistiLLM's skew KL: KL(p || alpha*p + (1-alpha)*q); alpha = 0 is the forward KL."""
    if alpha == 0:
        return _rows("fkl", student, teacher, temperature)
    return _rows("skl", student, teacher, temperature, alpha)


def tvd_rows(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """Total variation 0.5 * sum |p - q| per row, in [0, 1]."""
    return _rows("tvd", student, teacher, temperature)


# ------------------------------------------------------------------- plain autograd (a teacher with grad)
def plain_rows(kind: str, student: Tensor, teacher: Tensor, inv_temp: float, c: float = 0.0) -> Tensor:
    """The textbook form on whole rows: both log-softmaxes materialized, then the divergence (autograd
    through everything). What the chunked Functions compute; tests and the memory bench compare to it."""
    logq = F.log_softmax(student.float() * inv_temp, dim=-1)
    logp = F.log_softmax(teacher.float() * inv_temp, dim=-1)
    if kind == "fkl":
        return (logp.exp() * (logp - logq)).sum(-1)
    if kind == "rkl":
        return (logq.exp() * (logq - logp)).sum(-1)
    if kind == "jsd":
        logm = torch.logaddexp(logp + math.log(c), logq + math.log1p(-c))
        return c * (logp.exp() * (logp - logm)).sum(-1) + (1 - c) * (logq.exp() * (logq - logm)).sum(-1)
    if kind == "skl":
        logmix = torch.logaddexp(logp + math.log(c), logq + math.log1p(-c))
        return (logp.exp() * (logp - logmix)).sum(-1)
    if kind == "tvd":
        return 0.5 * (logp.exp() - logq.exp()).abs().sum(-1)
    raise ValueError(f"unknown divergence kind '{kind}': use one of {', '.join(_KINDS)}")


def _plain_chunked(kind: str, student: Tensor, teacher: Tensor, inv_temp: float, c: float) -> Tensor:
    """`plain_rows` chunk by chunk under activation checkpointing (only one chunk's graph alive)."""
    def fn(s: Tensor, t: Tensor) -> Tensor:
        return plain_rows(kind, s, t, inv_temp, c)

    spans = list(_spans(*student.shape))
    if len(spans) == 1:
        return fn(student, teacher)
    return torch.cat([checkpoint(fn, student[i:j], teacher[i:j], use_reentrant=False) for i, j in spans])
