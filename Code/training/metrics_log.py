"""Where the numbers of a run go: metrics.jsonl (its name and line format: Code.run_folder), and TensorBoard."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from Code.run_folder import METRICS, TENSORBOARD, metrics_line, read_metrics

__all__ = ["MetricsLog", "mean_over_ranks", "read_metrics"]


class MetricsLog:
    """Append-only; only the main rank should own one. A resumed run appends after the old lines, which
    the resume cut back to the checkpoint's step (Code.run_folder.cut_metrics)."""

    def __init__(self, run_dir: str | Path, tensorboard: bool = True) -> None:
        self.path = Path(run_dir) / METRICS
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.path.open("a")
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(Path(run_dir) / TENSORBOARD))
            except ImportError:  # tensorboard is optional; the JSON lines hold everything
                self._tb = None

    def write(self, record: dict[str, Any]) -> None:
        self._handle.write(metrics_line(record))
        self._handle.flush()
        if self._tb is not None:
            step = int(record.get("step", 0))
            for key, value in record.items():
                if key != "step" and isinstance(value, int | float) and math.isfinite(value):
                    self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        self._handle.close()
        if self._tb is not None:
            self._tb.close()


def mean_over_ranks(values: dict[str, Any], count: int) -> dict[str, float]:
    """Average accumulated tensors over `count` micro-batches and across ranks.

    One stacked tensor and one all-reduce, so one host sync per log interval for the logged values.
    """
    import torch
    import torch.distributed as dist

    if not values:
        return {}
    keys = sorted(values)
    stacked = torch.stack([values[k].float() for k in keys]) / max(count, 1)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(stacked)
        stacked /= dist.get_world_size()
    return dict(zip(keys, stacked.tolist(), strict=True))
