"""Pure evaluation metrics: perplexity of a uniform model, sliced WD and (normalised) MSE equal to the training
losses' numbers, CKA invariances; cost helpers."""

import math

import pytest
import torch
from torch import nn

from Code.evaluation.cost import count_parameters, model_cost, size_on_disk
from Code.evaluation.metrics import (
    layer_distances,
    linear_cka,
    mse,
    normalized_mse,
    perplexity_from_nll,
    sliced_wasserstein,
    window_nll,
)
from Code.evaluation.passes import perplexity
from Code.objectives.hidden import mse_per_layer, sliced_wasserstein_per_layer


class Uniform(nn.Module):
    """A language model that gives every token probability 1/V (constant logits)."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, input_ids):
        logits = torch.zeros(*input_ids.shape, self.vocab) + self.dummy
        return type("Out", (), {"logits": logits})()


def windows_of(tokens: torch.Tensor, window: int) -> list[dict]:
    """Windows scoring every token after the first once (local, so these tests need no data module)."""
    items, prev_end, n = [], 1, len(tokens)
    while prev_end < n:
        end = min(prev_end + window - 1, n)
        ids = tokens[end - min(window, end) : end]
        labels = ids.clone()
        labels[: len(ids) - (end - prev_end)] = -100
        items.append({"input_ids": ids, "labels": labels})
        prev_end = end
    return items


def test_uniform_model_has_perplexity_v():
    for vocab in (7, 50, 1000):
        tokens = torch.randint(0, vocab, (300,), generator=torch.Generator().manual_seed(0))
        res = perplexity(Uniform(vocab), windows_of(tokens, 32), batch_size=4, progress=False)
        assert res["ppl"] == pytest.approx(vocab, rel=1e-5)
        assert res["tokens"] == 299  # every token after the first, once


def test_window_nll_matches_cross_entropy_and_counts():
    logits = torch.randn(2, 6, 11)
    labels = torch.randint(0, 11, (2, 6))
    labels[0, :3] = -100
    total, n = window_nll(logits, labels)
    ref = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), reduction="sum",
                                      ignore_index=-100)
    assert total == pytest.approx(float(ref), rel=1e-6)
    assert n == 5 + 3
    assert math.isnan(perplexity_from_nll(0.0, 0))


def test_window_nll_upcasts_bf16_logits():
    logits = torch.randn(1, 5, 9)
    labels = torch.randint(0, 9, (1, 5))
    a, _ = window_nll(logits.bfloat16(), labels)
    b, _ = window_nll(logits.bfloat16().float(), labels)
    assert a == pytest.approx(b, rel=1e-6)


def test_sliced_wd_zero_for_identical_and_grows_with_shift():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 16, generator=g)
    assert sliced_wasserstein(x, x.clone(), 128, seed=1) == pytest.approx(0.0, abs=1e-12)
    perm = x[torch.randperm(500, generator=g)]
    assert sliced_wasserstein(x, perm, 128, seed=1) == pytest.approx(0.0, abs=1e-12)  # a set, order-free
    direction = torch.randn(16, generator=g)
    direction /= direction.norm()
    dists = [sliced_wasserstein(x, x + c * direction, 128, seed=1) for c in (0.5, 1.0, 2.0, 4.0)]
    assert all(b > a for a, b in zip(dists, dists[1:], strict=False))
    # 1-D projections of a pure shift are shifts by |theta . s|, whose mean is about |s| * sqrt(2/(pi d))
    assert dists[-1] == pytest.approx(4.0 * math.sqrt(2 / (math.pi * 16)), rel=0.2)


def test_sliced_wd_is_seeded_and_needs_equal_sizes():
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(300, 8, generator=g), torch.randn(300, 8, generator=g) + 1.0
    assert sliced_wasserstein(x, y, 64, seed=5) == sliced_wasserstein(x, y, 64, seed=5)
    assert sliced_wasserstein(x, y, 64, seed=5) != sliced_wasserstein(x, y, 64, seed=6)
    assert sliced_wasserstein(x, y, 64, seed=5) > 0.2
    same = torch.randn(2000, 8, generator=g)
    assert sliced_wasserstein(same[:1000], same[1000:], 64, seed=0) < 0.1  # two samples of one law
    with pytest.raises(ValueError, match="equal widths"):
        sliced_wasserstein(x, torch.randn(300, 9), 8)
    with pytest.raises(ValueError, match="equal size"):
        sliced_wasserstein(x, torch.randn(200, 8), 8)


def test_sliced_wd_is_the_training_loss_number():
    """Evaluation's sliced_wd and the swd training loss give the same number for the same states and directions."""
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(256, 12, generator=g, dtype=torch.float64), torch.randn(256, 12, generator=g).double() * 2
    every = torch.ones(256, dtype=torch.bool)
    for p in (1, 2):
        train = sliced_wasserstein_per_layer(x[None], y[None], every, 32, p, 4096, torch.Generator().manual_seed(7))
        value = float(train[0]) if p == 1 else math.sqrt(float(train[0]))  # p=2: training's value is SW_2 squared
        assert sliced_wasserstein(x, y, 32, seed=7, p=p) == pytest.approx(value, rel=1e-12)
    # SW_1 by hand: mean over the same unit directions of the mean |sorted difference| of the projections
    theta = torch.randn(1, 12, 32, generator=torch.Generator().manual_seed(7), dtype=torch.float64)[0]
    theta = theta / theta.norm(dim=0, keepdim=True)
    by_hand = ((x @ theta).sort(dim=0).values - (y @ theta).sort(dim=0).values).abs().mean()
    assert sliced_wasserstein(x, y, 32, seed=7) == pytest.approx(float(by_hand), rel=1e-12)
    # float32 states (what training stacks) give the float64 number up to float32 rounding
    assert sliced_wasserstein(x.float(), y.float(), 32, seed=7) == pytest.approx(float(by_hand), rel=1e-6)


