"""The GPU code paths on CPU with bf16 tensors at tiny sizes: bf16 hidden states into the fp32 critics,
bf16 logits into every logit loss of the registry, autocast bf16 through the DDP engine, the fused-optimizer
choice for CPU and CUDA, and the device placement of critics and projections."""

import types
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from Code.critic import CriticTrainer
from Code.modeling.student import DistillStudent, HiddenProjections
from Code.objectives import logit as ll
from Code.objectives import topk_kd as tk
from Code.objectives.masking import label_mask, masked_mean
from Code.objectives.parsing import parse_losses
from Code.objectives.registry import REGISTRY, LossInputs, compute_losses
from Code.training import engines

B, T, V, D, L = 2, 5, 33, 8, 3
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
LOGIT_TERMS = sorted(name for name, spec in REGISTRY.items() if spec.needs_logits)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _mask() -> torch.Tensor:
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[0, 3:] = False
    return mask


# ------------------------------------------------------------------------------- critics
def _feats(dtype: torch.dtype, seed: int, shift: float = 0.0, grad: bool = False) -> list[torch.Tensor]:
    g = _gen(seed)
    return [(torch.randn(B, T, D, generator=g) + shift).to(dtype).requires_grad_(grad) for _ in range(L)]


def test_bf16_features_into_fp32_critics_update_and_student_loss():
    mask = _mask()
    critics = CriticTrainer(num_layers=L, dim=D, hidden=16, n_critic=3, seed=0)
    teacher = _feats(torch.bfloat16, 1, shift=1.0)
    student = _feats(torch.bfloat16, 2, grad=True)
    est = critics.update(teacher, [s.detach() for s in student], mask)
    assert est.dtype == torch.float32 and est.shape == (L,) and torch.isfinite(est).all()
    assert all(p.dtype == torch.float32 for p in critics.critic.parameters())

    grads_before = [p.grad.clone() for p in critics.critic.parameters()]  # left by the critics' last step
    per_layer = critics.student_loss(student, mask)
    assert per_layer.dtype == torch.float32 and torch.isfinite(per_layer).all()
    grads = torch.autograd.grad(per_layer.sum(), student)
    for g in grads:
        assert g.dtype == torch.bfloat16
        assert g[mask].abs().sum() > 0 and g[~mask].abs().sum() == 0
    for p, before in zip(critics.critic.parameters(), grads_before, strict=True):
        assert torch.equal(p.grad, before)  # only the features get gradient from the student's term

    # The same numbers in fp32 give the same estimates to bf16 rounding of the inputs (same critic).
    fp32 = CriticTrainer(num_layers=L, dim=D, hidden=16, n_critic=3, seed=0)
    est32 = fp32.update([t.float() for t in teacher], [s.detach().float() for s in student], mask)
    torch.testing.assert_close(est, est32, rtol=1e-4, atol=1e-5)


