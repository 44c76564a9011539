"""Tiny random models of every supported family, as a user's save_pretrained teacher would look."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

_ROPE = {"num_hidden_layers": 4, "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4,
         "num_key_value_heads": 2, "max_position_embeddings": 64}
SIZES: dict[str, dict] = {
    "gpt2": {"n_layer": 4, "n_embd": 32, "n_head": 4, "n_positions": 64},
    "llama": _ROPE,
    "qwen2": _ROPE,
    "qwen3": {**_ROPE, "head_dim": 8},
    "mistral": _ROPE,
    "gpt_neox": {"num_hidden_layers": 4, "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4,
                 "max_position_embeddings": 64},
}
KINDS = list(SIZES)


def tiny_config(kind: str, vocab: int = 97, eos: int = 0, **extra) -> PretrainedConfig:
    return AutoConfig.for_model(kind, vocab_size=vocab, bos_token_id=eos, eos_token_id=eos,
                                **{**SIZES[kind], **extra})


def tiny_model(kind: str, vocab: int = 97, eos: int = 0, seed: int = 0, **extra) -> PreTrainedModel:
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(kind, vocab, eos, **extra), attn_implementation="sdpa")
    with torch.no_grad():  # random norms, so a norm left out or misplaced changes the output
        for name, p in model.named_parameters():
            if "norm" in name or "ln_" in name:
                p.add_(0.3 * torch.randn_like(p))
    return model.eval()


def save_teacher(kind: str, path: Path, vocab: int, eos: int, seed: int = 0) -> Path:
    tiny_model(kind, vocab, eos, seed).save_pretrained(path)
    return path
