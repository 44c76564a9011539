"""Distances between matched student and teacher hidden states, one value per matched layer.

Inputs are stacked `(L, N, D)` (layers, flattened positions, width) plus an `(N,)` bool mask of real
positions. Everything is masked with `torch.where` and divided by a tensor count, never selected with
boolean indexing, so no host synchronisation happens inside a training step and garbage in padded
positions cannot leak into values or gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from Code.objectives.masking import masked_mean


def stack_layers(feats: list[Tensor] | Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """`L` tensors of `(B, T, D)` (or one `(L, B, T, D)`) -> `(L, B*T, D)` in `dtype`."""
    if isinstance(feats, Tensor):
        return feats.reshape(feats.shape[0], -1, feats.shape[-1]).to(dtype)
    return torch.stack([f.reshape(-1, f.shape[-1]) for f in feats]).to(dtype)


def mse_per_layer(student: Tensor, teacher: Tensor, mask: Tensor, normalize: bool = False,
                  eps: float = 1e-5) -> Tensor:
    """Mean squared error per layer over real positions and dimensions.

    With `normalize`, each dimension is divided by `sqrt(var + eps)`, `var` the teacher's population
    variance of that dimension over the real positions of this batch (detached; eps on the variance, not
    on the std): GPT-2 has a handful of dimensions hundreds of times larger than the rest, which otherwise
    own the whole raw MSE. The one implementation: evaluation's `mse` and `mse_normalized` call it too.
    """
    m = mask[None, :, None]
    student = torch.where(m, student, 0.0)
    teacher = torch.where(m, teacher, 0.0)
    diff = student - teacher
    if normalize:
        with torch.no_grad():
            count = mask.sum().clamp(min=1)
            mean = teacher.sum(1, keepdim=True) / count
            var = torch.where(m, (teacher - mean) ** 2, 0.0).sum(1, keepdim=True) / count
            scale = torch.rsqrt(var + eps)
        diff = diff * scale
    return masked_mean(diff.pow(2).mean(-1), mask)


def cosine_per_layer(student: Tensor, teacher: Tensor, mask: Tensor) -> Tensor:
    """1 - cosine similarity between matched vectors, averaged over real positions (DistilGPT2's loss)."""
    m = mask[None, :, None]
    cos = F.cosine_similarity(torch.where(m, student, 1.0), torch.where(m, teacher, 1.0), dim=-1, eps=1e-8)
    return masked_mean(1.0 - cos, mask)


def sample_positions(mask: Tensor, k: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Up to `k` random real positions of a flat `(N,)` mask, without a host sync.

    Returns indices `(k,)` and their validity `(k,)`: random keys with padded positions pushed below every
    real one, then top-k, so real positions are always taken first; when fewer than `k` are real the tail
    holds padded positions flagged invalid. With `k >= N` every position is returned in order.
    """
    n = mask.shape[0]
    if k >= n:
        return torch.arange(n, device=mask.device), mask
    keys = torch.rand(n, generator=generator, device=mask.device)
    idx = torch.where(mask, keys, -1.0).topk(k, sorted=False).indices
    return idx, mask[idx]


def sliced_wasserstein_per_layer(student: Tensor, teacher: Tensor, mask: Tensor, n_projections: int = 128,
                                 p: int = 1, max_samples: int = 4096,
                                 generator: torch.Generator | None = None) -> Tensor:
    """Critic-free sliced Wasserstein distance per layer (SW_1, or SW_2 squared with p=2).

    Projects both sample sets on random unit directions (fresh per layer, in the inputs' dtype) and
    compares the sorted 1-D projections, which is the exact 1-D optimal transport: the value is the mean
    over directions of W_1 (p=1) or of W_2 squared (p=2). Student and teacher use the same sampled
    positions, so both sets have the same count; padded samples sort last (+inf) and are excluded by rank.
    The one implementation: evaluation's `sliced_wd` (Code.evaluation.metrics.sliced_wasserstein) calls it.
    """
    idx, valid = sample_positions(mask, max_samples, generator)
    if idx.shape[0] != mask.shape[0]:
        student, teacher = student[:, idx], teacher[:, idx]
    num_layers, k, dim = student.shape
    theta = torch.randn(num_layers, dim, n_projections, generator=generator, device=student.device,
                        dtype=student.dtype)
    theta = theta / theta.norm(dim=1, keepdim=True)
    pad = ~valid[None, :, None]
    ps = torch.bmm(student, theta).masked_fill(pad, float("inf")).sort(dim=1).values
    pt = torch.bmm(teacher, theta).masked_fill(pad, float("inf")).sort(dim=1).values
    n_valid = valid.sum()
    by_rank = (torch.arange(k, device=student.device) < n_valid)[None, :, None]
    diff = torch.where(by_rank, ps - pt, 0.0)
    cost = diff.abs() if p == 1 else diff.pow(2)
    return cost.sum(dim=(1, 2)) / (n_valid.clamp(min=1) * n_projections)
