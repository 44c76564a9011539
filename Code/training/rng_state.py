"""This rank's random number generators, captured into a checkpoint and put back on resume.

Every generator a training step can draw from is here: torch's CPU generator (dropout on CPU ranks,
sampling), the generator of the CUDA device this rank trains on (dropout on a GPU; `pick_device` made it
current), Python's `random` and numpy's global state. Each rank writes its own (`rank<N>_state.pt`), so a
resumed rank replays the masks it would have drawn uninterrupted.

The values are tensors and plain Python values only: the checkpoint loader (`Code.run_folder.load_tensors`)
refuses any other pickled object, numpy arrays included.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture_rng() -> dict[str, Any]:
    """This process's generator states, under the keys `restore_rng` reads."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
        "python_rng": random.getstate(),
        "numpy_rng": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Put back what `capture_rng` saved. A checkpoint from before a key existed restores the keys it has."""
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda_rng"])  # this rank's device, whichever index it has on this machine
    if state.get("python_rng") is not None:
        version, internal, gauss = state["python_rng"]
        random.setstate((version, tuple(internal), gauss))
    if state.get("numpy_rng") is not None:
        saved = state["numpy_rng"]
        np.random.set_state((saved["kind"], saved["keys"].numpy().astype(np.uint32), saved["pos"],
                             saved["has_gauss"], saved["cached_gaussian"]))
