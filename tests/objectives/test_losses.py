"""The loss registry on hand-computed cases: each divergence's defining properties, masking, gradients
reaching every matched layer, fp32/chunked paths, and one-line errors for bad specs."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from Code.arguments import PRESETS
from Code.critic import CriticTrainer
from Code.objectives import logit as logit_losses
from Code.objectives.parsing import parse_losses
from Code.objectives.registry import (
    REGISTRY,
    LossInputs,
    LossPlan,
    LossSpecError,
    NonFiniteLossError,
    compute_losses,
)
from tests.support.gradients import assert_same_value_and_gradient

B, T, V, D, L = 3, 6, 17, 8, 3
LOGIT_LOSSES = ["lm", "kd", "rkl", "jsd", "skl", "tvd"]
HIDDEN_LOSSES = ["mse", "cos", "swd", "wd"]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_inputs(seed: int = 0, opts: dict | None = None, critic=None) -> LossInputs:
    """Random inputs; `opts` are the loss options `value` and `terms` apply (layer_ids goes to the inputs)."""
    opts = dict(opts or {})
    layer_ids = opts.pop("layer_ids", None)
    g = _gen(seed)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[0, 4:] = False  # a padded tail
    mask[2, 5:] = False
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[~mask] = -100
    labels[1, 0] = -100  # an ignored real position (e.g. an already scored token)
    inputs = LossInputs(
        labels=labels,
        mask=mask,
        student_logits=torch.randn(B, T, V, generator=g).requires_grad_(),
        teacher_logits=torch.randn(B, T, V, generator=g) * 2,
        student_hidden=[torch.randn(B, T, D, generator=g).requires_grad_() for _ in range(L)],
        teacher_hidden=[torch.randn(B, T, D, generator=g) + 1 for _ in range(L)],
        critic=critic,
        layer_ids=layer_ids,
    )
    inputs.opts = opts
    return inputs


def terms(spec: str, inputs: LossInputs, weights: str | None = None):
    """`parse_losses` with the case's options given to every term that has them (as the flags do)."""
    return parse_losses(spec, weights, defaults=inputs.opts)


def value(name: str, inputs: LossInputs) -> torch.Tensor:
    (term,) = terms(name, inputs)
    return term.spec.fn(inputs, term.options)[0]


# ------------------------------------------------------------------------------- logit losses
@pytest.mark.parametrize("name", ["kd", "rkl", "jsd", "skl", "tvd"])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_divergence_of_identical_distributions_is_zero(name, temperature):
    inputs = make_inputs(opts=dict(temperature=temperature))
    inputs.teacher_logits = inputs.student_logits.detach().clone()
    assert value(name, inputs).item() == pytest.approx(0.0, abs=1e-6)


def test_forward_kl_at_t1_equals_torch_kl_div():
    inputs = make_inputs()
    keep = inputs.labels.reshape(-1) != -100
    s = inputs.student_logits.reshape(-1, V)[keep]
    t = inputs.teacher_logits.reshape(-1, V)[keep]
    expected = F.kl_div(F.log_softmax(s, -1), F.softmax(t, -1), reduction="batchmean")
    assert value("kd", inputs).item() == pytest.approx(expected.item(), rel=1e-5)


def test_kd_scales_by_t_squared_and_gradient_matches_autograd():
    temp = 2.0
    inputs = make_inputs(opts=dict(temperature=temp))
    keep = inputs.labels.reshape(-1) != -100
    s = inputs.student_logits.reshape(-1, V)[keep]
    t = inputs.teacher_logits.reshape(-1, V)[keep]
    expected = F.kl_div(F.log_softmax(s / temp, -1), F.softmax(t / temp, -1), reduction="batchmean") * temp**2
    assert_same_value_and_gradient(value("kd", inputs), expected, inputs.student_logits, rel=1e-5)


def test_lm_equals_cross_entropy_with_ignore_index():
    inputs = make_inputs()
    expected = F.cross_entropy(inputs.student_logits.reshape(-1, V), inputs.labels.reshape(-1), ignore_index=-100)
    assert_same_value_and_gradient(value("lm", inputs), expected, inputs.student_logits, rel=1e-6)


