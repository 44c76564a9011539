"""Evaluation metrics as pure tensor functions: token NLL / perplexity and hidden-state distances.

Hidden-state inputs are 2-D `(N, D)` sets of token-position vectors; for paired metrics (CKA, MSE) row i
of the student set and row i of the teacher set come from the same token position. Sliced WD, MSE and
normalised MSE are not re-implemented here: they call the training losses' functions
(`Code.objectives.hidden`), so training and evaluation give the same number for the same inputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from Code.objectives.estimators import exact_w1_per_layer, standardize_by_teacher
from Code.objectives.hidden import mse_per_layer, sliced_wasserstein_per_layer
from Code.objectives.masking import IGNORE_INDEX, label_mask

NORM_EPS = 1e-5  # normalised MSE: added to the teacher's variance, as training's default `norm_eps`
EXACT_W1_POINTS = 1024  # exact W1's subsample (POT's network simplex grows ~cubically with the points)

# What each per-layer key of metrics.json holds (also written into metrics.json as "definitions").
METRIC_DEFINITIONS = {
    "sliced_wd": "SW_1: mean over --projections seeded random unit directions of the exact 1-D Wasserstein-1 "
                 "distance between projected student and teacher states (objectives/hidden.py "
                 "sliced_wasserstein_per_layer, p=1, the swd loss's computation)",
    "cka": "linear CKA of the paired states (1 = identical up to rotation and scale)",
    "mse": "mean squared difference of the paired states over positions and dimensions",
    "mse_normalized": "MSE with each dimension divided by sqrt(teacher variance + 1e-5) over the positions "
                      "(objectives/hidden.py mse_per_layer(normalize=True), the --mse-normalize loss)",
    "exact_w1": f"exact W1 (POT ot.emd2, Euclidean cost) between student and teacher states at the same "
                f"{EXACT_W1_POINTS} seeded random positions, each dimension in units of the teacher's std (the "
                "critic's coordinates; objectives/estimators.py exact_w1_per_layer): an independent judge beside "
                "sliced WD. On the same positions its plan is close to the identity pairing",
}


def window_nll(logits: Tensor, labels: Tensor) -> tuple[float, int]:
    """Summed next-token NLL and scored-token count for a batch of windows.

    `labels` follow the Hugging Face convention (same shape as the input ids, IGNORE_INDEX = -100 = not
    scored): the logits at position t predict `labels[t + 1]`. Computed in fp32 whatever the model's dtype.
    """
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:].to(shift_logits.device)
    total = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1), ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return float(total), int(label_mask(shift_labels).sum())


def perplexity_from_nll(nll_sum: float, count: int) -> float:
    """exp(mean NLL); nan when nothing was scored."""
    if count <= 0:
        return float("nan")
    return float(math.exp(nll_sum / count))


def _every(x: Tensor) -> Tensor:
    return torch.ones(x.shape[0], dtype=torch.bool, device=x.device)


def _check_equal(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    x, y = _check_sets(x, y, paired=True)
    if x.shape != y.shape:
        raise ValueError(f"MSE needs equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}")
    return x, y


def _check_sets(x: Tensor, y: Tensor, paired: bool) -> tuple[Tensor, Tensor]:
    if x.dim() != 2 or y.dim() != 2:
        raise ValueError(f"hidden-state sets must be 2-D (N, D), got {tuple(x.shape)} and {tuple(y.shape)}")
    if paired and x.shape[0] != y.shape[0]:
        raise ValueError(f"paired metric needs the same number of rows, got {x.shape[0]} and {y.shape[0]}")
    return x.detach().double(), y.detach().double()


def sliced_wasserstein(x: Tensor, y: Tensor, n_projections: int = 256, seed: int = 0, p: int = 1) -> float:
    """Sliced Wasserstein distance between two equal-size point sets x (N, D) and y (N, D): SW_1 by default.

    The training loss's own computation (`Code.objectives.hidden.sliced_wasserstein_per_layer`, every
    position, no sampling), in float64, with `n_projections` random unit directions drawn from a
    generator seeded by `seed` (the same call gives the same number). With p=1 that is SW_1, the mean over
    directions of the exact 1-D Wasserstein-1 distance of the projections: the number `--loss swd`
    (`swd_p=1`) gives for the same states and directions, and what metrics.json's `sliced_wd` holds.
    With p=2 it is SW_2, the square root of the training loss's `swd_p=2` value (SW_2 squared).
    Order-free: a permutation of either set does not change it.
    """
    x, y = _check_sets(x, y, paired=False)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"sliced Wasserstein needs equal widths, got {x.shape[1]} and {y.shape[1]}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"sliced Wasserstein compares sets of equal size, got {x.shape[0]} and {y.shape[0]} "
                         "(evaluation's come from the same token positions)")
    if p not in (1, 2):
        raise ValueError(f"sliced Wasserstein p must be 1 or 2, got {p}")
    gen = torch.Generator(device=x.device).manual_seed(seed)
    every = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    value = float(sliced_wasserstein_per_layer(x[None], y[None], every, n_projections, p, x.shape[0], gen)[0])
    return value if p == 1 else math.sqrt(max(value, 0.0))


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
    """Mean squared difference of paired features of the same width (training's `mse_per_layer`)."""
    x, y = _check_equal(x, y)
    return float(mse_per_layer(x[None], y[None], _every(x))[0])


def normalized_mse(student: Tensor, teacher: Tensor, eps: float = NORM_EPS) -> float:
    """MSE after dividing each dimension by sqrt(teacher variance + eps): GPT-2's few huge dimensions
    dominate raw MSE. The training loss's computation (`mse_per_layer(normalize=True)`, `--mse-normalize`):
    the teacher's population variance of each dimension over the N positions, eps added to the variance."""
    s, t = _check_equal(student, teacher)
    return float(mse_per_layer(s[None], t[None], _every(s), normalize=True, eps=eps)[0])


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
        "exact_w1": exact_w1(student, teacher, seed=seed) if same_width else None,
    }


def exact_w1(student: Tensor, teacher: Tensor, max_points: int = EXACT_W1_POINTS, seed: int = 0) -> float:
    """Exact W1 between paired sets (N, D) on up to `max_points` seeded random positions, standardised by the
    teacher's per-dimension mean and std over all N (`objectives/estimators.py`, the critic's coordinates)."""
    s, t = _check_equal(student, teacher)
    s, t = standardize_by_teacher(s[None], t[None], _every(s))
    if s.shape[1] > max_points:
        idx = torch.randperm(s.shape[1], generator=torch.Generator().manual_seed(seed))[:max_points]
        s, t = s[:, idx], t[:, idx]
    return float(exact_w1_per_layer(s, t)[0])
