"""Checking a loss against a reference formula: the same value and the same gradient."""

from __future__ import annotations

import pytest
import torch


def assert_same_value_and_gradient(got: torch.Tensor, expected: torch.Tensor, wrt: torch.Tensor,
                                   rel: float) -> None:
    """`got` equals `expected` (to `rel`) and so do their gradients with respect to `wrt` (the student's
    logits, say): a loss can match its formula's value yet send another gradient (a detach, a wrong mask)."""
    (g_ref,) = torch.autograd.grad(expected, wrt)
    (g_got,) = torch.autograd.grad(got, wrt)
    assert got.item() == pytest.approx(expected.item(), rel=rel)
    torch.testing.assert_close(g_got, g_ref, rtol=1e-4, atol=1e-7)
