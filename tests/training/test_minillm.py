"""MiniLLM: the policy-gradient surrogate on hand-computed cases, its exactness in expectation, and the
teacher-mixed rollout (KV-cached, left-padded) against full forwards of the packed sequences."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

from Code.objectives.minillm import future_rewards, minillm_loss, mixture_logprobs, rollout


def _softmax(xs: list[float]) -> list[float]:
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [v / sum(e) for v in e]


def _old_values(s: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, alpha: float):
    logq, logp, logmix = mixture_logprobs(s, t, alpha)
    y = labels.clamp(min=0)[..., None]
    keep = labels != -100
    return [torch.where(keep, x.gather(-1, y).squeeze(-1), 0.0) for x in (logq, logp, logmix)]


def test_loss_and_gradient_by_hand():
    """Two response tokens over a 3-token vocabulary, teacher-mixed (alpha 0.2), length-normalized."""
    alpha = 0.2
    s_vals = [[0.5, -1.0, 0.2], [1.5, 0.0, -0.5]]
    t_vals = [[0.0, 0.3, -0.4], [-1.0, 0.8, 0.1]]
    ys = [2, 1]
    # a prompt position (label -100) in front: it must not count
    s = torch.tensor([[[9.0, 0.0, 0.0], *s_vals]], requires_grad=True)
    t = torch.tensor([[[0.0, 9.0, 0.0], *t_vals]])
    labels = torch.tensor([[-100, *ys]])
    logq, logp, logmix = _old_values(s.detach(), t, labels, alpha)
    loss, parts = minillm_loss(s, t, labels, logq, logp, logmix, length_norm=True)
    loss.backward()

    q = [_softmax(v) for v in s_vals]
    p = [_softmax(v) for v in t_vals]
    kl = [sum(qi * math.log(qi / pi) for qi, pi in zip(q[k], p[k], strict=True)) for k in range(2)]
    r = [math.log(p[k][ys[k]]) - math.log(q[k][ys[k]]) for k in range(2)]
    w = [q[k][ys[k]] / (alpha * p[k][ys[k]] + (1 - alpha) * q[k][ys[k]]) for k in range(2)]
    future = [r[1] / 1, 0.0]  # mean reward after token 1 (one token), nothing after token 2
    want = (w[0] * (kl[0] + future[0] * -math.log(q[0][ys[0]])) + w[1] * kl[1]) / 2
    assert loss.item() == pytest.approx(want, rel=1e-5)
    assert parts["single"].item() == pytest.approx((w[0] * kl[0] + w[1] * kl[1]) / 2, rel=1e-5)
    assert parts["rev_kl"].item() == pytest.approx(-(r[0] + r[1]) / 2, rel=1e-5)

    # d KL(q||p)/ds_j = q_j (log(q_j/p_j) - KL);  d(-log q_y)/ds = q - onehot(y)
    for k in range(2):
        grad = [w[k] * q[k][j] * (math.log(q[k][j] / p[k][j]) - kl[k])
                + w[k] * future[k] * (q[k][j] - (j == ys[k])) for j in range(3)]
        assert s.grad[0, k + 1].tolist() == pytest.approx([g / 2 for g in grad], rel=1e-4, abs=1e-7)
    assert s.grad[0, 0].abs().max().item() == 0.0  # the prompt position gets no gradient


def test_future_rewards_sum_and_mean():
    r = torch.tensor([[0.0, 1.0, 2.0, 4.0, 9.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0, 1.0, 0.0]])  # response = positions 1..3
    assert future_rewards(r, mask, length_norm=False).tolist() == [[7.0, 6.0, 4.0, 0.0, 0.0]]
    assert future_rewards(r, mask, length_norm=True)[0].tolist() == pytest.approx([7 / 3, 3.0, 4.0, 0.0, 0.0])


def test_surrogate_gradient_is_exact_in_expectation():
    """Without mixing or length normalization, E_{y~q}[grad surrogate] = grad KL(q(y1 y2) || p(y1 y2))."""
    torch.manual_seed(0)
    V = 3
    s1, s2 = torch.randn(V, requires_grad=True), torch.randn(V, V, requires_grad=True)  # tabular student
    t1, t2 = torch.randn(V), torch.randn(V, V)

    def seq_logprob(a, b, y1, y2):
        return F.log_softmax(a, -1)[y1] + F.log_softmax(b[y1], -1)[y2]

    exact = sum(seq_logprob(s1, s2, *y).exp() * (seq_logprob(s1, s2, *y) - seq_logprob(t1, t2, *y))
                for y in itertools.product(range(V), repeat=2))
    want = torch.autograd.grad(exact, (s1, s2))

    expected = None
    for y1, y2 in itertools.product(range(V), repeat=2):
        prob = seq_logprob(s1, s2, y1, y2).exp().detach()
        s_logits = torch.stack([s1, s2[y1]])[None]
        t_logits = torch.stack([t1, t2[y1]])[None]
        labels = torch.tensor([[y1, y2]])
        old = _old_values(s_logits.detach(), t_logits, labels, 0.0)
        loss, _ = minillm_loss(s_logits, t_logits, labels, *old, length_norm=False)
        grads = torch.autograd.grad(loss * 2, (s1, s2))  # x tokens: the loss is a per-token mean
        expected = [prob * g for g in grads] if expected is None else [e + prob * g for e, g in
                                                                          zip(expected, grads, strict=True)]
    for got, ref in zip(expected, want, strict=True):
        assert torch.allclose(got, ref, atol=1e-5), (got, ref)


def test_importance_weights_are_bounded():
    s, t = torch.randn(4, 50), torch.randn(4, 50) * 5
    logq, _, logmix = mixture_logprobs(s, t, 0.2)
    assert (logq - logmix).exp().max().item() <= 1 / 0.8 + 1e-5
    mix = 0.2 * F.softmax(t, -1) + 0.8 * F.softmax(s, -1)
    assert torch.allclose(logmix.exp(), mix, atol=1e-6)


def _tiny(seed: int) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=40, n_positions=64, n_embd=16, n_layer=2, n_head=2, bos_token_id=0,
                     eos_token_id=0)
    return GPT2LMHeadModel(cfg).eval()


def test_rollout_matches_full_forwards_of_the_packed_rows():
    """The cached, left-padded sampling loop records exactly what full forwards of the packed (right-padded)
    rows give at the response positions; responses stop at EOS; the mixture samples are reproducible."""
    student, teacher = _tiny(1), _tiny(2)
    prompts = [[5, 6, 7, 8, 9], [11, 12], [20, 21, 22]]
    gen = torch.Generator().manual_seed(3)
    roll = rollout(student, teacher, prompts, eos_id=0, max_new_tokens=7, alpha=0.2, generator=gen)
    again = rollout(student, teacher, prompts, eos_id=0, max_new_tokens=7, alpha=0.2,
                    generator=torch.Generator().manual_seed(3))
    assert torch.equal(roll.input_ids, again.input_ids)
    with torch.no_grad():
        s_full = F.log_softmax(student(roll.input_ids, attention_mask=roll.attention_mask).logits, -1)
        t_full = F.log_softmax(teacher(roll.input_ids, attention_mask=roll.attention_mask).logits, -1)
    keep = roll.labels != -100
    y = roll.labels.clamp(min=0)[..., None]
    assert torch.allclose(s_full.gather(-1, y).squeeze(-1)[keep], roll.logq[keep], atol=1e-5)
    assert torch.allclose(t_full.gather(-1, y).squeeze(-1)[keep], roll.logp[keep], atol=1e-5)
    for i, prompt in enumerate(prompts):
        n = int(roll.lengths[i])
        row = roll.input_ids[i, : len(prompt) + n].tolist()
        assert row[: len(prompt)] == prompt
        response = row[len(prompt):]
        assert 0 not in response[:-1] and (response[-1] == 0 or n == 7)  # stops at the first EOS
        assert roll.labels[i].ne(-100).sum().item() == n
        assert roll.attention_mask[i].sum().item() == len(prompt) + n
