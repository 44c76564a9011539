"""MiniLLM's step: reverse KL by policy gradient on student samples (the method is in objectives/minillm.py).

Per micro-batch: one rollout of `--micro-batch-size` training prompts (teacher-mixed sampling), then one
student forward over the rollout rows and a batch of `--pt-data-dir` rows together (one graph for any
engine), and the MiniLLM surrogate plus `--pt-weight` times the LM loss on those rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from Code.config import RunConfig
from Code.data_pipeline.distributed_indexed import DistributedBlockSampler
from Code.data_pipeline.instruction_data import clip_prompt, load_examples
from Code.modeling.generation import prompt_budget
from Code.modeling.student import DistillStudent
from Code.objectives import logit as ll
from Code.objectives.masking import label_mask, masked_mean
from Code.objectives.minillm import Rollout, minillm_loss, rollout
from Code.training.data_stream import endless_batches
from Code.training.engines import Engine
from Code.training.setup import Models, as_batch, train_loader
from Code.training.steps import StepOutput
from Code.utils import rank, world_size

LOSS_PARTS = ("single", "long", "rl", "pt")  # logged as loss/<name>; the rest are rollout statistics


class PromptSet(Dataset):
    """Training prompts (token ids), clipped from the left to fit beside the generated response."""

    def __init__(self, prompts: list[list[int]]) -> None:
        self.prompts = prompts

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, i: int) -> list[int]:
        return self.prompts[int(i)]


def pad_to(x: Tensor, width: int, value: int) -> Tensor:
    return F.pad(x, (0, width - x.shape[1]), value=value)


class MiniLLMStep:
    samples_responses = True  # preflight also checks prompts, a teacher and room for the rollouts

    def __init__(self, cfg: RunConfig, models: Models, device: torch.device, eos: int) -> None:
        if not cfg.data.prompt_masked:
            raise ValueError("MiniLLM samples responses to prompts: pass --task prompt with a data dir converted "
                             "by python Code/data_download.py --dataset dolly")
        self.cfg, self.device, self.eos = cfg, device, eos
        self.teacher = models.teacher
        self.module = DistillStudent(models.student, [], models.teacher_dim)
        self.engine: Engine | None = None
        m = cfg.minillm
        budget = min(prompt_budget(models.student, cfg.select.max_new_tokens, cfg.select.max_prompt_len),
                     prompt_budget(models.teacher, cfg.select.max_new_tokens, cfg.select.max_prompt_len))
        self.prompts = PromptSet([clip_prompt(e.prompt, budget) for e in load_examples(cfg.data.data_dir, "train")])
        self.sampler = DistributedBlockSampler(len(self.prompts), rank=rank(), world_size=world_size(), shuffle=True,
                                               seed=cfg.seed)
        batch = cfg.optim.micro_batch_size
        self.prompt_kwargs = {"batch_size": batch, "drop_last": True, "num_workers": 0, "collate_fn": list}
        if self.sampler.samples_per_rank < batch:
            raise ValueError(f"{len(self.prompts)} training prompts give each of {world_size()} ranks fewer than "
                             f"one batch of {batch}: lower --micro-batch-size")
        pt_dir = m.pt_data_dir or cfg.data.data_dir
        pt_task = cfg.data.task if Path(pt_dir).resolve() == Path(cfg.data.data_dir).resolve() else "lm"
        self.pt_data = train_loader(pt_dir, cfg.data.seq_len, batch, rank(), world_size(), cfg.seed,
                                    cfg.data.num_workers, pin=device.type == "cuda", task=pt_task)
        self.info = {"loss": "minillm", "weights": None, "layer_map": [], "mix_alpha": m.mix_alpha,
                     "pt_weight": m.pt_weight, "max_new_tokens": cfg.select.max_new_tokens,
                     "length_norm": m.length_norm}
        self.tokens_per_step = None  # responses vary in length: throughput counts the tokens rolled out

    @classmethod
    def for_run(cls, cfg: RunConfig, models: Models, device: torch.device, tokenizer: Any = None) -> MiniLLMStep:
        eos = models.teacher.config.eos_token_id if tokenizer is None else tokenizer.eos_token_id
        return cls(cfg, models, device, int(eos if eos is not None else 0))

    @staticmethod
    def needs_teacher(cfg: RunConfig) -> bool:
        return True

    def batches_per_epoch(self) -> int:
        return self.sampler.samples_per_rank // self.cfg.optim.micro_batch_size

    def bind(self, engine: Engine, total_micro_steps: int) -> None:
        self.engine = engine

    def stream(self, start_batch: int) -> Iterator[tuple[list[list[int]], Any]]:
        prompts = endless_batches(self.prompts, self.sampler, self.prompt_kwargs, self.cfg.seed, start_batch)
        pt = endless_batches(*self.pt_data[:2], self.pt_data[2], self.cfg.seed, start_batch)
        while True:
            yield next(prompts), next(pt)

    def compute(self, batch: tuple[list[list[int]], Any], step: int, micro: int) -> StepOutput:
        prompts, pt_block = batch
        m = self.cfg.minillm
        # Sampling has its own generator: a resumed run draws the same responses as an uninterrupted one.
        gen = torch.Generator(device=self.device).manual_seed((self.cfg.seed * 1_000_003 + step * 1009 + micro) * 97
                                                               + rank())
        roll = rollout(self.engine.module.student, self.teacher, prompts, self.eos, self.cfg.select.max_new_tokens,
                       m.mix_alpha, gen)
        pt = as_batch(pt_block, self.device) if m.pt_weight > 0 else None
        loss, parts = self.forward(roll, pt)
        return StepOutput(loss, parts, int(roll.attention_mask.sum()))

    def forward(self, roll: Rollout, pt: dict[str, Tensor] | None) -> tuple[Tensor, dict[str, Tensor]]:
        """One student forward over rollout rows and pretraining rows together; the surrogate + pt loss."""
        with torch.no_grad():
            t_logits = self.teacher(input_ids=roll.input_ids, attention_mask=roll.attention_mask,
                                    use_cache=False).logits
        ids, attn = roll.input_ids, roll.attention_mask
        n_roll, width = ids.shape
        if pt is not None:
            width = max(width, pt["input_ids"].shape[1])
            ids = torch.cat([pad_to(ids, width, 0), pad_to(pt["input_ids"], width, 0)])
            attn = torch.cat([pad_to(attn, width, 0), pad_to(torch.ones_like(pt["input_ids"]), width, 0)])
        logits, _ = self.engine(ids, attention_mask=attn)
        length = roll.input_ids.shape[1]
        loss, parts = minillm_loss(logits[:n_roll, :length], t_logits, roll.labels, roll.logq, roll.logp,
                                   roll.logmix, self.cfg.minillm.length_norm)
        parts["rl"] = loss.detach()
        if pt is not None:
            labels = pt["labels"].reshape(-1)
            rows = logits[n_roll:, : pt["labels"].shape[1]].reshape(-1, logits.shape[-1])
            pt_loss = masked_mean(ll.cross_entropy_rows(rows, labels), label_mask(labels))
            parts["pt"] = pt_loss.detach()
            loss = loss + self.cfg.minillm.pt_weight * pt_loss
        if not bool(torch.isfinite(loss)):
            raise ValueError(f"MiniLLM loss is {loss.item()} (parts { {k: v.item() for k, v in parts.items()} }): "
                             "lower the learning rate")
        return loss, parts

    def log_key(self, key: str) -> str:
        return f"loss/{key}" if key in LOSS_PARTS else f"minillm/{key}"

    def after_update(self) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
