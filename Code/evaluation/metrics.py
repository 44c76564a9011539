"""Evaluation metrics as pure tensor functions: token NLL / perplexity and hidden-state distances.

Hidden-state inputs are 2-D `(N, D)` sets of token-position vectors; for paired metrics (CKA, MSE) row i
of the student set and row i of the teacher set come from the same token position.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def window_nll(logits: Tensor, labels: Tensor) -> tuple[float, int]:
    """Summed next-token NLL and scored-token count for a batch of windows.

    `labels` follow the Hugging Face convention (same shape as the input ids, -100 = not scored): the
    logits at position t predict `labels[t + 1]`. Computed in fp32 whatever the model's dtype.
    """
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:].to(shift_logits.device)
    total = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1), ignore_index=-100,
        reduction="sum",
    )
    return float(total), int((shift_labels != -100).sum())


def perplexity_from_nll(nll_sum: float, count: int) -> float:
    """exp(mean NLL); nan when nothing was scored."""
    if count <= 0:
        return float("nan")
    return float(math.exp(nll_sum / count))


def _check_sets(x: Tensor, y: Tensor, paired: bool) -> tuple[Tensor, Tensor]:
    if x.dim() != 2 or y.dim() != 2:
        raise ValueError(f"hidden-state sets must be 2-D (N, D), got {tuple(x.shape)} and {tuple(y.shape)}")
    if paired and x.shape[0] != y.shape[0]:
        raise ValueError(f"paired metric needs the same number of rows, got {x.shape[0]} and {y.shape[0]}")
    return x.detach().double(), y.detach().double()


def _quantiles(sorted_rows: Tensor, n: int) -> Tensor:
    """Empirical quantile function of each row (already sorted) at n mid-point levels, by interpolation."""
    m = sorted_rows.shape[-1]
    if m == n:
        return sorted_rows
    levels = (torch.arange(n, dtype=sorted_rows.dtype, device=sorted_rows.device) + 0.5) / n * m - 0.5
    levels = levels.clamp(0, m - 1)
    lo = levels.floor().long()
    hi = (lo + 1).clamp(max=m - 1)
    w = levels - lo
    return sorted_rows[..., lo] * (1 - w) + sorted_rows[..., hi] * w


def sliced_wasserstein(
    x: Tensor, y: Tensor, n_projections: int = 256, seed: int = 0, p: int = 1
) -> float:
    """Sliced Wasserstein-p distance between point sets x (N, D) and y (M, D).

    The mean over `n_projections` random unit directions (drawn from a generator seeded by `seed`, so the
    same call gives the same number) of the exact 1-D Wasserstein-p distance of the projections.
    """
    x, y = _check_sets(x, y, paired=False)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"sliced Wasserstein needs equal widths, got {x.shape[1]} and {y.shape[1]}")
    gen = torch.Generator().manual_seed(seed)
    theta = torch.randn(x.shape[1], n_projections, generator=gen, dtype=torch.float64)
    theta = (theta / theta.norm(dim=0, keepdim=True)).to(x.device)
    px = torch.sort((x @ theta).T, dim=1).values  # (P, N)
    py = torch.sort((y @ theta).T, dim=1).values
    n = max(px.shape[1], py.shape[1])
    diff = (_quantiles(px, n) - _quantiles(py, n)).abs()
    per_proj = diff.pow(p).mean(dim=1).pow(1.0 / p)
    return float(per_proj.mean())


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear centred kernel alignment (Kornblith et al. 2019) of paired features x (N, D1), y (N, D2).

    1 for identical features; invariant to orthogonal transforms and isotropic scaling of either side.
    """
    x, y = _check_sets(x, y, paired=True)
    x = x - x.mean(dim=0, keepdim=True)
    y = y - y.mean(dim=0, keepdim=True)
    # feature-space form: cheap when D < N, which holds for the token samples used here
    cross = (y.T @ x).norm() ** 2
    denom = (x.T @ x).norm() * (y.T @ y).norm()
    if float(denom) == 0.0:
        return float("nan")
    return float(cross / denom)


def mse(x: Tensor, y: Tensor) -> float:
    """Mean squared difference of paired features of the same width."""
    x, y = _check_sets(x, y, paired=True)
    if x.shape != y.shape:
        raise ValueError(f"MSE needs equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}")
    return float((x - y).pow(2).mean())


def normalized_mse(student: Tensor, teacher: Tensor, eps: float = 1e-6) -> float:
    """MSE after scaling each dimension by the teacher's std: GPT-2's few huge dimensions dominate raw MSE."""
    s, t = _check_sets(student, teacher, paired=True)
    if s.shape != t.shape:
        raise ValueError(f"MSE needs equal shapes, got {tuple(s.shape)} and {tuple(t.shape)}")
    std = t.std(dim=0, keepdim=True).clamp_min(eps)
    return float(((s - t) / std).pow(2).mean())


def layer_distances(
    student: Tensor, teacher: Tensor, n_projections: int = 256, seed: int = 0
) -> dict[str, float | None]:
    """All per-layer distances for one matched pair; width-dependent ones are None when widths differ."""
    same_width = student.shape[-1] == teacher.shape[-1]
    return {
        "sliced_wd": sliced_wasserstein(student, teacher, n_projections, seed) if same_width else None,
        "cka": linear_cka(student, teacher),
        "mse": mse(student, teacher) if same_width else None,
        "mse_normalized": normalized_mse(student, teacher) if same_width else None,
    }
