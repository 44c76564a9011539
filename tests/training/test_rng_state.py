"""Every generator a training step draws from comes back from a rank's checkpoint file as it was saved."""

from __future__ import annotations

import random

import numpy as np
import torch

from Code.run_folder import load_tensors
from Code.training.rng_state import capture_rng, restore_rng
from Code.utils import atomic_torch_save, seed_everything


def _draws() -> tuple:
    """One draw from each generator: torch CPU (dropout's), Python's, numpy's (a Gaussian too: its cache)."""
    cuda = torch.rand(3, device="cuda") if torch.cuda.is_available() else None
    return (torch.rand(3), torch.nn.functional.dropout(torch.ones(8), 0.5), random.random(), np.random.rand(2),
            np.random.standard_normal(), cuda)


def _same(a: tuple, b: tuple) -> bool:
    return (torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2] and np.array_equal(a[3], b[3])
            and a[4] == b[4] and (a[5] is None or torch.equal(a[5].cpu(), b[5].cpu())))


def test_saved_generators_replay_their_draws_after_a_checkpoint_round_trip(tmp_path):
    seed_everything(7)
    _draws()
    np.random.standard_normal()  # numpy now holds a cached second Gaussian: part of its state
    path = tmp_path / "rank0_state.pt"
    atomic_torch_save({**capture_rng(), "critics": None}, path)
    want = _draws()
    seed_everything(8)  # another run's state, as a fresh process has after its own seeding
    assert not _same(_draws(), want)
    restore_rng(load_tensors(path))  # the verified loader: tensors and plain values only
    assert _same(_draws(), want)


def test_a_checkpoint_holding_only_the_torch_generator_still_resumes_it(tmp_path):
    seed_everything(3)
    state = {"torch_rng": torch.get_rng_state()}  # what checkpoints held before the other generators
    want = torch.rand(4)
    seed_everything(4)
    restore_rng(state)
    assert torch.equal(torch.rand(4), want)
