"""Top-k KD with a rest bucket (Code/objectives/topk_kd.py): exact at k = V, a lower bound of the full KL
that grows with k, the same from cached (fp16) targets as from the live teacher within a stated tolerance,
and what `kd` does with targets in its inputs."""

from __future__ import annotations

import math

import pytest
import torch

from Code.objectives import logit as ll
from Code.objectives.masking import label_mask, masked_mean
from Code.objectives.parsing import parse_losses
from Code.objectives.registry import LossInputs, LossSpecError, compute_losses
from Code.objectives.topk_kd import TopKTargetError, TopKTargets, topk_kl_rows, topk_targets

N, V = 24, 257
# fp16 storage of log-probabilities: |error| <= 2^-11 relative (<= 0.008 nats at log p = -16); on these
# rows the KL moves by far less. The stated tolerance of cached against live top-k KD:
CACHE_RTOL, CACHE_ATOL = 2e-3, 1e-4


def _logits(seed: int, scale: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, V, generator=g).requires_grad_(), torch.randn(N, V, generator=g) * scale


def _cached(t: TopKTargets) -> TopKTargets:
    """What a float16 cache gives back."""
    return TopKTargets(t.logp.half().float(), t.ids.to(torch.int32).long(), t.log_rest, t.temperature)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_k_equal_vocab_is_the_full_forward_kl_values_and_gradients(temperature):
    s, t = _logits(0)
    full = ll.plain_rows("fkl", s, t, 1 / temperature)
    top = topk_kl_rows(s, topk_targets(t, V, temperature))
    (g_full,) = torch.autograd.grad(full.sum(), s)
    (g_top,) = torch.autograd.grad(top.sum(), s)
    torch.testing.assert_close(top, full, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_top, g_full, rtol=1e-4, atol=1e-7)


def test_a_lower_bound_of_the_full_kl_that_grows_with_k():
    s, t = _logits(1)
    full = ll.plain_rows("fkl", s, t, 1.0)
    values = [topk_kl_rows(s, topk_targets(t, k, 1.0)) for k in (1, 8, 32, 128)]
    for smaller, larger in zip(values, values[1:], strict=False):
        assert bool((smaller <= larger + 1e-6).all())
    assert bool((values[-1] <= full + 1e-6).all()) and bool((values[0] >= -1e-6).all())
    # k = 1 drops information the full KL sees
    assert float(values[0].detach().mean()) < 0.9 * float(full.detach().mean())


def test_zero_when_the_student_matches_the_teacher_on_the_top_k_and_the_rest():
    _, t = _logits(2)
    targets = topk_targets(t, 16, 1.0)
    assert topk_kl_rows(t.clone(), targets).abs().max() < 1e-5  # the teacher as student
    # a student with the same top-k and rest masses but another spread inside the rest: still 0
    logp = torch.log_softmax(t, -1)
    rest = torch.ones_like(logp, dtype=torch.bool).scatter(-1, targets.ids, False)
    other = torch.where(rest, torch.log_softmax(torch.where(rest, -logp, -math.inf), -1) + targets.log_rest[:, None],
                        logp)
    assert topk_kl_rows(other, targets).abs().max() < 1e-4
    assert ll.plain_rows("fkl", other, t, 1.0).min() > 1e-3  # ... which the full KL does see


def test_all_student_mass_on_the_top_k_is_finite():
    _, t = _logits(3)
    targets = topk_targets(t, 8, 1.0)
    s = torch.full((N, V), -1e4).scatter(-1, targets.ids, 0.0).requires_grad_()
    value = topk_kl_rows(s, targets)
    (g,) = torch.autograd.grad(value.sum(), s)
    assert bool(torch.isfinite(value).all()) and bool(torch.isfinite(g).all())


def test_targets_of_k_serve_any_smaller_k():
    s, t = _logits(4)
    big = topk_targets(t, 64, 2.0)
    torch.testing.assert_close(topk_kl_rows(s, big.first(8)), topk_kl_rows(s, topk_targets(t, 8, 2.0)),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(TopKTargetError, match="fewer than the 128"):
        big.first(128)


@pytest.mark.parametrize("k", [8, 32, 128])
def test_cached_fp16_targets_match_the_live_teacher_top_k(k):
    """The stated tolerance (CACHE_RTOL, CACHE_ATOL) between KD on a float16 cache and on the live top-k."""
    s, t = _logits(5 + k)
    live = topk_targets(t, k, 1.0)
    v_live, v_cache = topk_kl_rows(s, live), topk_kl_rows(s, _cached(live))
    (g_live,) = torch.autograd.grad(v_live.sum(), s)
    (g_cache,) = torch.autograd.grad(v_cache.sum(), s)
    torch.testing.assert_close(v_cache, v_live, rtol=CACHE_RTOL, atol=CACHE_ATOL)
    torch.testing.assert_close(g_cache, g_live, rtol=CACHE_RTOL, atol=CACHE_ATOL)


def _inputs(s: torch.Tensor, t: torch.Tensor, targets: TopKTargets | None) -> LossInputs:
    B, T = 4, N // 4
    labels = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(9))
    labels[0, -2:] = -100
    mask = torch.ones(B, T, dtype=torch.bool)
    shaped = None
    if targets is not None:
        shaped = TopKTargets(targets.logp.reshape(B, T, -1), targets.ids.reshape(B, T, -1),
                             targets.log_rest.reshape(B, T), targets.temperature)
    return LossInputs(labels=labels, mask=mask, student_logits=s.reshape(B, T, V),
                      teacher_logits=None if targets is not None else t.reshape(B, T, V), teacher_topk=shaped)


def test_kd_reads_cached_targets_as_kd_topk_reads_the_live_teacher():
    s, t = _logits(6)
    terms = parse_losses("kd[kd_topk=16,temperature=2]")
    live, _ = compute_losses(terms, _inputs(s, t, None))
    cached, _ = compute_losses(terms, _inputs(s, t, topk_targets(t, 64, 2.0)))  # a cache of 64 read at 16
    labels = _inputs(s, t, None).labels.reshape(-1)
    by_hand = masked_mean(topk_kl_rows(s, topk_targets(t, 16, 2.0)), label_mask(labels)) * 4
    assert cached.item() == pytest.approx(live.item(), rel=1e-6)
    assert live.item() == pytest.approx(by_hand.item(), rel=1e-6)


def test_kd_refuses_cached_targets_at_another_temperature():
    s, t = _logits(7)
    with pytest.raises(LossSpecError, match="temperature 2.0.*cache holds targets at 1.0"):
        compute_losses(parse_losses("kd[temperature=2]"), _inputs(s, t, topk_targets(t, 8, 1.0)))
