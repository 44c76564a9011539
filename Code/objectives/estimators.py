"""Critic-free distribution distances beside the critic (issue 21): debiased Sinkhorn and Gaussian W2.

Every term here works in the coordinates the critic sees: each layer and dimension standardised by the
teacher's mean and std (here the batch's real teacher positions, detached; the critic uses its running
version of the same statistics), so every dimension counts in units of the teacher's own spread and
GPT-2's few huge dimensions do not own the distance. Each returns one value per matched layer; the
registry entries at the bottom average them over layers like every hidden term.

- `sinkhorn`: GeomLoss's debiased Sinkhorn divergence S_eps (p=2, `blur` = eps^(1/2)) between the student
  and teacher states at the *same* sampled positions. On the same positions the optimal plan is close to
  the identity pairing, so this term behaves like MSE (the study measures how much).
- `sinkhorn_unpaired`: the same divergence between the student's states at one half of the real positions
  and the teacher's states at the other half (a random split per step): no student state has its own
  teacher state on the other side, so only the two distributions can be matched.
- `gauss_w2`: the closed-form W2^2 between diagonal Gaussians fitted per layer, |mu_s - mu_t|^2 +
  |sigma_s - sigma_t|^2 (as WKD-F does for features); a function of the two sets' moments, so it never
  sees the pairing, and nearly free.
Both Sinkhorn values are reported as 2 S_eps / D, GeomLoss's cost |x - y|^2 / 2 brought to a mean squared
difference per dimension, MSE's units, so weights tuned for `mse` are in the right range. A large blur
(comparable to the point clouds' diameter, ~sqrt(2 D) in standardised units) moves S_eps toward matching
means only; a small one toward exact W2^2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from Code.objectives.hidden import sample_positions
from Code.objectives.options import LossSpecError

# ------------------------------------------------------------------------------------------ options


@dataclass(frozen=True)
class SinkhornOptions:
    sinkhorn_blur: float = 0.05          # GeomLoss blur (eps = blur^2), in standardised units
    sinkhorn_max_samples: int = 1024     # positions per side per call (the cost is quadratic in it)
    sinkhorn_scaling: float = 0.5        # GeomLoss eps-scaling ratio: fewer iterations toward 0, more accuracy to 1

    def __post_init__(self) -> None:
        if not self.sinkhorn_blur > 0:
            raise LossSpecError(f"sinkhorn_blur must be > 0, got {self.sinkhorn_blur}")
        if self.sinkhorn_max_samples < 2:
            raise LossSpecError(f"sinkhorn_max_samples must be >= 2, got {self.sinkhorn_max_samples}")
        if not 0 < self.sinkhorn_scaling < 1:
            raise LossSpecError(f"sinkhorn_scaling must be in (0, 1), got {self.sinkhorn_scaling}")


@dataclass(frozen=True)
class GaussW2Options:
    gauss_eps: float = 1e-5  # added to each variance before the square root (a finite gradient at std 0)

    def __post_init__(self) -> None:
        if not self.gauss_eps > 0:
            raise LossSpecError(f"gauss_eps must be > 0, got {self.gauss_eps}")


# ------------------------------------------------------------------------------------------ geometry
def masked_moments(x: Tensor, valid: Tensor, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """Per layer and dimension mean `(L, 1, D)` and std `sqrt(var + eps)` of `x` `(L, N, D)` over `valid` `(N,)`."""
    m = valid[None, :, None]
    count = valid.sum().clamp(min=1)
    mean = torch.where(m, x, 0.0).sum(1, keepdim=True) / count
    var = torch.where(m, (x - mean) ** 2, 0.0).sum(1, keepdim=True) / count
    return mean, torch.sqrt(var + eps)


def standardize_by_teacher(student: Tensor, teacher: Tensor, valid: Tensor,
                           eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """Both sets `(L, N, D)` in the teacher's units: `(x - mean_t) / std_t` per layer and dimension, the
    teacher's moments over the real positions, detached (they are a choice of coordinates, not a target).
    Padded positions come out as 0 (the teacher's mean), so they cannot stretch a diameter or leak garbage."""
    with torch.no_grad():
        mean, std = masked_moments(teacher.float(), valid, eps)
    m = valid[None, :, None]
    return (torch.where(m, (student.float() - mean) / std, 0.0),
            torch.where(m, (teacher.float() - mean) / std, 0.0))


def split_halves(mask: Tensor, k: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Two disjoint sets of up to `k` positions each from a flat `(N,)` mask, without a host sync.

    Returns (student indices, their validity, teacher indices, their validity). Random keys with padded
    positions pushed below every real one, sorted; the student takes the even ranks, the teacher the odd
    ones, so real positions are shared out first and the two halves never hold the same position.
    """
    keys = torch.rand(mask.shape[0], generator=generator, device=mask.device)
    order = torch.where(mask, keys, -1.0).argsort(descending=True)
    half = min(k, mask.shape[0] // 2)
    s_idx, t_idx = order[0 : 2 * half : 2], order[1 : 2 * half : 2]
    return s_idx, mask[s_idx], t_idx, mask[t_idx]


def gaussian_w2_per_layer(student: Tensor, teacher: Tensor, valid: Tensor, eps: float = 1e-5) -> Tensor:
    """`(L,)` mean over dimensions of (mu_s - mu_t)^2 + (sigma_s - sigma_t)^2 over the real positions: W2^2
    between the diagonal Gaussians fitted to each set, per dimension (MSE's units). Pairing-free."""
    mean_s, std_s = masked_moments(student, valid, eps)
    mean_t, std_t = masked_moments(teacher, valid, eps)
    return ((mean_s - mean_t) ** 2 + (std_s - std_t) ** 2).mean(dim=(1, 2))


def sinkhorn_per_layer(student: Tensor, teacher: Tensor, valid_s: Tensor, valid_t: Tensor, blur: float,
                       scaling: float = 0.5) -> Tensor:
    """`(L,)` debiased Sinkhorn divergence 2 S_eps / D between the sets `student` `(L, Ns, D)` and `teacher`
    `(L, Nt, D)`, each point weighted uniformly over its valid positions (padded ones weigh 0), all layers
    in one batched GeomLoss call."""
    from geomloss import SamplesLoss  # imported here: only runs that use the term pay for it

    loss = SamplesLoss("sinkhorn", p=2, blur=blur, debias=True, scaling=scaling, backend="tensorized")
    layers, _, dim = student.shape
    w_s = (valid_s.float() / valid_s.sum().clamp(min=1)).expand(layers, -1).contiguous()
    w_t = (valid_t.float() / valid_t.sum().clamp(min=1)).expand(layers, -1).contiguous()
    return loss(w_s, student.contiguous(), w_t, teacher.contiguous()) * (2.0 / dim)


def sinkhorn_terms(student: Tensor, teacher: Tensor, mask: Tensor, options: SinkhornOptions, paired: bool,
                   generator: torch.Generator | None) -> Tensor:
    """`(L,)` Sinkhorn values for stacked `(L, N, D)` states: standardised by the teacher, then the same
    sampled positions on both sides (`paired`) or disjoint halves (unpaired)."""
    s, t = standardize_by_teacher(student, teacher, mask)
    if paired:
        idx, valid = sample_positions(mask, options.sinkhorn_max_samples, generator)
        s_idx = t_idx = idx
        valid_s = valid_t = valid
    else:
        s_idx, valid_s, t_idx, valid_t = split_halves(mask, options.sinkhorn_max_samples, generator)
    return sinkhorn_per_layer(s[:, s_idx], t[:, t_idx], valid_s, valid_t, options.sinkhorn_blur,
                              options.sinkhorn_scaling)


def exact_w1_per_layer(x: Tensor, y: Tensor, valid_x: Tensor | None = None, valid_y: Tensor | None = None) -> Tensor:
    """`(L,)` exact W1 (POT's network simplex, `ot.emd2`, Euclidean cost) between the point clouds `x` `(L, N, D)`
    and `y` `(L, M, D)`, uniform weights over the valid points; float64, no gradient. The independent judge of
    the calibration and of evaluation: cubic-ish in N, so callers pass a subsample (~1-2k points)."""
    import ot  # POT: imported here, only the judge pays for it

    out = []
    for layer in range(x.shape[0]):
        a = x[layer] if valid_x is None else x[layer][valid_x]
        b = y[layer] if valid_y is None else y[layer][valid_y]
        a, b = a.detach().double().cpu(), b.detach().double().cpu()
        cost = ot.dist(a, b, metric="euclidean")
        out.append(ot.emd2(torch.full((a.shape[0],), 1.0 / a.shape[0], dtype=torch.float64),
                           torch.full((b.shape[0],), 1.0 / b.shape[0], dtype=torch.float64), cost,
                           numItermax=1_000_000))
    return torch.stack([torch.as_tensor(v, dtype=torch.float64) for v in out])
