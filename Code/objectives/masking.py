"""Means over the positions that count: the one masked mean every loss, critic and evaluation uses."""

from __future__ import annotations

import torch
from torch import Tensor

IGNORE_INDEX = -100  # label of a position that is not scored (padding, a masked prompt)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean over the last dim of `values` (..., N) where `mask` (N,) is True; 0 when nothing counts.

    `where` rather than a product, so a NaN or inf at a masked-out position cannot leak in; the count
    stays a tensor, so no host sync.
    """
    return torch.where(mask, values, 0.0).sum(-1) / mask.sum().clamp(min=1)


def label_mask(labels: Tensor) -> Tensor:
    """True where a label is scored (not IGNORE_INDEX)."""
    return labels != IGNORE_INDEX


def flat_mask(mask: Tensor) -> Tensor:
    """A (B, T) position mask as the flat bool (B*T,) the per-position losses use."""
    return mask.reshape(-1).to(torch.bool)