def test_jsd_is_symmetric_and_at_most_log2():
    inputs = make_inputs()
    swapped = make_inputs()
    swapped.student_logits, swapped.teacher_logits = inputs.teacher_logits, inputs.student_logits
    assert value("jsd", inputs).item() == pytest.approx(value("jsd", swapped).item(), rel=1e-5)
    # Disjoint, near one-hot distributions: JSD approaches its bound log 2 and never exceeds it.
    far = make_inputs()
    far.student_logits = torch.full((B, T, V), -50.0)
    far.student_logits[..., 0] = 50.0
    far.teacher_logits = torch.full((B, T, V), -50.0)
    far.teacher_logits[..., 1] = 50.0
    jsd = value("jsd", far).item()
    assert math.log(2) - 1e-3 < jsd <= math.log(2) + 1e-6


def test_skew_kl_at_alpha_zero_is_kd_and_shrinks_with_alpha():
    kd = value("kd", make_inputs())
    skl0 = value("skl", make_inputs(opts=dict(skew_alpha=0.0)))
    skl1 = value("skl", make_inputs(opts=dict(skew_alpha=0.1)))
    skl5 = value("skl", make_inputs(opts=dict(skew_alpha=0.5)))
    assert skl0.item() == pytest.approx(kd.item(), rel=1e-5)
    assert kd.item() > skl1.item() > skl5.item() > 0


def test_tvd_is_in_unit_interval_and_reverse_kl_differs_from_forward():
    tvd = value("tvd", make_inputs()).item()
    assert 0 < tvd < 1
    assert value("rkl", make_inputs()).item() != pytest.approx(value("kd", make_inputs()).item(), rel=1e-3)


def test_topk_kd_with_k_equal_vocab_equals_full_kd_values_and_gradients():
    full = make_inputs(opts=dict(temperature=2.0))
    top = make_inputs(opts=dict(temperature=2.0, kd_topk=V))
    v_full, v_top = value("kd", full), value("kd", top)
    (g_full,) = torch.autograd.grad(v_full, full.student_logits)
    (g_top,) = torch.autograd.grad(v_top, top.student_logits)
    assert v_top.item() == pytest.approx(v_full.item(), rel=1e-5)
    torch.testing.assert_close(g_top, g_full, rtol=1e-4, atol=1e-7)
    small = value("kd", make_inputs(opts=dict(temperature=2.0, kd_topk=3))).item()
    assert math.isfinite(small) and small >= 0 and small != pytest.approx(v_full.item(), rel=1e-3)


@pytest.mark.parametrize("name,options", [("lm", {}), ("kd", {}), ("kd", {"kd_topk": 5}),
                                          ("jsd", {}), ("rkl", {"temperature": 2.0})])
def test_chunked_path_equals_single_chunk(monkeypatch, name, options):
    whole = make_inputs(opts=dict(**options))
    v_whole = value(name, whole)
    (g_whole,) = torch.autograd.grad(v_whole, whole.student_logits)
    monkeypatch.setattr(logit_losses, "CHUNK_ELEMENTS", 2 * V)  # two rows per chunk: many chunks
    chunked = make_inputs(opts=dict(**options))
    v_chunked = value(name, chunked)
    (g_chunked,) = torch.autograd.grad(v_chunked, chunked.student_logits)
    assert v_chunked.item() == pytest.approx(v_whole.item(), rel=1e-6)
    torch.testing.assert_close(g_chunked, g_whole)


def test_bf16_logits_are_computed_in_fp32():
    ref = make_inputs(opts=dict(temperature=2.0))
    low = make_inputs(opts=dict(temperature=2.0))
    low.student_logits = ref.student_logits.detach().bfloat16().requires_grad_()
    low.teacher_logits = ref.teacher_logits.bfloat16()
    ref.student_logits = low.student_logits.detach().float().requires_grad_()
    ref.teacher_logits = low.teacher_logits.float()
    for name in LOGIT_LOSSES:
        v_low = value(name, low)
        assert v_low.dtype == torch.float32
        assert v_low.item() == pytest.approx(value(name, ref).item(), rel=1e-5)
    (grad,) = torch.autograd.grad(value("kd", low), low.student_logits)
    assert grad.dtype == torch.bfloat16


