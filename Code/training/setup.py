"""Turn the run's typed config into its pieces: models, layer map, critics, data loaders.

Everything here validates before any training starts, so a bad layer map or a vocabulary mismatch
costs seconds, not an hour.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from transformers import GPT2Config, GPT2LMHeadModel

from Code.config import CriticConfig, ModelConfig
from Code.critic import CriticTrainer
from Code.data_pipeline.distributed_indexed import DistributedBlockSampler
from Code.data_pipeline.instruction_data import labels_from, task_blocks
from Code.data_pipeline.lm_datasets import LMBlocks, check_vocab, load_meta
from Code.modeling.layer_map import resolve_layer_map, validate_layer_map
from Code.modeling.loading import load_student, load_teacher
from Code.modeling.truncation import build_student_from_config, parse_student_layers, truncate_teacher


@dataclass
class Models:
    teacher: GPT2LMHeadModel | None
    student: GPT2LMHeadModel
    student_layers: list[int] | None   # teacher blocks the student was cut from, if it was
    layer_map: list[tuple[int, int]]   # (student hidden index, teacher hidden index)
    teacher_dim: int


def build_models(cfg: ModelConfig, data_dir: str | Path, needs_teacher: bool, seed: int, device: torch.device,
                 teacher_dtype: torch.dtype) -> Models:
    meta = load_meta(data_dir)
    if cfg.no_teacher and needs_teacher:
        raise ValueError("--no-teacher but the loss needs a teacher: drop --no-teacher or use --loss lm")
    teacher = None
    if not cfg.no_teacher:
        teacher = load_teacher(cfg.teacher, device=device, dtype=teacher_dtype)
        check_vocab(meta, teacher.config.vocab_size, what=f"teacher {cfg.teacher}")
    student_layers = None
    if cfg.student:
        student = load_student(cfg.student)
    elif cfg.student_config:
        # Without a teacher (pretraining one from scratch), the vocabulary comes from the data's tokenizer.
        eos = int(meta["eos_id"])
        base = teacher.config if teacher is not None else GPT2Config(
            vocab_size=int(meta["vocab_size"]), bos_token_id=eos, eos_token_id=eos)
        student = build_student_from_config(cfg.student_config, base, seed=seed)
    else:
        if teacher is None:
            raise ValueError("a truncated student needs a teacher: give --teacher, --student or --student-config")
        student_layers = parse_student_layers(cfg.student_layers, teacher.config.n_layer)
        student = truncate_teacher(teacher, student_layers)
        student.requires_grad_(True)
    check_vocab(meta, student.config.vocab_size, what="student")
    student.config.use_cache = False
    if cfg.student_dropout is not None:  # all three ways of building a student: cut, from a config, loaded
        set_dropout(student, cfg.student_dropout)

    teacher_dim = teacher.config.n_embd if teacher is not None else student.config.n_embd
    layer_map: list[tuple[int, int]] = []
    if teacher is not None:
        s_layers, t_layers = student.config.n_layer, teacher.config.n_layer
        layer_map, _ = resolve_layer_map(cfg.layer_map, student_layers, s_layers, t_layers)
        validate_layer_map(layer_map, s_layers, t_layers, student.config.n_embd, teacher_dim)
    return Models(teacher, student, student_layers, layer_map, teacher_dim)


def set_dropout(model: GPT2LMHeadModel, p: float) -> None:
    """Every dropout of a GPT-2 (embeddings, attention weights, residual branches) to `p`, in the modules
    and in the config (so `save_pretrained` records what it trained with). The teacher runs in eval mode,
    i.e. with none; a student trained with GPT-2's 0.1 differs from it by dropout noise alone, which a
    hidden-state loss or a critic reads as distance (measured at init on a layer the student shares with the
    teacher: critic estimate 1.69 with dropout 0.1, 0.000 with 0.0)."""
    for name in ("resid_pdrop", "embd_pdrop", "attn_pdrop"):
        setattr(model.config, name, p)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p


def build_critics(cfg: CriticConfig, n_layers: int, dim: int, total_steps: int, seed: int,
                  device: torch.device) -> CriticTrainer:
    return CriticTrainer(n_layers, dim, cfg, seed=seed, device=device, total_steps=total_steps)


def train_loader(data_dir: str | Path, seq_len: int, batch_size: int, rank: int, world: int, seed: int,
                 num_workers: int, pin: bool, task: str = "lm") -> tuple[LMBlocks, DistributedBlockSampler, dict]:
    blocks = task_blocks(data_dir, "train", seq_len, task)
    if len(blocks) < batch_size * world:
        raise ValueError(f"train split of {data_dir} holds {len(blocks)} blocks of {seq_len} tokens, fewer than "
                         f"one batch per rank ({batch_size} x {world}): lower --seq-len or add data")
    sampler = DistributedBlockSampler(len(blocks), rank=rank, world_size=world, shuffle=True, seed=seed)
    loader_kwargs = {"batch_size": batch_size, "drop_last": True, "num_workers": num_workers,
                     "pin_memory": pin, "persistent_workers": False}
    if num_workers > 0:
        loader_kwargs["prefetch_factor"] = 4
    return blocks, sampler, loader_kwargs


def valid_loader(data_dir: str | Path, seq_len: int, batch_size: int, rank: int, world: int,
                 task: str = "lm") -> DataLoader:
    blocks = task_blocks(data_dir, "valid", seq_len, task)
    sampler = DistributedBlockSampler(len(blocks), rank=rank, world_size=world, shuffle=False, drop_last=True)
    return DataLoader(blocks, batch_size=batch_size, sampler=sampler, drop_last=False)


def as_batch(block: torch.Tensor | dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A block of seq_len + 1 tokens -> inputs and next-token labels (-100 on prompt targets, task prompt)."""
    if isinstance(block, dict):
        tokens, is_prompt = (block[k].to(device, non_blocking=True) for k in ("tokens", "is_prompt"))
        input_ids, labels = labels_from(tokens, is_prompt)
        return {"input_ids": input_ids, "labels": labels}
    block = block.to(device, non_blocking=True)
    return {"input_ids": block[:, :-1], "labels": block[:, 1:]}
