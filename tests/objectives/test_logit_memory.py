"""The chunked logit terms (`Code/objectives/logit.py`) against plain full-softmax autograd: values and
gradients on small random inputs, fp32 and bf16, masked rows, chunk sizes that do not divide the rows;
and a small run of the memory bench (`bench/logit_memory.py`)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from Code.objectives import logit as ll
from Code.objectives import topk_kd as tk
from Code.objectives.masking import label_mask, masked_mean

REPO = Path(__file__).resolve().parents[2]
N, V = 37, 50  # 37 rows: no chunk size used below divides it


def plain(kind: str, s: torch.Tensor, t: torch.Tensor, temperature: float, c: float) -> torch.Tensor:
    """The textbook forms, written here independently of logit.py, in float64."""
    logq = F.log_softmax(s.double() / temperature, -1)
    logp = F.log_softmax(t.double() / temperature, -1)
    p, q = logp.exp(), logq.exp()
    if kind == "kd":
        return (p * (logp - logq)).sum(-1)
    if kind == "rkl":
        return (q * (logq - logp)).sum(-1)
    if kind == "jsd":
        m = c * p + (1 - c) * q
        return c * (p * (logp - m.log())).sum(-1) + (1 - c) * (q * (logq - m.log())).sum(-1)
    if kind == "skl":
        return (p * (logp - (c * p + (1 - c) * q).log())).sum(-1)
    assert kind == "tvd"
    return 0.5 * (p - q).abs().sum(-1)


def chunked(kind: str, s: torch.Tensor, t: torch.Tensor, temperature: float, c: float) -> torch.Tensor:
    return {"kd": lambda: ll.forward_kl_rows(s, t, temperature),
            "rkl": lambda: ll.reverse_kl_rows(s, t, temperature),
            "jsd": lambda: ll.jsd_rows(s, t, temperature, c),
            "skl": lambda: ll.skew_kl_rows(s, t, temperature, c),
            "tvd": lambda: ll.tvd_rows(s, t, temperature)}[kind]()


CASES = [("kd", 0.0), ("rkl", 0.0), ("jsd", 0.5), ("jsd", 0.2), ("skl", 0.1), ("skl", 0.0), ("skl", 0.7),
         ("tvd", 0.0)]


def make(dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(N, V, generator=g) * 3).to(dtype)
    t = (torch.randn(N, V, generator=g) * 3).to(dtype)
    labels = torch.randint(0, V, (N,), generator=g)
    masked = torch.zeros(N, dtype=torch.bool)
    masked[[0, 5, 17, 36]] = True
    labels[masked] = -100
    with torch.no_grad():  # garbage in masked rows must not reach anything
        s[masked] = (torch.randn(int(masked.sum()), V, generator=g) * 50).to(dtype)
        t[masked] = (torch.randn(int(masked.sum()), V, generator=g) * 50).to(dtype)
    return s, t, labels, masked


@pytest.fixture(params=["elements", "fraction"])
def chunking(request, monkeypatch):
    """`elements`: 4 rows per chunk by the element budget; `fraction`: 5 rows (ceil(37 / MIN_CHUNKS))."""
    if request.param == "elements":
        monkeypatch.setattr(ll, "CHUNK_ELEMENTS", 4 * V)
        assert ll._chunk_rows(N, V) == 4
    else:
        assert ll._chunk_rows(N, V) == math.ceil(N / ll.MIN_CHUNKS) == 5
    return request.param


@pytest.mark.parametrize("kind,c", CASES)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_terms_equal_plain_autograd(chunking, kind, c, temperature, dtype):
    s, t, labels, masked = make(dtype)
    s.requires_grad_()
    got = chunked(kind, s, t, temperature, c)
    assert got.dtype == torch.float32 and got.shape == (N,)
    loss = masked_mean(got, label_mask(labels))
    (grad,) = torch.autograd.grad(loss, s)
    assert grad.dtype == dtype

    s64 = s.detach().double().requires_grad_()
    want = plain(kind, s64, t, temperature, c)
    (grad64,) = torch.autograd.grad(masked_mean(want, label_mask(labels)), s64)

    keep = ~masked
    torch.testing.assert_close(got[keep].double(), want[keep].detach(), rtol=1e-5, atol=2e-6)
    tol = {"rtol": 1e-4, "atol": 2e-7} if dtype == torch.float32 else {"rtol": 1e-2, "atol": 1e-5}
    torch.testing.assert_close(grad[keep].double(), grad64[keep], **tol)
    assert torch.all(grad[masked] == 0)


@pytest.mark.parametrize("kind,c", CASES)
def test_bf16_input_equals_fp32_of_the_same_values(kind, c):
    """bf16 logits are computed in fp32: the same values as the fp32 copy of the bf16 numbers."""
    s, t, labels, _ = make(torch.bfloat16, seed=3)
    low = s.clone().requires_grad_()
    high = s.float().requires_grad_()
    v_low = masked_mean(chunked(kind, low, t, 2.0, c), label_mask(labels))
    v_high = masked_mean(chunked(kind, high, t.float(), 2.0, c), label_mask(labels))
    assert v_low.item() == pytest.approx(v_high.item(), rel=1e-6, abs=1e-7)
    (g_low,) = torch.autograd.grad(v_low, low)
    (g_high,) = torch.autograd.grad(v_high, high)
    assert g_low.dtype == torch.bfloat16
    torch.testing.assert_close(g_low, g_high.bfloat16())  # the fp32 gradient, rounded once


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cross_entropy_equals_torch(chunking, dtype):
    s, _, labels, masked = make(dtype, seed=1)
    s.requires_grad_()
    got = masked_mean(ll.cross_entropy_rows(s, labels), label_mask(labels))
    (grad,) = torch.autograd.grad(got, s)
    s32 = s.detach().float().requires_grad_()
    want = F.cross_entropy(s32, labels, ignore_index=-100)
    (grad32,) = torch.autograd.grad(want, s32)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    assert grad.dtype == dtype
    torch.testing.assert_close(grad, grad32.to(dtype))
    assert torch.all(grad[masked] == 0)


def test_topk_with_k_equal_vocab_is_forward_kl(chunking):
    s, t, labels, _ = make(torch.float32, seed=2)
    a, b = s.clone().requires_grad_(), s.clone().requires_grad_()
    v_top = masked_mean(tk.topk_kl_rows(a, tk.topk_targets(t, V, 2.0)), label_mask(labels))
    v_full = masked_mean(ll.forward_kl_rows(b, t, 2.0), label_mask(labels))
    assert v_top.item() == pytest.approx(v_full.item(), rel=1e-5)
    torch.testing.assert_close(torch.autograd.grad(v_top, a)[0], torch.autograd.grad(v_full, b)[0],
                               rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("kind,c", [("kd", 0.0), ("jsd", 0.5), ("tvd", 0.0)])
def test_teacher_with_grad_falls_back_to_autograd_on_both_sides(chunking, kind, c):
    s, t, labels, _ = make(torch.float32, seed=4)
    s, t = s.requires_grad_(), t.requires_grad_()
    got = masked_mean(chunked(kind, s, t, 2.0, c), label_mask(labels))
    gs, gt = torch.autograd.grad(got, [s, t])
    s64, t64 = s.detach().double().requires_grad_(), t.detach().double().requires_grad_()
    want = masked_mean(plain(kind, s64, t64, 2.0, c), label_mask(labels))
    ws, wt = torch.autograd.grad(want, [s64, t64])
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    torch.testing.assert_close(gs.double(), ws, rtol=1e-4, atol=1e-8)
    torch.testing.assert_close(gt.double(), wt, rtol=1e-4, atol=1e-8)


def test_library_plain_rows_match_the_independent_forms():
    s, t, _, _ = make(torch.float32, seed=5)
    for kind, c in CASES:
        lib_kind = "fkl" if kind == "kd" or (kind == "skl" and c == 0) else kind
        torch.testing.assert_close(ll.plain_rows(lib_kind, s, t, 0.5, c).double(), plain(kind, s, t, 2.0, c),
                                   rtol=1e-5, atol=2e-6)


def test_chunk_rows_bounds():
    assert ll._chunk_rows(1, 50257) == 1
    assert ll._chunk_rows(2048, 50257) == 256                         # 1/8 of the rows
    assert ll._chunk_rows(16384, 50257) == ll.CHUNK_ELEMENTS // 50257  # the element budget
    spans = list(ll._spans(37, 50))
    assert spans[0] == (0, 5) and spans[-1] == (35, 37) and sum(j - i for i, j in spans) == 37


@pytest.mark.integration
def test_memory_bench_small_run(tmp_path):
    """The bench end to end at a small size: fresh subprocesses, a peak per case, ratios to ce."""
    out = tmp_path / "mem.json"
    proc = subprocess.run([sys.executable, "bench/logit_memory.py", "--vocab", "4096", "--tokens", "256",
                           "--terms", "kd,jsd", "--no-plain", "--threads", "1", "--json-out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(out.read_text())
    assert set(summary["ratio_to_ce"]) == {"ce", "kd", "jsd"}
    assert summary["peak_bytes"]["ce"] > 0.5 * 256 * 4096 * 4  # at least (most of) the gradient
    assert summary["max_ratio"] <= 1.5 and summary["ok"]
    assert "| kd |" in proc.stdout and "ratio to ce" in proc.stdout


def test_memory_bench_rejects_unknown_terms():
    proc = subprocess.run([sys.executable, "bench/logit_memory.py", "--terms", "kd,nope"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "unknown term nope" in proc.stderr