# ------------------------------------------------------------------------------- hidden losses
def test_mse_is_zero_for_identical_states_and_matches_hand_value():
    inputs = make_inputs()
    inputs.teacher_hidden = [h.detach().clone() for h in inputs.student_hidden]
    assert value("mse", inputs).item() == 0.0
    inputs = make_inputs()
    m = inputs.mask
    expected = torch.stack([((s - t)[m] ** 2).mean() for s, t in zip(inputs.student_hidden, inputs.teacher_hidden,
                                                                       strict=True)]).mean()
    assert value("mse", inputs).item() == pytest.approx(expected.item(), rel=1e-5)


def test_normalized_mse_ignores_per_dimension_scale():
    """Scaling one dimension of both models by 1000 (GPT-2's outlier dims) changes raw MSE, not normalized."""
    base = make_inputs(opts=dict(mse_normalize=True))
    scaled = make_inputs(opts=dict(mse_normalize=True))
    scale = torch.ones(D)
    scale[3] = 1000.0
    scaled.student_hidden = [h * scale for h in scaled.student_hidden]
    scaled.teacher_hidden = [h * scale for h in scaled.teacher_hidden]
    assert value("mse", scaled).item() == pytest.approx(value("mse", base).item(), rel=1e-3)
    scaled.opts = base.opts = {"mse_normalize": False}
    assert value("mse", scaled).item() > 100 * value("mse", base).item()


def test_cosine_loss_is_zero_for_parallel_vectors():
    inputs = make_inputs()
    inputs.teacher_hidden = [3.0 * h.detach() for h in inputs.student_hidden]
    assert value("cos", inputs).item() == pytest.approx(0.0, abs=1e-6)
    inputs.teacher_hidden = [-h.detach() for h in inputs.student_hidden]
    assert value("cos", inputs).item() == pytest.approx(2.0, abs=1e-6)


def test_cos_last_only_uses_the_last_layer():
    inputs = make_inputs(opts=dict(cos_last_only=True, layer_ids=(2, 4, 6)))
    inputs.teacher_hidden = [h.detach() for h in inputs.student_hidden[:-1]] + [inputs.teacher_hidden[-1]]
    total, logs = compute_losses(terms("cos", inputs), inputs)
    assert total.item() > 0.1 and set(logs) == {"cos", "cos/layer6"}


def test_sliced_wasserstein_grows_with_the_shift():
    values = []
    for shift in [0.0, 0.5, 1.0, 2.0, 4.0]:
        inputs = make_inputs()
        inputs.teacher_hidden = [h.detach() + shift for h in inputs.student_hidden]
        values.append(value("swd", inputs).item())
    assert values[0] == pytest.approx(0.0, abs=1e-6)
    assert all(a < b for a, b in zip(values, values[1:], strict=False))
    # A translation moves every sorted projection by c * <u, 1>: SW_1 is exactly linear in the shift.
    assert values[-1] / values[-2] == pytest.approx(2.0, rel=1e-5)


def test_swd_is_repeatable_per_step_and_fresh_across_steps():
    a, b, c = make_inputs(), make_inputs(), make_inputs()
    c.step = 1
    assert value("swd", a).item() == value("swd", b).item()
    assert value("swd", a).item() != value("swd", c).item()
    w2 = make_inputs(opts=dict(swd_p=2, swd_max_samples=7))  # subsampled path
    assert value("swd", w2).item() > 0


# ------------------------------------------------------------------------------- the combination
def _critics() -> CriticTrainer:
    return CriticTrainer(num_layers=L, dim=D, hidden=16, n_critic=2, seed=0)


