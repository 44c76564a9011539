"""Build a student of the teacher's family: teacher blocks copied into a shorter model, or a random config
over the teacher's.

Hidden-state indices follow Hugging Face `output_hidden_states`: 0 is the embedding output, i is the
output of block i-1, and the LAST index (n_layer) is taken after the final layer norm.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from transformers import PretrainedConfig

from Code.modeling.families import blocks_prefix, family_of, num_layers, with_layers
from Code.modeling.layer_map import LayerMapError

if TYPE_CHECKING:  # the model classes cost ~2 s to import: only the builders below need them
    from transformers import PreTrainedModel

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


def truncate_teacher(teacher: PreTrainedModel, layers: Sequence[int]) -> PreTrainedModel:
    """A student of the teacher's family holding copies of its embeddings, `layers` blocks (in order), final
    norm and head.

    Built as a fresh model with `len(layers)` blocks and the teacher's weights loaded into it, so each block's
    `layer_idx` (used by the KV cache) is its new position. Same dtype and device as the teacher; trainable;
    the head tied to the token embedding when the teacher's is.
    """
    from transformers import AutoModelForCausalLM

    n_layer = num_layers(teacher.config)
    layers = list(layers)
    if not layers:
        raise LayerMapError("student needs at least one teacher block")
    bad = [i for i in layers if not 0 <= i < n_layer]
    if bad:
        raise LayerMapError(f"student blocks {bad} out of range 0..{n_layer - 1}")
    bound = family_of(teacher).position_bound
    if bound and getattr(teacher.config, bound, False):
        # the attention scale depends on the block's position, so a moved block would compute differently
        raise LayerMapError(f"cannot truncate a teacher with {bound}=True")
    config = with_layers(teacher.config, layers)
    ref = next(teacher.parameters())
    student = AutoModelForCausalLM.from_config(config, dtype=ref.dtype).to(device=ref.device)
    prefix = blocks_prefix(teacher)
    where = {old: new for new, old in enumerate(layers)}
    state: dict[str, Tensor] = {}
    for key, value in teacher.state_dict().items():
        if not key.startswith(prefix):
            state[key] = value
            continue
        index, _, rest = key[len(prefix):].partition(".")
        if int(index) in where:
            state[f"{prefix}{where[int(index)]}.{rest}"] = value
    tied = bool(getattr(config, "tie_word_embeddings", False))
    missing, unexpected = student.load_state_dict(state, strict=False)
    head_keys = {f"{family_of(teacher).head}.weight"}
    missing = [k for k in missing if not (tied and k in head_keys)]
    if missing or unexpected:
        raise RuntimeError(f"truncation state mismatch: missing {missing}, unexpected {unexpected}")
    # load_state_dict copies values, so nothing is shared with the teacher; retie in case untied
    if tied:
        student.tie_weights()
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


def _overrides(spec: str | Path) -> dict[str, object]:
    path = Path(str(spec))
    if str(spec).strip().endswith(".json") or path.is_file():
        if not path.is_file():
            raise StudentConfigError(f"--student-config file {path} not found")
        try:
            overrides = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise StudentConfigError(f"--student-config file {path} is not valid JSON: {exc}") from None
        if not isinstance(overrides, dict):
            raise StudentConfigError(f"--student-config file {path} must hold a JSON object")
        return overrides
    overrides = {}
    for item in str(spec).split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise StudentConfigError(
                f"--student-config item {item!r} is not key=value (e.g. n_layer=4,n_embd=384,n_head=6)"
            )
        overrides[key.strip()] = _parse_value(value.strip())
    return overrides


def student_config_from_spec(spec: str | Path, teacher_config: PretrainedConfig) -> PretrainedConfig:
    """The config of a random student of the teacher's family: a JSON file or `key=value,...` over the
    teacher's config (GPT-2's n_layer/n_embd/n_head/n_positions, or any field of the family's config class).

    Fields not given are the teacher's; the vocabulary (and its special ids) always comes from the teacher.
    Config only (no weights), so the preflight check and `build_student_from_config` validate alike.
    """
    family_of(teacher_config)
    cls = type(teacher_config)
    overrides = _overrides(spec)
    base = teacher_config.to_dict()
    aliases = dict(getattr(cls, "attribute_map", {}))
    known = set(cls().to_dict()) | set(base) | set(aliases)
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise StudentConfigError(f"--student-config: unknown {cls.__name__} fields {unknown}")
    for alias, field in aliases.items():
        if alias in overrides:
            overrides[field] = overrides.pop(alias)
    for key in ("vocab_size", "bos_token_id", "eos_token_id"):
        if key in overrides and overrides[key] != base.get(key):
            raise StudentConfigError(
                f"--student-config sets {key}={overrides[key]}, but the student must share the teacher's "
                f"({base.get(key)}); drop it"
            )
    _derived(base, overrides, aliases)
    base.update(overrides)
    for key in ("_name_or_path", "architectures", "transformers_version", "model_type"):
        base.pop(key, None)
    config = cls(**base)
    sizes = ("num_hidden_layers", "hidden_size", "num_attention_heads", "max_position_embeddings")
    names = aliases  # the family's own names in messages (GPT-2: n_embd for hidden_size)
    values = {names.get(k, k): getattr(config, k) for k in sizes}
    odd = [f"{k}={v!r}" for k, v in values.items() if isinstance(v, bool) or not isinstance(v, int)]
    if odd:
        raise StudentConfigError(f"--student-config: {', '.join(odd)} must be whole numbers")
    if min(values.values()) < 1:
        raise StudentConfigError(f"--student-config: {', '.join(values)} must be >= 1")
    (width, w), (n_head, h) = ((names.get(k, k), getattr(config, k))
                               for k in ("hidden_size", "num_attention_heads"))
    if w % h and "head_dim" not in overrides:
        raise StudentConfigError(f"--student-config: {width}={w} is not divisible by {n_head}={h}")
    config._attn_implementation = getattr(teacher_config, "_attn_implementation", None) or "sdpa"
    return config


def _derived(base: dict, overrides: dict, aliases: dict) -> None:
    """Drop from the teacher's fields those derived from a size the spec changes, so the config class derives
    them again: per-layer lists (Qwen's `layer_types`) for a new depth, `head_dim` for a new width or heads."""
    def field(name: str) -> str:
        return aliases.get(name, name)

    depth = field("num_hidden_layers")
    if depth in overrides and overrides[depth] != base.get(depth):
        n = base.get(depth)
        for key, value in list(base.items()):
            if isinstance(value, list) and len(value) == n and key not in overrides and key != "architectures":
                base.pop(key)
    width, heads = field("hidden_size"), field("num_attention_heads")
    changed = any(k in overrides and overrides[k] != base.get(k) for k in (width, heads))
    if changed and "head_dim" in base and "head_dim" not in overrides and base.get(heads):
        if base["head_dim"] == base[width] // base[heads]:  # derived, not a free choice of the family (Qwen3)
            overrides["head_dim"] = int(overrides.get(width, base[width])) // int(overrides.get(heads, base[heads]))


def build_student_from_config(
    spec: str | Path, teacher_config: PretrainedConfig, seed: int | None = None
) -> PreTrainedModel:
    """A randomly initialised student of the teacher's family from a JSON file or `key=value,...` over its
    config. Fields not given are the teacher's; the vocabulary (and its special ids) always comes from it.
    """
    from transformers import AutoModelForCausalLM

    config = student_config_from_spec(spec, teacher_config)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        student = AutoModelForCausalLM.from_config(config)
    student.train()
    return student
