"""Where the numbers of a run go: one JSON object per line in metrics.jsonl, and TensorBoard."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


class MetricsLog:
    """Append-only; only the main rank should own one. A resumed run appends after the old lines."""

    def __init__(self, run_dir: str | Path, tensorboard: bool = True) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.path.open("a")
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
            except ImportError:  # tensorboard is optional; the JSON lines hold everything
                self._tb = None

    def write(self, record: dict[str, Any]) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        self._handle.write(json.dumps(clean, sort_keys=True) + "\n")
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


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The run's records, the last one written for each (kind, step) winning (a resumed run rewrites a
    few steps it had logged before it was killed)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    by_key: dict[tuple[str, int], dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill
            continue
        by_key[(rec.get("kind", "train"), int(rec.get("step", 0)))] = rec
    return [by_key[k] for k in sorted(by_key, key=lambda k: (k[1], k[0]))]


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
