"""Load GPT-2 teachers and students: a local save_pretrained folder, the local HF cache, else the hub.

Models know nothing of data files. One line names what is missing when nothing can be loaded.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import GPT2LMHeadModel

from Code.cli import first_line
from Code.hub import hub_reachable


class ModelLoadError(FileNotFoundError):
    """A teacher/student checkpoint that cannot be found or loaded."""


def _from_pretrained(name_or_path: str | Path, what: str, dtype: torch.dtype) -> GPT2LMHeadModel:
    """Local folder, else the local HF cache, else the hub if it answers quickly; one-line error otherwise."""
    kwargs = {"dtype": dtype, "attn_implementation": "sdpa"}
    path = Path(name_or_path)
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"{what} folder {path} has no config.json; point at a folder written by save_pretrained"
            )
        try:
            return GPT2LMHeadModel.from_pretrained(str(path), **kwargs)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load {what} from {path}: {first_line(exc)}") from exc
    name = str(name_or_path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelLoadError(f"{what} folder {path} not found; pass a folder written by save_pretrained")
    try:  # an earlier online session may have cached it
        return GPT2LMHeadModel.from_pretrained(name, local_files_only=True, **kwargs)
    except (OSError, ValueError):
        pass
    if hub_reachable():
        try:
            return GPT2LMHeadModel.from_pretrained(name, **kwargs)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load {what} '{name}' from the hub: {first_line(exc)}") from exc
    raise ModelLoadError(
        f"{what} '{name}': no such local folder and the Hugging Face hub is unreachable (offline); "
        f"pass a local save_pretrained folder, e.g. one made by scripts/pretrain_teacher.sh"
    )


def load_teacher(
    name_or_path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> GPT2LMHeadModel:
    """A frozen GPT-2 teacher: eval mode, no gradients, on `device` in `dtype`."""
    model = _from_pretrained(name_or_path, "teacher", dtype).to(device)
    model.eval()
    model.requires_grad_(False)
    return model


def load_student(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> GPT2LMHeadModel:
    """A trainable student from a save_pretrained folder (e.g. distilgpt2 or a run's best/ or final/)."""
    model = _from_pretrained(path, "student", dtype).to(device)
    model.requires_grad_(True)
    return model
