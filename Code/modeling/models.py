"""Teacher loading, student construction (truncation / config / checkpoint) and layer maps.

Hidden-state indices follow Hugging Face `output_hidden_states`: 0 is the embedding output, i is the
output of block i-1, and the LAST index (n_layer) is taken after the final layer norm. A layer map is a
list of `(student_idx, teacher_idx)` pairs over those indices. Models know nothing of data files.
"""

from __future__ import annotations

import copy
import json
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import Tensor, nn
from transformers import GPT2Config, GPT2LMHeadModel

# Hugging Face DistilGPT2 kept these blocks of the 12-layer GPT-2.
DISTILGPT2_LAYERS = [0, 2, 4, 7, 9, 11]


class LayerMapError(ValueError):
    """A bad --student-layers / --layer-map specification or an impossible match."""


class ModelLoadError(FileNotFoundError):
    """A teacher/student checkpoint that cannot be found or loaded."""


class StudentConfigError(ValueError):
    """A bad --student-config specification."""


# ---------------------------------------------------------------------------------------------- loading
def _hub_reachable(timeout: float = 3.0) -> bool:
    """Cheap reachability probe: transformers itself retries for ~30 s before giving up offline."""
    if any(os.environ.get(var, "") not in ("", "0") for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


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
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(f"cannot load {what} from {path}: {first}") from exc
    name = str(name_or_path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelLoadError(f"{what} folder {path} not found; pass a folder written by save_pretrained")
    try:  # an earlier online session may have cached it
        return GPT2LMHeadModel.from_pretrained(name, local_files_only=True, **kwargs)
    except (OSError, ValueError):
        pass
    if _hub_reachable():
        try:
            return GPT2LMHeadModel.from_pretrained(name, **kwargs)
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(f"cannot load {what} '{name}' from the hub: {first}") from exc
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


# ------------------------------------------------------------------------------------- student layers
def parse_student_layers(spec: str, n_layer: int) -> list[int]:
    """`0,2,4` | `first:K` | `last:K` | `distilgpt2` -> strictly increasing teacher block indices."""
    text = str(spec).strip().lower()
    if not text:
        raise LayerMapError("--student-layers is empty; give e.g. 0,2,4,6,8,10 or first:6 or last:6")
    if text == "distilgpt2":
        if n_layer != 12:
            raise LayerMapError(
                f"--student-layers distilgpt2 picks blocks {DISTILGPT2_LAYERS} of a 12-layer teacher, "
                f"but the teacher has {n_layer}; list the blocks explicitly (e.g. 0,2,4)"
            )
        return list(DISTILGPT2_LAYERS)
    if text.startswith(("first:", "last:")):
        kind, _, k_text = text.partition(":")
        try:
            k = int(k_text)
        except ValueError:
            raise LayerMapError(f"--student-layers {spec!r}: K in {kind}:K must be an integer") from None
        if not 1 <= k <= n_layer:
            raise LayerMapError(f"--student-layers {spec!r}: K must be in 1..{n_layer} (teacher blocks)")
        return list(range(k)) if kind == "first" else list(range(n_layer - k, n_layer))
    try:
        layers = [int(part) for part in text.split(",")]
    except ValueError:
        raise LayerMapError(
            f"--student-layers {spec!r} is not a comma list of integers, first:K, last:K or distilgpt2"
        ) from None
    bad = [i for i in layers if not 0 <= i < n_layer]
    if bad:
        raise LayerMapError(f"--student-layers {spec!r}: blocks {bad} out of range 0..{n_layer - 1}")
    if any(b <= a for a, b in zip(layers, layers[1:], strict=False)):
        raise LayerMapError(f"--student-layers {spec!r}: blocks must be strictly increasing, without repeats")
    return layers


def truncate_teacher(teacher: GPT2LMHeadModel, layers: Sequence[int]) -> GPT2LMHeadModel:
    """A student holding copies of the teacher's embeddings, `layers` blocks (in order) and final norm.

    Built as a fresh model with `n_layer = len(layers)` and the teacher's weights loaded into it, so each
    block's `layer_idx` (used by the KV cache) is its new position. Same dtype and device as the teacher;
    trainable; lm_head tied to wte as in GPT-2.
    """
    n_layer = teacher.config.n_layer
    layers = list(layers)
    if not layers:
        raise LayerMapError("student needs at least one teacher block")
    bad = [i for i in layers if not 0 <= i < n_layer]
    if bad:
        raise LayerMapError(f"student blocks {bad} out of range 0..{n_layer - 1}")
    if getattr(teacher.config, "scale_attn_by_inverse_layer_idx", False):
        # the attention scale depends on the block's position, so a moved block would compute differently
        raise LayerMapError("cannot truncate a teacher with scale_attn_by_inverse_layer_idx=True")
    config = copy.deepcopy(teacher.config)
    config.n_layer = len(layers)
    ref = next(teacher.parameters())
    student = GPT2LMHeadModel(config).to(device=ref.device, dtype=ref.dtype)
    src = teacher.transformer
    state: dict[str, Tensor] = {}
    for name in ("wte", "wpe", "ln_f"):
        for key, value in getattr(src, name).state_dict().items():
            state[f"transformer.{name}.{key}"] = value
    for new, old in enumerate(layers):
        for key, value in src.h[old].state_dict().items():
            state[f"transformer.h.{new}.{key}"] = value
    missing, unexpected = student.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("lm_head.")]  # tied to wte
    if missing or unexpected:
        raise RuntimeError(f"truncation state mismatch: missing {missing}, unexpected {unexpected}")
    # load_state_dict copies values, so nothing is shared with the teacher; retie in case untied
    if config.tie_word_embeddings:
        student.lm_head.weight = student.transformer.wte.weight
    else:
        student.lm_head.load_state_dict(teacher.lm_head.state_dict())
    student.train()
    student.requires_grad_(True)
    return student


# ----------------------------------------------------------------------------------- student config
def _parse_value(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        low = text.lower()
        if low in ("true", "false"):
            return low == "true"
        if low in ("none", "null"):
            return None
        return text


def build_student_from_config(
    spec: str | Path, teacher_config: GPT2Config, seed: int | None = None
) -> GPT2LMHeadModel:
    """A randomly initialised student from a JSON file or `key=value,...` over GPT2Config fields.

    Fields not given are the teacher's; the vocabulary (and its special ids) always comes from the teacher.
    """
    path = Path(str(spec))
    overrides: dict[str, object]
    if str(spec).strip().endswith(".json") or path.is_file():
        if not path.is_file():
            raise StudentConfigError(f"--student-config file {path} not found")
        try:
            overrides = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise StudentConfigError(f"--student-config file {path} is not valid JSON: {exc}") from None
        if not isinstance(overrides, dict):
            raise StudentConfigError(f"--student-config file {path} must hold a JSON object")
    else:
        overrides = {}
        for item in str(spec).split(","):
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise StudentConfigError(
                    f"--student-config item {item!r} is not key=value (e.g. n_layer=4,n_embd=384,n_head=6)"
                )
            overrides[key.strip()] = _parse_value(value.strip())
    base = teacher_config.to_dict()
    known = set(GPT2Config().to_dict()) | set(GPT2Config.attribute_map)
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise StudentConfigError(f"--student-config: unknown GPT2Config fields {unknown}")
    for key in ("vocab_size", "bos_token_id", "eos_token_id"):
        if key in overrides and overrides[key] != base.get(key):
            raise StudentConfigError(
                f"--student-config sets {key}={overrides[key]}, but the student must share the teacher's "
                f"({base.get(key)}); drop it"
            )
    for alias, field in GPT2Config.attribute_map.items():
        if alias in overrides:
            overrides[field] = overrides.pop(alias)
    base.update(overrides)
    for key in ("_name_or_path", "architectures", "transformers_version", "model_type"):
        base.pop(key, None)
    config = GPT2Config(**base)
    if config.n_embd % config.n_head:
        raise StudentConfigError(
            f"--student-config: n_embd={config.n_embd} is not divisible by n_head={config.n_head}"
        )
    if min(config.n_layer, config.n_embd, config.n_head, config.n_positions) < 1:
        raise StudentConfigError("--student-config: n_layer, n_embd, n_head and n_positions must be >= 1")
    config._attn_implementation = getattr(teacher_config, "_attn_implementation", None) or "sdpa"
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        student = GPT2LMHeadModel(config)
    student.train()
    return student


# ------------------------------------------------------------------------------------------ layer maps
def default_layer_map(student_layers: Sequence[int], teacher_n_layer: int) -> list[tuple[int, int]]:
    """Student hidden i (1..L-1) <-> teacher hidden layers[i-1]+1; student hidden L <-> teacher's last.

    Both last indices are post-ln_f, so the final pair always compares normalised outputs.
    """
    L = len(student_layers)
    pairs = [(i, int(student_layers[i - 1]) + 1) for i in range(1, L)]
    pairs.append((L, int(teacher_n_layer)))
    return pairs


def parse_layer_map(spec: str, student_n_layer: int) -> list[tuple[int, int]]:
    """`s:t,s:t,...` (explicit pairs) or `t1,...,tL` (teacher index for student hidden 1..L)."""
    text = str(spec).strip()
    if not text:
        raise LayerMapError(
            "--layer-map is empty; give s:t pairs (1:2,2:4) or one teacher index per student layer"
        )
    items = [item.strip() for item in text.split(",")]
    try:
        if all(":" in item for item in items):
            pairs = []
            for item in items:
                s, t = item.split(":")
                pairs.append((int(s), int(t)))
            return pairs
        if any(":" in item for item in items):
            raise LayerMapError(f"--layer-map {spec!r} mixes s:t pairs and plain indices; use one form")
        teacher_idx = [int(item) for item in items]
    except ValueError as exc:
        if isinstance(exc, LayerMapError):
            raise
        raise LayerMapError(
            f"--layer-map {spec!r}: every entry must be an integer or s:t of integers"
        ) from None
    if len(teacher_idx) != student_n_layer:
        raise LayerMapError(
            f"--layer-map {spec!r} lists {len(teacher_idx)} teacher indices but the student has "
            f"{student_n_layer} layers; give one per student layer or use s:t pairs"
        )
    return [(i + 1, t) for i, t in enumerate(teacher_idx)]


def validate_layer_map(
    pairs: Sequence[tuple[int, int]],
    student_n_layer: int,
    teacher_n_layer: int,
    student_dim: int | None = None,
    teacher_dim: int | None = None,
    allow_projection: bool = True,
) -> None:
    """Raise LayerMapError unless every pair is in range, no index repeats, and widths can be matched."""
    if not pairs:
        raise LayerMapError("layer map is empty: at least one (student, teacher) pair is needed")
    if len(pairs) > student_n_layer + 1:
        raise LayerMapError(
            f"layer map has {len(pairs)} pairs but the student has only {student_n_layer + 1} hidden states"
        )
    for s, t in pairs:
        if not 0 <= s <= student_n_layer:
            raise LayerMapError(f"layer map pair {s}:{t}: student index {s} outside 0..{student_n_layer}")
        if not 0 <= t <= teacher_n_layer:
            raise LayerMapError(f"layer map pair {s}:{t}: teacher index {t} outside 0..{teacher_n_layer}")
    students = [s for s, _ in pairs]
    teachers = [t for _, t in pairs]
    for name, idx in (("student", students), ("teacher", teachers)):
        dup = sorted({i for i in idx if idx.count(i) > 1})
        if dup:
            raise LayerMapError(
                f"layer map repeats {name} index {dup}; each hidden state may be matched once"
            )
    if student_dim is not None and teacher_dim is not None:
        if student_dim < 1 or teacher_dim < 1:
            raise LayerMapError(
                f"hidden widths must be positive (student {student_dim}, teacher {teacher_dim})"
            )
        if student_dim != teacher_dim and not allow_projection:
            raise LayerMapError(
                f"student width {student_dim} differs from teacher width {teacher_dim} and projections are "
                f"off; enable them or use a student of width {teacher_dim}"
            )


class HiddenProjections(nn.Module):
    """Maps student hidden states into the teacher's width: Linear per matched layer, or identity."""

    def __init__(self, student_dim: int, teacher_dim: int, n: int) -> None:
        super().__init__()
        self.student_dim, self.teacher_dim, self.n = student_dim, teacher_dim, n
        self.needed = student_dim != teacher_dim
        make = (lambda: nn.Linear(student_dim, teacher_dim)) if self.needed else nn.Identity
        self.proj = nn.ModuleList([make() for _ in range(n)])

    def forward(self, hidden: Sequence[Tensor]) -> list[Tensor]:
        if len(hidden) != self.n:
            raise LayerMapError(f"HiddenProjections built for {self.n} layers got {len(hidden)} tensors")
        return [p(h) for p, h in zip(self.proj, hidden, strict=True)]