def test_bf16_features_under_autocast_still_train_fp32_critics():
    mask = _mask()
    critics = CriticTrainer(num_layers=L, dim=D, hidden=16, n_critic=2, seed=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        est = critics.update(_feats(torch.bfloat16, 1, 1.0), _feats(torch.bfloat16, 2), mask)
        loss = critics.student_loss(_feats(torch.bfloat16, 3, grad=True), mask)
    assert est.dtype == loss.dtype == torch.float32
    assert torch.isfinite(est).all() and torch.isfinite(loss).all()


# ------------------------------------------------------------------------------- logit losses
def _logit_inputs(dtype: torch.dtype, seed: int = 0) -> LossInputs:
    g = _gen(seed)
    mask = _mask()
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[~mask] = -100
    s = (torch.randn(B, T, V, generator=g) * 2).to(dtype).requires_grad_()
    t = (torch.randn(B, T, V, generator=g) * 2).to(dtype)
    return LossInputs(labels=labels, mask=mask, student_logits=s, teacher_logits=t)


@pytest.mark.parametrize("name", LOGIT_TERMS)
def test_bf16_logits_into_every_logit_loss_of_the_registry(name):
    """bf16 logits give the fp32 result to bf16 tolerance; the value is fp32, the gradient bf16."""
    ref = _logit_inputs(torch.float32)
    low = _logit_inputs(torch.float32)
    low.student_logits = ref.student_logits.detach().bfloat16().requires_grad_()
    low.teacher_logits = ref.teacher_logits.bfloat16()
    v_ref, _ = compute_losses(parse_losses(name), ref)
    v_low, _ = compute_losses(parse_losses(name), low)
    assert v_low.dtype == torch.float32 and torch.isfinite(v_low)
    assert v_low.item() == pytest.approx(v_ref.item(), rel=3e-2, abs=2e-3)
    (g_ref,) = torch.autograd.grad(v_ref, ref.student_logits)
    (g_low,) = torch.autograd.grad(v_low, low.student_logits)
    assert g_low.dtype == torch.bfloat16
    scale = g_ref.abs().max().item()
    torch.testing.assert_close(g_low.float(), g_ref, rtol=5e-2, atol=5e-2 * scale)
    assert g_low[~ref.mask].abs().sum() == 0


@pytest.mark.parametrize("fn", [
    lambda s, t: ll.forward_kl_rows(s, t, 2.0), lambda s, t: ll.reverse_kl_rows(s, t, 2.0),
    lambda s, t: ll.jsd_rows(s, t, 2.0, 0.5), lambda s, t: ll.skew_kl_rows(s, t, 2.0, 0.1),
    lambda s, t: ll.tvd_rows(s, t, 2.0), lambda s, t: tk.topk_kl_rows(s, tk.topk_targets(t, 5, 2.0)),
], ids=["kd", "rkl", "jsd", "skl", "tvd", "kd-topk"])
def test_bf16_logits_at_temperature_two(fn):
    g = _gen(5)
    s32 = torch.randn(B * T, V, generator=g) * 3
    t32 = torch.randn(B * T, V, generator=g) * 3
    labels = torch.randint(0, V, (B * T,), generator=g)
    s16 = s32.bfloat16().requires_grad_()
    v16 = masked_mean(fn(s16, t32.bfloat16()), label_mask(labels))
    s32.requires_grad_()
    v32 = masked_mean(fn(s32, t32), label_mask(labels))
    assert v16.dtype == torch.float32 and v16.item() == pytest.approx(v32.item(), rel=3e-2, abs=2e-3)
    (g16,) = torch.autograd.grad(v16, s16)
    assert g16.dtype == torch.bfloat16 and torch.isfinite(g16.float()).all()


# ------------------------------------------------------------------------------- the DDP engine
def _optim(precision: str) -> types.SimpleNamespace:
    """The fields the engines read (arguments.py / config.OptimConfig); any object with them works."""
    return types.SimpleNamespace(micro_batch_size=2, grad_accum=1, lr=1e-3, min_lr_ratio=0.1, warmup_steps=1,
                                 weight_decay=0.0, clip_grad=1.0, max_steps=2, epochs=1.0, zero_stage=2,
                                 precision=precision, ds_config=str(Path(engines.__file__).parents[1] /
                                                                    "ds_config_bf16.json"),
                                 launcher="torchrun", compile="off")


def _tiny_student() -> DistillStudent:
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_embd=16, n_head=2, n_positions=16, vocab_size=V)
    return DistillStudent(GPT2LMHeadModel(cfg), [1, 2], teacher_dim=24)


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_ddp_engine_forward_runs_under_autocast_bf16(precision):
    engine = engines.DDPEngine(_tiny_student(), _optim(precision), engines.warmup_cosine(1, 2, 0.1),
                               torch.device("cpu"))
    ids = torch.randint(0, V, (B, T), generator=_gen(1))
    before = [p.detach().clone() for p in engine.module.parameters()]
    logits, hidden = engine(ids, need_hidden=True)
    want = torch.bfloat16 if precision == "bf16" else torch.float32
    assert logits.dtype == want and all(h.dtype == want for h in hidden) and len(hidden) == 2
    assert hidden[0].shape == (B, T, 24)  # the projections into the teacher's width ran under autocast too
    labels = ids.roll(-1, 1)
    inputs = LossInputs(labels=labels, mask=torch.ones(B, T, dtype=torch.bool), student_logits=logits)
    loss, _ = compute_losses(parse_losses("lm"), inputs)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    engine.backward(loss)
    engine.step()
    params = list(engine.module.parameters())
    assert all(p.dtype == torch.float32 for p in params)  # autocast: fp32 master weights, bf16 compute
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, params, strict=True))


