"""Every checkpoint write of a run, in one place, each atomic.

Two kinds of checkpoint:
- training state (`checkpoints/step<N>/`): the DeepSpeed engine (student, optimizer, scheduler) plus,
  per rank, what DeepSpeed does not hold (critics, data position, RNG). A `latest` file is written last,
  atomically, after every rank has finished, so a run killed mid-save resumes from the previous step.
- a Hugging Face folder (`best/`, `final/`): `save_pretrained` student, tokenizer and `distill_info.json`,
  written to a temp folder and swapped in whole.
"""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from Code.utils import (
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    barrier,
    is_main,
    print0,
    rank,
    replace_dir,
)

LATEST = "latest"


def save_hf_folder(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None, final_dir: Path,
                   info: dict[str, Any]) -> None:
    """Write a folder `from_pretrained` loads; weights in fp32 whatever the training precision."""
    final_dir = Path(final_dir)
    tmp = final_dir.with_name(f".{final_dir.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    state = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    if getattr(model.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)  # tied to wte: storing it again doubles the file
    model.save_pretrained(tmp, state_dict=state)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    atomic_write_json(tmp / "distill_info.json", info)
    replace_dir(tmp, final_dir)


def _tags(ckpt_root: Path) -> list[str]:
    found = [p.name for p in ckpt_root.glob("step*") if re.fullmatch(r"step\d+", p.name)]
    return sorted(found, key=lambda t: int(t[4:]))


def latest_tag(ckpt_root: str | Path) -> str | None:
    marker = Path(ckpt_root) / LATEST
    if not marker.is_file():
        return None
    tag = marker.read_text().strip()
    return tag if (Path(ckpt_root) / tag).is_dir() else None


def save_training_state(engine: Any, ckpt_root: str | Path, step: int, client_state: dict[str, Any],
                        rank_state: dict[str, Any], keep: int) -> None:
    ckpt_root = Path(ckpt_root)
    tag = f"step{step}"
    engine.save_checkpoint(str(ckpt_root), tag=tag, client_state=client_state, save_latest=False)
    atomic_torch_save(rank_state, ckpt_root / tag / f"rank{rank()}_state.pt")
    barrier()
    if is_main():
        atomic_write_text(ckpt_root / LATEST, tag)
        for old in _tags(ckpt_root)[:-keep] if keep > 0 else []:
            shutil.rmtree(ckpt_root / old, ignore_errors=True)
    barrier()


def load_training_state(engine: Any, ckpt_root: str | Path) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Restore the latest whole checkpoint into `engine`; None when there is none."""
    tag = latest_tag(ckpt_root)
    if tag is None:
        return None
    rank_file = Path(ckpt_root) / tag / f"rank{rank()}_state.pt"
    if not rank_file.is_file():
        raise FileNotFoundError(
            f"checkpoint {tag} in {ckpt_root} has no {rank_file.name}: resume with the same number of "
            "ranks it was saved with, or start over with --overwrite")
    _, client_state = engine.load_checkpoint(str(ckpt_root), tag=tag)
    rank_state = torch.load(rank_file, weights_only=False)
    return client_state or {}, rank_state


def resume_training(engine: Any, ckpt_root: str | Path, total_steps: int,
                    step_state: Any | None = None) -> tuple[int, float]:
    """`--resume`: restore engine, RNG and the step's own state (critics) from the latest checkpoint.

    Returns (steps done, best validation score). `step_state.load_state_dict` gets this rank's saved
    state (the keys the step's `state_dict` wrote beside `torch_rng`).
    """
    restored = load_training_state(engine, ckpt_root)
    if restored is None:
        print0(f"no checkpoint in {ckpt_root}: starting from step 0")
        return 0, math.inf
    client, state = restored
    torch.set_rng_state(state["torch_rng"])
    if step_state is not None:
        step_state.load_state_dict(state)
    step = int(client["step"])
    print0(f"resumed from step {step} of {total_steps}")
    return step, float(client.get("best_val", math.inf))