def test_cka_identity_rotation_scaling():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 12, generator=g) @ torch.randn(12, 12, generator=g)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-10)
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=torch.float64))
    xd = x.double()
    assert linear_cka(xd, xd @ q) == pytest.approx(1.0, abs=1e-10)
    assert linear_cka(xd, 7.5 * xd) == pytest.approx(1.0, abs=1e-10)
    y = torch.randn(400, 20, generator=g)
    base = linear_cka(x, y)
    assert base < 0.5
    q20, _ = torch.linalg.qr(torch.randn(20, 20, generator=g, dtype=torch.float64))
    assert linear_cka(xd @ q, 3.0 * y.double() @ q20) == pytest.approx(base, abs=1e-9)  # different widths ok


def test_mse_and_normalized_mse():
    x = torch.randn(50, 4)
    assert mse(x, x) == 0.0 and normalized_mse(x, x) == 0.0
    assert mse(x, x + 2.0) == pytest.approx(4.0)
    t = torch.randn(100, 3) * torch.tensor([1.0, 100.0, 1.0])  # one huge dimension
    s = t + torch.tensor([0.1, 0.1, 0.1])
    assert normalized_mse(s, t) < 0.1 < mse(s + torch.tensor([0.0, 10.0, 0.0]), t)
    with pytest.raises(ValueError, match="equal shapes"):
        mse(x, torch.randn(50, 5))


def test_normalized_mse_is_the_training_loss_number():
    """eps on the teacher's (population) variance, as mse_per_layer(normalize=True) of training computes it."""
    g = torch.Generator().manual_seed(1)
    t = torch.randn(80, 6, generator=g, dtype=torch.float64) * torch.tensor([1.0, 50.0, 1.0, 1.0, 0.01, 3.0])
    s = t + torch.randn(80, 6, generator=g, dtype=torch.float64) * 0.3
    every = torch.ones(80, dtype=torch.bool)
    train = mse_per_layer(s[None], t[None], every, normalize=True, eps=1e-5)
    assert normalized_mse(s, t) == pytest.approx(float(train[0]), rel=1e-12)
    by_hand = ((s - t) / (t.var(dim=0, unbiased=False) + 1e-5).sqrt()).pow(2).mean()
    assert normalized_mse(s, t) == pytest.approx(float(by_hand), rel=1e-12)
    assert mse(s, t) == pytest.approx(float(mse_per_layer(s[None], t[None], every)[0]), rel=1e-12)


def test_layer_distances_width_mismatch_keeps_cka_only():
    row = layer_distances(torch.randn(64, 8), torch.randn(64, 16), 16, 0)
    assert row["sliced_wd"] is None and row["mse"] is None and 0 <= row["cka"] <= 1


def test_cost_helpers(tmp_path):
    lin = nn.Linear(4, 4)
    tied = nn.Sequential(lin, nn.ReLU(), lin)
    assert count_parameters(tied) == 20
    assert size_on_disk(tmp_path / "missing") is None
    (tmp_path / "model.safetensors").write_bytes(b"x" * 100)
    (tmp_path / "config.json").write_text("{}")
    assert size_on_disk(tmp_path) == 100
    cost = model_cost(Uniform(10), tmp_path, torch.zeros(2, 8, dtype=torch.long), "cpu", warmup=1, iters=3)
    assert cost["params"] == 1 and cost["size_bytes"] == 100 and cost["tokens_per_s"] > 0
    assert cost["batch_size"] == 2 and cost["seq_len"] == 8