@pytest.mark.parametrize("name", HIDDEN_LOSSES)
def test_every_matched_layer_reaches_the_total(name):
    inputs = make_inputs(critic=_critics() if name == "wd" else None)
    if name == "wd":
        inputs.critic.update(inputs.teacher_hidden, inputs.student_hidden, inputs.mask)
    total, logs = compute_losses(terms(f"{name}+lm", inputs, "0.5,1"), inputs)
    grads = torch.autograd.grad(total, inputs.student_hidden)
    for layer, g in enumerate(grads):
        assert g[inputs.mask].abs().sum() > 0, f"layer {layer} gets no gradient from {name}"
        assert g[~inputs.mask].abs().sum() == 0, f"padded positions of layer {layer} get gradient"
    assert {f"{name}/layer{i}" for i in range(1, L + 1)} <= set(logs)


@pytest.mark.parametrize("name", LOGIT_LOSSES + HIDDEN_LOSSES + ["kd-top"])
def test_padded_positions_change_nothing(name):
    options = {"kd_topk": 4} if name == "kd-top" else {}
    name = name.removesuffix("-top")
    results = []
    for garbage in (0.0, 1.0):
        critics = _critics() if name == "wd" else None
        inputs = make_inputs(opts=options, critic=critics)
        g = _gen(100 + int(garbage))
        pad_tok, pad_pos = inputs.labels == -100, ~inputs.mask
        with torch.no_grad():
            inputs.student_logits[pad_tok] = 50 * torch.randn(int(pad_tok.sum()), V, generator=g) * garbage
            inputs.teacher_logits[pad_tok] = 50 * torch.randn(int(pad_tok.sum()), V, generator=g) * garbage
            for h in inputs.student_hidden + inputs.teacher_hidden:
                h[pad_pos] = 1e3 * torch.randn(int(pad_pos.sum()), D, generator=g) * garbage
        if critics is not None:
            critics.update(inputs.teacher_hidden, inputs.student_hidden, inputs.mask)
        total, _ = compute_losses(terms(name, inputs), inputs)
        grads = torch.autograd.grad(total, [inputs.student_logits, *inputs.student_hidden], allow_unused=True)
        results.append((total.detach(), [gr[inputs.mask] if gr is not None else None for gr in grads]))
    (v0, g0), (v1, g1) = results
    assert v0.item() == pytest.approx(v1.item(), rel=1e-6, abs=1e-7)
    for a, b in zip(g0, g1, strict=True):
        if a is not None:
            torch.testing.assert_close(a, b)


def test_compute_losses_weights_and_logs():
    inputs = make_inputs()
    total, logs = compute_losses(terms("kd+lm+mse", inputs, "0.4,0.6,0"), inputs)
    assert total.item() == pytest.approx(0.4 * logs["kd"].item() + 0.6 * logs["lm"].item(), rel=1e-6)
    assert "mse" in logs and "mse/layer1" in logs  # a zero-weight term is logged, not added
    assert not any(v.requires_grad for v in logs.values())


def test_wd_parts_include_critic_estimates_and_student_terms():
    critics = _critics()
    inputs = make_inputs(critic=critics, opts=dict(layer_ids=(2, 4, 6)))
    critics.update(inputs.teacher_hidden, inputs.student_hidden, inputs.mask)
    total, logs = compute_losses(terms("wd", inputs), inputs)
    assert {"wd/layer2", "wd/layer4", "wd/layer6", "wd/student_layer2", "wd/student_layer6"} <= set(logs)
    per_layer = sum(logs[f"wd/student_layer{i}"] for i in (2, 4, 6))
    assert total.item() == pytest.approx(per_layer.item() / 3, rel=1e-6)  # the mean over layers, as mse's
    summed, _ = compute_losses(terms("wd[wd_reduce=sum]", inputs), inputs)  # the seed study's sum
    assert summed.item() == pytest.approx(per_layer.item(), rel=1e-6)


