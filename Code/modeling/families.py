"""Model families: the one place that knows where a family keeps its blocks, embeddings, final norm and head.

Everything else asks through the functions here (`family_of`, `blocks`, `decoder_forward`, `num_layers`, ...),
so adding a family is one `Family` entry in `FAMILIES` plus a test (tests/modeling/test_families.py).

Sizes come from the standard Hugging Face config names (`num_hidden_layers`, `hidden_size`,
`num_attention_heads`, `max_position_embeddings`), which GPT-2's config maps onto its own `n_layer`, `n_embd`,
`n_head` and `n_positions`. Hidden-state numbering follows `output_hidden_states` in every family here: 0 is
the embedding output, i the output of block i-1, and the last one is taken after the final norm (checked for
each family by the tests).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from torch import Tensor, nn
from transformers import PretrainedConfig


class UnsupportedFamilyError(ValueError):
    """A model type with no adapter here."""


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]  # config.model_type values this adapter covers
    decoder: str                  # attribute of the *ForCausalLM that holds the decoder (the base model)
    blocks: str                   # attribute of the decoder holding the ModuleList of blocks
    embeddings: tuple[str, ...]   # decoder attributes of the embeddings, token embedding first
    final_norm: str               # decoder attribute of the norm after the last block
    head: str = "lm_head"         # attribute of the *ForCausalLM projecting to the vocabulary
    dropouts: tuple[str, ...] = ()  # config fields (and module attributes) holding dropout probabilities
    # a config switch that makes a block compute differently at another position: truncation is refused when set
    position_bound: str | None = None


_ROPE = {"decoder": "model", "blocks": "layers", "embeddings": ("embed_tokens",), "final_norm": "norm",
         "dropouts": ("attention_dropout",)}

FAMILIES: tuple[Family, ...] = (
    Family("gpt2", ("gpt2",), decoder="transformer", blocks="h", embeddings=("wte", "wpe"), final_norm="ln_f",
           dropouts=("resid_pdrop", "embd_pdrop", "attn_pdrop"), position_bound="scale_attn_by_inverse_layer_idx"),
    Family("llama", ("llama",), **_ROPE),
    Family("qwen2", ("qwen2", "qwen3"), **_ROPE),
    Family("mistral", ("mistral",), **_ROPE),
    Family("gpt_neox", ("gpt_neox",), decoder="gpt_neox", blocks="layers", embeddings=("embed_in",),
           final_norm="final_layer_norm", dropouts=("attention_dropout", "hidden_dropout")),
)


def supported_types() -> list[str]:
    return sorted(t for f in FAMILIES for t in f.model_types)


def family_of(model_or_config: nn.Module | PretrainedConfig | str) -> Family:
    """The adapter of a model, its config, or a `model_type` string; UnsupportedFamilyError naming the fix."""
    config = getattr(model_or_config, "config", model_or_config)
    kind = config if isinstance(config, str) else getattr(config, "model_type", None)
    for family in FAMILIES:
        if kind in family.model_types:
            return family
    raise UnsupportedFamilyError(
        f"model type {kind!r} has no adapter (supported: {', '.join(supported_types())}); "
        "add one to Code/modeling/families.py or use a model of a supported family")


def same_family(a: PretrainedConfig, b: PretrainedConfig) -> bool:
    return family_of(a) is family_of(b)


class StudentMismatchError(ValueError):
    """A student that cannot be distilled from the teacher: another family or another vocabulary."""


def check_pair(teacher: PretrainedConfig, student: PretrainedConfig) -> None:
    """The student keeps the teacher's family and tokenizer: logits are compared id by id, hidden states
    block by block. One line naming the difference and the fix otherwise."""
    t_family, s_family = family_of(teacher), family_of(student)
    if t_family is not s_family:
        raise StudentMismatchError(
            f"the student is a {student.model_type} model but the teacher a {teacher.model_type} one: a student "
            f"keeps the teacher's family; cut it from the teacher (--student-layers) or give --student-config")
    for key in ("vocab_size", "bos_token_id", "eos_token_id"):
        t, s = getattr(teacher, key, None), getattr(student, key, None)
        if key == "vocab_size" or (t is not None and s is not None):
            if t != s:
                raise StudentMismatchError(
                    f"the student's tokenizer differs from the teacher's ({key} {s} vs {t}): the logit losses "
                    "compare the same token ids; use a student with the teacher's tokenizer and vocabulary")


# ------------------------------------------------------------------------------------------- config sizes
def num_layers(config: PretrainedConfig) -> int:
    return int(config.num_hidden_layers)


def hidden_size(config: PretrainedConfig) -> int:
    return int(config.hidden_size)


def context_length(config: PretrainedConfig) -> int:
    """Positions the model can attend over (GPT-2's n_positions, max_position_embeddings elsewhere)."""
    return int(config.max_position_embeddings)


def describe(config: PretrainedConfig) -> str:
    """`gpt2 12x768, context 1024`: for check lines and logs."""
    return f"{config.model_type} {num_layers(config)}x{hidden_size(config)}, context {context_length(config)}"


def with_layers(config: PretrainedConfig, layers: list[int] | int) -> PretrainedConfig:
    """A copy of `config` keeping the given blocks (or a count: the first ones); every per-layer list
    (Qwen's `layer_types`, ...) keeps the entries of the kept blocks, so each block keeps its attention kind."""
    n = num_layers(config)
    keep = list(range(layers)) if isinstance(layers, int) else list(layers)
    out = copy.deepcopy(config)
    for key, value in config.to_dict().items():
        if isinstance(value, list) and len(value) == n and key != "architectures":
            setattr(out, key, [value[i] for i in keep])
    out.num_hidden_layers = len(keep)
    return out


# ------------------------------------------------------------------------------------------- modules
def decoder(model: nn.Module) -> nn.Module:
    """The base model (embeddings, blocks, final norm) without the head."""
    return getattr(model, family_of(model).decoder)


def blocks(model: nn.Module) -> nn.ModuleList:
    return getattr(decoder(model), family_of(model).blocks)


def blocks_prefix(model_or_config: nn.Module | PretrainedConfig) -> str:
    """State-dict prefix of the blocks (`transformer.h.`, `model.layers.`), block index next."""
    family = family_of(model_or_config)
    return f"{family.decoder}.{family.blocks}."


def head(model: nn.Module) -> nn.Module:
    return getattr(model, family_of(model).head)


def final_norm(model: nn.Module) -> nn.Module:
    return getattr(decoder(model), family_of(model).final_norm)


def decoder_forward(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None,
                    output_hidden_states: bool) -> tuple[Tensor, tuple[Tensor, ...] | None]:
    """(last hidden state after the final norm, all hidden states or None): the head is left to the caller,
    so a pass that needs no logits skips the vocabulary-wide matmul."""
    out = decoder(model)(input_ids=input_ids, attention_mask=attention_mask,
                         output_hidden_states=output_hidden_states, use_cache=False)
    return out.last_hidden_state, (out.hidden_states if output_hidden_states else None)


def set_dropout(model: nn.Module, p: float) -> None:
    """Every dropout of the model to `p`: the config fields (so `save_pretrained` records them), the
    `nn.Dropout` modules, and the probabilities attention modules keep as attributes (Llama's functional
    attention dropout)."""
    family = family_of(model)
    for name in family.dropouts:
        if hasattr(model.config, name):
            setattr(model.config, name, p)
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p
        for name in family.dropouts:
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, p)