def test_autocast_forward_directly_matches_fp32_to_bf16_tolerance():
    model = _tiny_student().eval()
    ids = torch.randint(0, V, (B, T), generator=_gen(2))
    with torch.no_grad():
        ref, _ = model(ids)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low, _ = model(ids)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), ref, rtol=5e-2, atol=5e-2)


# ------------------------------------------------------------------------------- fused optimizers
def test_ddp_engine_uses_torch_fused_adamw_on_cpu():
    engine = engines.DDPEngine(_tiny_student(), _optim("bf16"), engines.warmup_cosine(1, 2, 0.1),
                               torch.device("cpu"))
    assert isinstance(engine.optimizer, torch.optim.AdamW) and engine.optimizer.defaults["fused"] is True


def test_deepspeed_config_optimizer_and_precision_per_device():
    cpu = engines.deepspeed_config(_optim("bf16"), 1, torch.device("cpu"))
    params = cpu["optimizer"]["params"]
    assert params["torch_adam"] is True and params["fused"] is True  # torch's fused CPU AdamW
    assert cpu["bf16"]["enabled"] is True
    assert cpu["zero_optimization"]["stage"] == 0  # one rank: nothing to partition
    gpu = engines.deepspeed_config(_optim("bf16"), 2, torch.device("cuda", 0))  # a device object needs no GPU
    assert gpu["optimizer"]["params"]["torch_adam"] is False  # DeepSpeed's fused CUDA Adam
    assert "fused" not in gpu["optimizer"]["params"]
    assert gpu["zero_optimization"]["stage"] == 2
    assert gpu["train_batch_size"] == 2 * 1 * 2
    assert engines.deepspeed_config(_optim("fp32"), 1, torch.device("cpu"))["bf16"]["enabled"] is False


def test_critic_optimizer_is_fused_only_on_cuda():
    critics = CriticTrainer(num_layers=L, dim=D, hidden=16, seed=0)
    assert not critics.optimizer.defaults.get("fused")
    if torch.cuda.is_available():
        cuda = CriticTrainer(num_layers=L, dim=D, hidden=16, seed=0, device="cuda")
        assert cuda.optimizer.defaults.get("fused") is True


# ------------------------------------------------------------------------------- device placement
@pytest.mark.parametrize("device", DEVICES)
def test_critics_live_on_the_device_they_are_given(device):
    critics = CriticTrainer(num_layers=L, dim=D, hidden=16, n_critic=1, seed=0, device=torch.device(device))
    dev = torch.device(device).type
    assert all(p.device.type == dev for p in critics.critic.parameters())
    assert critics.generator.device.type == dev
    mask = _mask()
    est = critics.update(_feats(torch.bfloat16, 1, 1.0), _feats(torch.bfloat16, 2), mask)  # features on CPU
    assert est.device.type == dev
    assert all(s.device.type == dev for st in critics.optimizer.state.values() for s in st.values()
               if isinstance(s, torch.Tensor) and s.dim() > 0)
    student = [f.to(device) for f in _feats(torch.bfloat16, 3)]
    for f in student:
        f.requires_grad_()
    loss = critics.student_loss(student, mask.to(device))
    assert loss.device.type == dev and loss.dtype == torch.float32
    (g,) = torch.autograd.grad(loss.sum(), student[:1])
    assert g.device.type == dev and g.dtype == torch.bfloat16


@pytest.mark.parametrize("device", DEVICES)
def test_projections_follow_the_student_to_its_device_and_dtype(device):
    proj = HiddenProjections(16, 24, 2).to(device)
    assert all(p.device.type == torch.device(device).type for p in proj.parameters())
    h = [torch.randn(B, T, 16, device=device, dtype=torch.bfloat16) for _ in range(2)]
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
        out = proj(h)
    assert all(o.dtype == torch.bfloat16 and o.shape == (B, T, 24) for o in out)
    model = _tiny_student().to(device)
    assert {p.device.type for p in model.parameters()} == {torch.device(device).type}
    same = HiddenProjections(16, 16, 2)
    assert not same.needed and list(same.parameters()) == []  # identity when the widths agree
