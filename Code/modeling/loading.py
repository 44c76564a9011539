"""Load teachers and students of any supported family (Code.modeling.families) through the Auto* classes:
a local save_pretrained folder, the local HF cache, else the hub.

Models know nothing of data files. One line names what is missing when nothing can be loaded. Code from the
hub (`auto_map` in config.json) runs only with `trust_remote_code=True` (`--trust-remote-code`), off by default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from Code.cli import first_line
from Code.hub import hub_reachable
from Code.modeling.families import UnsupportedFamilyError, family_of

OFFLINE_FIX = "pass a local save_pretrained folder, e.g. one made by scripts/pretrain_teacher.sh"


class ModelLoadError(FileNotFoundError):
    """A teacher/student checkpoint that cannot be found or loaded."""


def _checked(config: PretrainedConfig, what: str, where: str) -> PretrainedConfig:
    try:
        family_of(config)
    except UnsupportedFamilyError as exc:
        raise ModelLoadError(f"{what} {where}: {exc}") from None
    return config


def _remote_code_refused(exc: Exception, what: str, where: str, trust_remote_code: bool) -> None:
    if not trust_remote_code and "trust_remote_code" in str(exc):
        raise ModelLoadError(f"{what} {where} needs code from the hub to load: pass --trust-remote-code if you "
                             "trust that code, or use a model of a supported family") from None


def _resolve(name_or_path: str | Path, what: str, load: Any, trust_remote_code: bool) -> Any:
    """`load(source, **kw)` on a local folder, else the local HF cache, else the hub if it answers quickly."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"{what} folder {path} has no config.json; point at a folder written by save_pretrained"
            )
        try:
            return load(str(path))
        except (OSError, ValueError) as exc:
            _remote_code_refused(exc, what, str(path), trust_remote_code)
            raise ModelLoadError(f"cannot load {what} from {path}: {first_line(exc)}") from exc
    name = str(name_or_path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelLoadError(f"{what} folder {path} not found; pass a folder written by save_pretrained")
    try:  # an earlier online session may have cached it
        return load(name, local_files_only=True)
    except (OSError, ValueError) as exc:
        _remote_code_refused(exc, what, repr(name), trust_remote_code)
    if hub_reachable():
        try:
            return load(name)
        except (OSError, ValueError) as exc:
            _remote_code_refused(exc, what, repr(name), trust_remote_code)
            raise ModelLoadError(f"cannot load {what} '{name}' from the hub: {first_line(exc)}") from exc
    raise ModelLoadError(
        f"{what} '{name}': no such local folder, not in the local Hugging Face cache, and the hub is "
        f"unreachable (offline); {OFFLINE_FIX}"
    )


def load_config(name_or_path: str | Path, what: str = "model", trust_remote_code: bool = False) -> PretrainedConfig:
    """A model's config, no weights, of a supported family; ModelLoadError (one line) otherwise."""
    def load(source: str, **kw: Any) -> PretrainedConfig:
        return AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code, **kw)

    config = _resolve(name_or_path, what, load, trust_remote_code)
    return _checked(config, what, str(name_or_path))


def _from_pretrained(name_or_path: str | Path, what: str, dtype: torch.dtype,
                     trust_remote_code: bool) -> PreTrainedModel:
    config = load_config(name_or_path, what, trust_remote_code)  # the family is checked before any weights load

    def load(source: str, **kw: Any) -> PreTrainedModel:
        return AutoModelForCausalLM.from_pretrained(source, config=config, dtype=dtype, attn_implementation="sdpa",
                                                    trust_remote_code=trust_remote_code, **kw)

    return _resolve(name_or_path, what, load, trust_remote_code)


def load_teacher(
    name_or_path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
    trust_remote_code: bool = False,
) -> PreTrainedModel:
    """A frozen teacher: eval mode, no gradients, on `device` in `dtype`."""
    model = _from_pretrained(name_or_path, "teacher", dtype, trust_remote_code).to(device)
    model.eval()
    model.requires_grad_(False)
    return model


def load_student(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
    trust_remote_code: bool = False,
) -> PreTrainedModel:
    """A trainable student from a save_pretrained folder (e.g. distilgpt2 or a run's best/ or final/)."""
    model = _from_pretrained(path, "student", dtype, trust_remote_code).to(device)
    model.requires_grad_(True)
    return model
