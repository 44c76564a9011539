"""Build a student: teacher blocks copied into a shorter GPT-2, or a random GPT2Config over the teacher's.

Hidden-state indices follow Hugging Face `output_hidden_states`: 0 is the embedding output, i is the
output of block i-1, and the LAST index (n_layer) is taken after the final layer norm.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from transformers import GPT2Config

from Code.modeling.layer_map import LayerMapError

if TYPE_CHECKING:  # the model class costs ~2 s to import: only the builders below need it
    from transformers import GPT2LMHeadModel

# Hugging Face DistilGPT2 kept these blocks of the 12-layer GPT-2.
DISTILGPT2_LAYERS = [0, 2, 4, 7, 9, 11]


class StudentConfigError(ValueError):
    """A bad --student-config specification."""


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
    from transformers import GPT2LMHeadModel

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


def student_config_from_spec(spec: str | Path, teacher_config: GPT2Config) -> GPT2Config:
    """The GPT2Config of a random student: a JSON file or `key=value,...` over the teacher's config.

    Fields not given are the teacher's; the vocabulary (and its special ids) always comes from the teacher.
    Config only (no weights), so the preflight check and `build_student_from_config` validate alike.
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
    sizes = ("n_layer", "n_embd", "n_head", "n_positions")
    odd = [f"{k}={getattr(config, k)!r}" for k in sizes
           if isinstance(getattr(config, k), bool) or not isinstance(getattr(config, k), int)]
    if odd:
        raise StudentConfigError(f"--student-config: {', '.join(odd)} must be whole numbers")
    if min(config.n_layer, config.n_embd, config.n_head, config.n_positions) < 1:
        raise StudentConfigError("--student-config: n_layer, n_embd, n_head and n_positions must be >= 1")
    if config.n_embd % config.n_head:
        raise StudentConfigError(
            f"--student-config: n_embd={config.n_embd} is not divisible by n_head={config.n_head}"
        )
    config._attn_implementation = getattr(teacher_config, "_attn_implementation", None) or "sdpa"
    return config


def build_student_from_config(
    spec: str | Path, teacher_config: GPT2Config, seed: int | None = None
) -> GPT2LMHeadModel:
    """A randomly initialised student from a JSON file or `key=value,...` over GPT2Config fields.

    Fields not given are the teacher's; the vocabulary (and its special ids) always comes from the teacher.
    """
    from transformers import GPT2LMHeadModel

    config = student_config_from_spec(spec, teacher_config)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        student = GPT2LMHeadModel(config)
    student.train()
    return student
