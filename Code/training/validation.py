"""Validation during training: the student's mean next-token loss on the validation split."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from Code.objectives.masking import label_mask
from Code.training.setup import as_batch


@torch.no_grad()
def evaluate_lm(engine, loader: DataLoader, iters: int, device: torch.device) -> float:
    """Mean next-token cross-entropy of the student on up to `iters` validation batches per rank."""
    engine.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)
    for i, block in enumerate(loader):
        if i >= iters:
            break
        batch = as_batch(block, device)
        logits, _ = engine(batch["input_ids"])
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), batch["labels"].flatten(),
                                                 reduction="sum")
        scored = label_mask(batch["labels"]).sum()  # task prompt: only response targets count
        total += torch.stack([loss.double(), scored.double()])
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(total)
    engine.train()
    return (total[0] / total[1].clamp(min=1)).item()
