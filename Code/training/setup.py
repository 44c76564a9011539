"""Turn the run's typed config into its pieces: models, layer map, critics, data loaders.

Everything here validates before any training starts, so a bad layer map or a vocabulary mismatch
costs seconds, not an hour.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from transformers import PretrainedConfig, PreTrainedModel

from Code.config import CriticConfig, ModelConfig
from Code.critic import CriticTrainer
from Code.data_pipeline.distributed_indexed import DistributedBlockSampler
from Code.data_pipeline.instruction_data import labels_from, task_blocks
from Code.data_pipeline.lm_datasets import LMBlocks, load_meta
from Code.knobs import ConfigError
from Code.modeling import families
from Code.modeling.loading import load_student, load_teacher
from Code.modeling.truncation import build_student_from_config, truncate_teacher
from Code.training.model_plan import plan_models


@dataclass
class Models:
    teacher: PreTrainedModel | None
    student: PreTrainedModel
    student_layers: list[int] | None   # teacher blocks the student was cut from, if it was
    layer_map: list[tuple[int, int]]   # (student hidden index, teacher hidden index)
    teacher_dim: int


def build_models(cfg: ModelConfig, data_dir: str | Path, needs_teacher: bool, seed: int, device: torch.device,
                 teacher_dtype: torch.dtype) -> Models:
    """Load and build what `plan_models` plans (the plan the pre-flight check ran on configs alone)."""
    meta = load_meta(data_dir)
    loaded: dict[str, PreTrainedModel] = {}

    def config_of(name: str, what: str) -> PretrainedConfig:
        if what == "teacher":
            loaded[what] = load_teacher(name, device=device, dtype=teacher_dtype,
                                        trust_remote_code=cfg.trust_remote_code)
        else:
            loaded[what] = load_student(name, trust_remote_code=cfg.trust_remote_code)
        return loaded[what].config

    plan = plan_models(cfg, meta, needs_teacher, config_of)
    teacher = loaded.get("teacher")
    if plan.how == "loaded":
        student = loaded["student"]
    elif plan.how == "config":
        student = build_student_from_config(cfg.student_config, plan.base, seed=seed)
    else:
        student = truncate_teacher(teacher, plan.student_layers)
        student.requires_grad_(True)
    student.config.use_cache = False
    if cfg.student_dropout is not None:  # all three ways of building a student: cut, from a config, loaded
        set_dropout(student, cfg.student_dropout)
    teacher_dim = families.hidden_size((teacher if teacher is not None else student).config)
    return Models(teacher, student, plan.student_layers, plan.layer_map, teacher_dim)


def set_dropout(model: PreTrainedModel, p: float) -> None:
    """Every dropout of the model (GPT-2: embeddings, attention weights, residual branches) to `p`, in the
    modules and in the config (so `save_pretrained` records what it trained with). The teacher runs in eval mode,
    i.e. with none; a student trained with GPT-2's 0.1 differs from it by dropout noise alone, which a
    hidden-state loss or a critic reads as distance (measured at init on a layer the student shares with the
    teacher: critic estimate 1.69 with dropout 0.1, 0.000 with 0.0)."""
    families.set_dropout(model, p)


def build_critics(cfg: CriticConfig, n_layers: int, dim: int, total_steps: int, seed: int,
                  device: torch.device) -> CriticTrainer:
    return CriticTrainer(n_layers, dim, cfg, seed=seed, device=device, total_steps=total_steps)


def check_train_blocks(data_dir: str | Path, blocks: int, seq_len: int, batch: int, world: int) -> None:
    """Every rank needs one whole batch of the train split: the rule the pre-flight check (on the token index
    alone) and the loader (on the blocks it built) both apply."""
    if blocks < batch * world:
        raise ConfigError(f"train split of {data_dir} holds {blocks} blocks of {seq_len} tokens, fewer than one "
                          f"batch per rank ({batch} x {world}): lower --seq-len or --micro-batch-size, or add data")


def train_loader(data_dir: str | Path, seq_len: int, batch_size: int, rank: int, world: int, seed: int,
                 num_workers: int, pin: bool, task: str = "lm") -> tuple[LMBlocks, DistributedBlockSampler, dict]:
    blocks = task_blocks(data_dir, "train", seq_len, task)
    check_train_blocks(data_dir, len(blocks), seq_len, batch_size, world)
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
    if isinstance(block, dict) and "block" in block:  # a teacher cache's targets ride along (CachedBlocks)
        batch = as_batch(block["block"], device)
        batch.update({k: v.to(device, non_blocking=True) for k, v in block.items() if k != "block"})
        return batch
    if isinstance(block, dict):
        tokens, is_prompt = (block[k].to(device, non_blocking=True) for k in ("tokens", "is_prompt"))
        input_ids, labels = labels_from(tokens, is_prompt)
        return {"input_ids": input_ids, "labels": labels}
    block = block.to(device, non_blocking=True)
    return {"input_ids": block[:, :-1], "labels": block[:, 1:]}
