"""What a model costs: parameters, size on disk, forward throughput and latency (same batch, same device)."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import Tensor, nn

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def count_parameters(model: nn.Module) -> int:
    """Distinct parameters (a tied lm_head/wte pair counts once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():  # parameters() already de-duplicates shared tensors; ptrs guard views
        if p.data_ptr() in seen:
            continue
        seen.add(p.data_ptr())
        total += p.numel()
    return total


def size_on_disk(folder: str | Path | None) -> int | None:
    """Bytes of weight files in a save_pretrained folder; None when there is no such local folder."""
    if folder is None or not Path(folder).is_dir():
        return None
    return sum(f.stat().st_size for f in Path(folder).iterdir() if f.is_file() and f.name.endswith(WEIGHT_SUFFIXES))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def time_forward(
    model: nn.Module, batch: Tensor, warmup: int = 2, iters: int = 5, device: torch.device | str = "cpu"
) -> dict[str, float]:
    """Median forward latency (ms) and tokens/s on `batch` (B, T), after `warmup` untimed passes."""
    device = torch.device(device)
    model.eval()
    batch = batch.to(device)
    for _ in range(warmup):
        model(batch)
    _sync(device)
    times = []
    for _ in range(max(1, iters)):
        start = time.perf_counter()
        model(batch)
        _sync(device)
        times.append(time.perf_counter() - start)
    times.sort()
    median = times[len(times) // 2]
    return {
        "latency_ms": 1000.0 * median,
        "tokens_per_s": batch.numel() / median,
        "batch_size": int(batch.shape[0]),
        "seq_len": int(batch.shape[1]),
        "iters": len(times),
    }


def model_cost(
    model: nn.Module, folder: str | Path | None, batch: Tensor, device: torch.device | str, warmup: int = 2,
    iters: int = 5,
) -> dict[str, float | int | None]:
    """Parameters, on-disk bytes and forward timing of one model, as one flat dict for metrics.json."""
    dtype = next(model.parameters()).dtype
    return {
        "params": count_parameters(model),
        "size_bytes": size_on_disk(folder),
        "dtype": str(dtype).replace("torch.", ""),
        **time_forward(model, batch, warmup=warmup, iters=iters, device=device),
    }
