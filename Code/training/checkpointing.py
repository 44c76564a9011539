"""Every checkpoint write of a run, in one place, each atomic.

Two kinds of checkpoint:
- training state (`checkpoints/step<N>/`): the DeepSpeed engine (student, optimizer, scheduler) plus,
  per rank, what DeepSpeed does not hold (critics, data position, every RNG: torch CPU and CUDA, Python,
  numpy). After every rank has finished, the main rank writes the folder's manifest (sha256 per file,
  Code.run_folder), then `latest`. Resume takes the newest checkpoint whose files match their digests,
  naming each one it skips, so a run killed mid-save or a damaged file resumes from the previous whole step.
- a Hugging Face folder (`best/`, `final/`): `save_pretrained` student, tokenizer and `distill_info.json`,
  written to a temp folder and swapped in whole.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any, NamedTuple

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from Code.modeling.export import write_context_length
from Code.run_folder import (
    DISTILL_INFO,
    CheckpointError,
    choose_checkpoint,
    cut_metrics,
    finish_checkpoint,
    load_tensors,
    write_manifest,
)
from Code.training.rng_state import restore_rng
from Code.utils import atomic_torch_save, atomic_write_json, barrier, is_main, print0, rank, replace_dir


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
    write_context_length(tmp)  # pipeline("text-generation") defaults stay inside the student's positions
    atomic_write_json(tmp / DISTILL_INFO, info)
    write_manifest(tmp)  # last: evaluate_.py verifies the folder against it
    replace_dir(tmp, final_dir)


def save_training_state(engine: Any, ckpt_root: str | Path, step: int, client_state: dict[str, Any],
                        rank_state: dict[str, Any], keep: int) -> None:
    """Every rank writes its files; then the main rank the manifest (digests), `latest`, and the pruning."""
    ckpt_root = Path(ckpt_root)
    tag = f"step{step}"
    engine.save_checkpoint(str(ckpt_root), tag=tag, client_state=client_state, save_latest=False)
    atomic_torch_save(rank_state, ckpt_root / tag / f"rank{rank()}_state.pt")
    barrier()
    if is_main():
        finish_checkpoint(ckpt_root, tag, keep)
    barrier()


def _agreed_tag(ckpt_root: Path) -> str | None:
    """The main rank verifies the checkpoints (one hash of each file) and tells the others which to use."""
    import torch.distributed as dist

    choice: list[Any] = [None]
    if is_main():
        try:
            choice[0] = choose_checkpoint(ckpt_root, say=print0)
        except CheckpointError as exc:
            choice[0] = exc
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast_object_list(choice, src=0)
    if isinstance(choice[0], BaseException):
        raise CheckpointError(str(choice[0]))
    return choice[0]


def load_training_state(engine: Any, ckpt_root: str | Path) -> tuple[str, dict[str, Any], dict[str, Any]] | None:
    """Restore the newest whole checkpoint into `engine`: (tag, client state, this rank's state); None when the
    run has no checkpoint at all."""
    tag = _agreed_tag(Path(ckpt_root))
    if tag is None:
        return None
    rank_file = Path(ckpt_root) / tag / f"rank{rank()}_state.pt"
    if not rank_file.is_file():
        raise FileNotFoundError(
            f"checkpoint {tag} in {ckpt_root} has no {rank_file.name}: resume with the same number of "
            "ranks it was saved with, or start over with --overwrite")
    _, client_state = engine.load_checkpoint(str(ckpt_root), tag=tag)
    rank_state = load_tensors(rank_file)
    return tag, client_state or {}, rank_state


class Resumed(NamedTuple):
    step: int                # optimizer steps done
    best: float              # best selection score so far
    train_time_s: float      # training time of the earlier stretches of the run


def resume_training(engine: Any, ckpt_root: str | Path, total_steps: int,
                    step_state: Any | None = None) -> Resumed:
    """`--resume`: restore engine, RNG and the step's own state (critics) from the newest whole checkpoint,
    and cut metrics.jsonl back to its step (the steps after it are trained and logged again).

    `step_state.load_state_dict` gets this rank's saved state (the keys the step's `state_dict` wrote
    beside the generators' states, `Code.training.rng_state`).
    """
    restored = load_training_state(engine, ckpt_root)
    if restored is None:
        print0(f"no checkpoint in {ckpt_root}: starting from step 0")
        if is_main():
            cut_metrics(Path(ckpt_root).parent, 0)  # what a run killed before its first save had logged
        barrier()
        return Resumed(0, math.inf, 0.0)
    tag, client, state = restored
    restore_rng(state)
    if step_state is not None:
        step_state.load_state_dict(state)
    step = int(client["step"])
    if is_main():
        dropped = cut_metrics(Path(ckpt_root).parent, step)
        if dropped:
            print0(f"metrics.jsonl: {dropped} record(s) after step {step} dropped (they are logged again)")
    barrier()
    print0(f"resumed from step {step} of {total_steps} ({Path(ckpt_root) / tag}, digests verified)")
    return Resumed(step, float(client.get("best_val", math.inf)), float(client.get("train_time_s", 0.0)))