def test_non_finite_term_raises_naming_it():
    inputs = make_inputs()
    with torch.no_grad():
        inputs.student_hidden[1][0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError) as err:
        compute_losses(terms("lm+mse", inputs, "1,1"), inputs)
    assert err.value.term == "mse" and "'mse'" in str(err.value) and "\n" not in str(err.value)
    assert "checkpoint" not in str(err.value)  # the loop names the checkpoint to go back to, the registry none
    # Unchecked, the NaN flows out for a caller that checks at log intervals instead.
    total, _ = compute_losses(terms("lm+mse", inputs, "1,1"), inputs, check_finite=False)
    assert torch.isnan(total)


def test_plan_follows_the_specs():
    r = LossPlan.from_terms(parse_losses("mse+lm"))
    assert (r.needs_teacher, r.needs_teacher_logits, r.needs_hidden, r.needs_critic) == (True, False, True, False)
    r = LossPlan.from_terms(parse_losses("lm"))
    assert not r.needs_teacher and not r.needs_hidden
    r = LossPlan.from_terms(parse_losses("wd+kd"))
    assert r.needs_teacher_logits and r.needs_critic


# ------------------------------------------------------------------------------- parsing
def test_parse_losses_and_presets():
    parsed = parse_losses("wd+kd+lm", "0.3,0.4,0.3")
    assert [(t.name, t.weight) for t in parsed] == [("wd", 0.3), ("kd", 0.4), ("lm", 0.3)]
    assert [t.weight for t in parse_losses(" kd + lm ")] == [1.0, 1.0]
    for preset in PRESETS.values():  # every preset's loss and weights parse together
        assert len(parse_losses(preset["loss"], preset["weights"])) == len(preset["weights"].split(","))


def test_each_term_carries_its_own_options():
    flags = {"temperature": 1.5, "kd_topk": 0, "mse_normalize": True}
    kd, rkl, lm = parse_losses("kd[temperature=4,kd_topk=8]+rkl+lm", "1,1,1", defaults=flags)
    assert (kd.options.temperature, kd.options.kd_topk) == (4.0, 8)
    assert rkl.options.temperature == 1.5  # the flag, for a term that does not set its own
    assert dataclasses.fields(lm.options) == ()
    listed = parse_losses([{"name": "kd", "weight": 0.5, "temperature": 2}, {"name": "mse", "weight": 0.25}],
                          defaults=flags)
    assert [(t.name, t.weight) for t in listed] == [("kd", 0.5), ("mse", 0.25)]
    assert listed[0].options.temperature == 2.0 and listed[1].options.mse_normalize is True
    with pytest.raises(LossSpecError, match="has no option 'kd_topk'; its options: temperature"):
        parse_losses("rkl[kd_topk=3]")
    with pytest.raises(LossSpecError, match="drop --weights"):
        parse_losses([{"name": "kd"}], "1")


@pytest.mark.parametrize("spec,weights,fragment", [
    ("wd+foo", None, "unknown loss 'foo'"),
    ("wd+kd", "0.3,0.4,0.3", "3 values for 2 losses"),
    ("wd+kd", "0.3,-0.4", "negative"),
    ("wd+kd", "0.3,x", "comma-separated numbers"),
    ("kd+kd", None, "twice"),
    ("kd++lm", None, "cannot read term"),
    ("kd[temperature]", None, "is not key=value"),
    ("kd[temperature=hot]", None, "is not a float"),
])
def test_parse_errors_are_one_line(spec, weights, fragment):
    with pytest.raises(LossSpecError) as err:
        parse_losses(spec, weights)
    message = str(err.value)
    assert fragment in message and "\n" not in message
    if "unknown" in fragment:
        assert all(name in message for name in REGISTRY)


def test_bad_options_and_missing_inputs_are_one_line_errors():
    with pytest.raises(LossSpecError, match="temperature"):
        REGISTRY["kd"].make_options(temperature=0)
    with pytest.raises(LossSpecError, match="swd_p"):
        REGISTRY["swd"].make_options(swd_p=3)
    inputs = make_inputs()
    inputs.teacher_logits = None
    with pytest.raises(LossSpecError, match="needs student and teacher logits"):
        compute_losses(terms("kd", inputs), inputs)
    with pytest.raises(LossSpecError, match="needs critics"):
        compute_losses(parse_losses("wd"), make_inputs())
