"""bench/kd_step.py's FLOP accounting: model FLOPs per token (nanoGPT's MFU), the device's peak, the step clock."""

from __future__ import annotations

import platform
import time

import torch

# Dense BF16 peak (no sparsity) per GPU, TFLOP/s, from the vendors' data sheets (SXM parts).
GPU_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 70.0, "4090": 165.0}


# ---------------------------------------------------------------------------------------------- FLOPs
def flops_per_token(n_params: int, n_layer: int, n_head: int, head_dim: int, seq_len: int,
                    training: bool) -> float:
    """Model FLOPs per token, nanoGPT's `estimate_mfu` (Chinchilla/PaLM appendix B accounting).

    Trained token: 6N + 12·L·H·Q·T (forward 2N + 4LHQT, backward twice that); a no-grad (teacher)
    token: 2N + 4·L·H·Q·T. N counts the matmul weights that run (position embeddings excluded; token
    embeddings only when they serve as the lm_head), L layers, H heads, Q head dim, T sequence length.
    """
    attention = 4 * n_layer * n_head * head_dim * seq_len
    return (6 * n_params + 3 * attention) if training else (2 * n_params + attention)


def matmul_params(model: torch.nn.Module, with_lm_head: bool) -> int:
    """Parameters that are matmul weights in a forward: all but wpe, and wte only when it is the lm_head."""
    gpt = model.transformer if hasattr(model, "transformer") else model.student.transformer
    total = sum(p.numel() for p in model.parameters())
    total -= gpt.wpe.weight.numel()
    if not with_lm_head:
        total -= gpt.wte.weight.numel()
    return total


def device_peak(device: torch.device, dtype: torch.dtype) -> tuple[float | None, str]:
    """(peak FLOP/s, its source) from the table for known GPUs; None means: measure a large matmul."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tflops in GPU_PEAK_TFLOPS.items():
            if key in name and dtype == torch.bfloat16:
                return tflops * 1e12, f"{name}: {tflops:g} TFLOP/s BF16 dense (data sheet)"
    return None, "large matmul measured in this run"


def matmul_flops(device: torch.device, dtype: torch.dtype, n: int, reps: int = 3) -> float:
    """FLOP/s of an n x n x n matmul in the models' compute dtype: the CPU's achievable peak."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    times = []
    for _ in range(reps):
        sync(device)
        t0 = CLOCK[0]()
        a @ b
        sync(device)
        times.append(CLOCK[0]() - t0)
    return 2 * n**3 / min(times)


# The step clock (--clock): wall time, or this process's CPU time (all its threads), which on an
# oversubscribed machine measures the work done rather than the wait for a free core.
CLOCK = [time.perf_counter]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
