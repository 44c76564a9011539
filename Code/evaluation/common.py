"""What every evaluation task shares: its errors, finding the model and its run's record, paths, the
tokenizer, the device.

Light on purpose (no torch, transformers or matplotlib at import): `Code/evaluate_.py` imports it before
anything heavy, so a bad path is reported in about a second.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from Code import REPO
from Code.run_folder import BEST, FINAL, check_model_folder, read_distill_info


class EvalError(ValueError):
    """Bad evaluation input (no teacher, no data, bad window...)."""


class CheckpointNotFoundError(FileNotFoundError):
    """The --ckpt / --compare path holds no model."""


def resolve_checkpoint(path: str | Path) -> Path:
    """A model folder: the path itself if it holds config.json, else its best/, else its final/; a run's
    folder is verified against its digests (Code.run_folder) before anything loads it."""
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFoundError(f"checkpoint {path} not found; pass a save_pretrained folder or a run dir")
    if (path / "config.json").is_file():
        check_model_folder(path)
        return path
    for sub in (BEST, FINAL):
        if (path / sub / "config.json").is_file():
            check_model_folder(path / sub)
            return path / sub
    raise CheckpointNotFoundError(f"{path} holds no model (no config.json, best/ or final/); has the run saved yet?")


def read_info(model_dir: Path) -> dict:
    """The run's distill_info.json (teacher, data_dir, student_layers, layer_map), or {} when there is none."""
    return read_distill_info(model_dir)


def model_vocab(model_dir: Path) -> int:
    """The vocabulary size in a model folder's config.json, read without loading the model."""
    return int(json.loads((Path(model_dir) / "config.json").read_text()).get("vocab_size", 0))


def existing_path(path: str) -> str:
    """Paths in distill_info.json may be relative to where training ran: try as given, then the repo root."""
    return path if Path(path).exists() or not (REPO / path).exists() else str(REPO / path)


def load_tokenizer_near(*folders: str | Path | None):
    """The first tokenizer saved in one of `folders` (run folders and data dirs keep one), else None."""
    from transformers import AutoTokenizer

    for folder in folders:
        if folder and (Path(folder) / "tokenizer_config.json").is_file():
            return AutoTokenizer.from_pretrained(str(folder))
    return None


def eval_device(requested: str):
    """`--device` as a torch.device through Code.utils.pick_device; anything unusable is one EvalError line."""
    import torch

    from Code.utils import pick_device

    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", requested):
        raise EvalError(f"--device {requested}: use auto, cpu, cuda or cuda:N")
    try:
        device = pick_device(requested)
    except ValueError as exc:
        raise EvalError(str(exc)) from None
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise EvalError(f"--device {requested}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def eval_dtype(device):
    """BF16 on a GPU (as training runs), FP32 on the CPU."""
    import torch

    return torch.bfloat16 if device.type == "cuda" else torch.float32


def set_threads(threads: int | None) -> None:
    """--threads: CPU threads for torch (None: torch's choice)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
