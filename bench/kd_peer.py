"""bench/kd_step.py's peer: the same MSE distillation as a typical Hugging Face `Trainer` with a custom
`compute_loss` (what the `mse` case is compared with)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from kd_flops import CLOCK, sync
from kd_setup import Setup


# ------------------------------------------------------------------------------------------------ peer
def make_peer(setup: Setup, out_dir: str) -> Any:
    """A typical user's MSE distillation with the Hugging Face Trainer (what `mse` is compared with)."""
    from torch.utils.data import Dataset
    from transformers import Trainer, TrainerCallback, TrainingArguments

    class Blocks(Dataset):
        def __init__(self, blocks) -> None:
            self.blocks = blocks

        def __len__(self) -> int:
            return len(self.blocks)

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            ids = self.blocks[i][:-1]
            return {"input_ids": ids, "labels": ids.clone()}  # the model shifts labels itself

    pairs = setup.layer_map
    teacher = setup.peer_teacher

    class DistillTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = model(**inputs, output_hidden_states=True)
            with torch.no_grad():
                t_out = teacher(input_ids=inputs["input_ids"], output_hidden_states=True)
            mse = sum(F.mse_loss(out.hidden_states[s], t_out.hidden_states[t]) for s, t in pairs) / len(pairs)
            loss = out.loss + mse
            return (loss, out) if return_outputs else loss

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            sync(setup.device)
            self.ends.append(CLOCK[0]())

    on_gpu = setup.device.type == "cuda"
    targs = TrainingArguments(output_dir=out_dir, per_device_train_batch_size=setup.opts.batch, max_steps=2,
                              learning_rate=setup.cfg.optim.lr, warmup_steps=0, logging_strategy="no",
                              save_strategy="no", report_to=[], disable_tqdm=True, use_cpu=not on_gpu,
                              bf16=setup.opts.precision == "bf16", seed=setup.cfg.seed,
                              # this process holds a one-rank process group (ours needs it), so Trainer
                              # wraps the peer in DDP; spare it the unused-parameter search a plain
                              # single-GPU script would not pay
                              ddp_find_unused_parameters=False)
    clock = StepClock()
    trainer = DistillTrainer(model=setup.peer_student, args=targs, train_dataset=Blocks(setup.blocks),
                             callbacks=[clock])
    return trainer, clock


def peer_steps(trainer: Any, clock: Any, steps: int) -> list[float]:
    """One `train()` call of 1 + steps steps; per-step times after the first (setup stays out)."""
    clock.ends = []
    trainer.args.max_steps = 1 + steps
    trainer.train()
    return [b - a for a, b in zip(clock.ends[:-1], clock.ends[1:], strict=True)]
