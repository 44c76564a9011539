"""Which checkpoint is `best/`: the lowest validation loss (default), or the highest ROUGE-L of greedy
responses to a few validation prompts (`--select-by rougeL`, instruction data only).

The loop asks `Selection.measure` at each evaluation for a score where lower is better (the loss, or
minus ROUGE-L) plus the values to log; it never needs to know which criterion is in use.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.distributed as dist

from Code.config import SelectionConfig
from Code.data_pipeline.instruction_data import load_examples
from Code.modeling.generation import generate_responses, rouge_l


class Selection:
    def __init__(self, cfg: SelectionConfig, data_dir: str | Path, batch_size: int, tokenizer,
                 device: torch.device, rank: int = 0, world: int = 1) -> None:
        self.by = cfg.select_by
        self.device = device
        if self.by != "rougeL":
            return
        if tokenizer is None:
            raise ValueError(f"--select-by rougeL decodes generations, but {data_dir} has no tokenizer/ "
                             "folder: reconvert the data with python Code/data_download.py")
        examples = load_examples(data_dir, "valid", limit=cfg.val_prompts)
        mine = examples[rank::world]  # each rank scores its share; sums are all-reduced
        self.tokenizer = tokenizer
        self.prompts = [e.prompt for e in mine]
        self.references = [e.reference if e.reference is not None else tokenizer.decode(e.response)
                           for e in mine]
        self.eos = int(tokenizer.eos_token_id)
        self.max_new_tokens = cfg.max_new_tokens
        self.max_prompt_len = cfg.max_prompt_len
        self.batch_size = batch_size

    @torch.no_grad()
    def measure(self, model, val_loss: float) -> tuple[float, dict[str, float]]:
        """(score, lower is better; values to log) for the student `model` after an evaluation."""
        if self.by != "rougeL":
            return val_loss, {}
        total = torch.zeros(2, dtype=torch.float64, device=self.device)
        if self.prompts:
            responses = generate_responses(model, self.prompts, self.eos, self.max_new_tokens, self.batch_size,
                                           max_prompt_len=self.max_prompt_len, device=self.device)
            texts = [self.tokenizer.decode(r, skip_special_tokens=True) for r in responses]
            scores = rouge_l(texts, self.references)
            total += torch.tensor([sum(scores), len(scores)], dtype=torch.float64, device=self.device)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(total)
        rouge = (total[0] / total[1]).item() if total[1] > 0 else math.nan
        return -rouge, {"val/rougeL": rouge}

    def summary(self, best: float) -> dict[str, float]:
        """The run's best selection value, under its own name, for the closing metrics line."""
        return {"best_val_loss": best} if self.by != "rougeL" else {"best_val_rougeL": -best}

    def describe(self, best: float) -> str:
        return f"loss {best:.4f}" if self.by != "rougeL" else f"ROUGE-L {-best:.2f}"
