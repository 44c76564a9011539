"""Model passes for evaluation: perplexity over windows, hidden-state sampling, generations.

Everything runs under `torch.inference_mode()`; logits are scored in fp32 even when the model is BF16.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from tqdm import tqdm

if TYPE_CHECKING:  # transformers is only needed for the annotation
    from transformers import PreTrainedModel

from Code.evaluation.metrics import perplexity_from_nll, window_nll
from Code.modeling.families import context_length, decoder_forward

# Fixed prompts: short, generic English openings that a model trained on Wikipedia-like text can continue.
PROMPTS = [
    "The history of the city",
    "In 1998, the band released",
    "The game was played on",
    "Scientists have discovered that",
]


def _batches(windows: Sequence[dict], batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Consecutive windows of equal length stacked together (only the last window may be shorter)."""
    group: list[dict] = []
    for item in windows:
        if group and (len(group) == batch_size or len(item["input_ids"]) != len(group[0]["input_ids"])):
            yield torch.stack([g["input_ids"] for g in group]), torch.stack([g["labels"] for g in group])
            group = []
        group.append(item)
    if group:
        yield torch.stack([g["input_ids"] for g in group]), torch.stack([g["labels"] for g in group])


@torch.inference_mode()
def perplexity(
    model: PreTrainedModel,
    windows: Sequence[dict],
    device: torch.device | str = "cpu",
    batch_size: int = 8,
    desc: str = "ppl",
    progress: bool = True,
) -> dict[str, float | int]:
    """Perplexity of `model` over EvalWindows items (each scored token once): {ppl, nll, tokens}."""
    model.eval()
    total, count = 0.0, 0
    bar = tqdm(total=len(windows), desc=desc, unit="win", disable=not progress, leave=False, dynamic_ncols=True)
    for input_ids, labels in _batches(windows, batch_size):
        logits = model(input_ids.to(device)).logits
        nll, n = window_nll(logits, labels)
        total, count = total + nll, count + n
        bar.update(len(input_ids))
    bar.close()
    return {"ppl": perplexity_from_nll(total, count), "nll": total / max(count, 1), "tokens": count}


@torch.inference_mode()
def collect_hidden(
    model: PreTrainedModel,
    blocks: Iterable[Tensor],
    indices: Sequence[int],
    device: torch.device | str = "cpu",
    desc: str = "hidden",
    progress: bool = True,
) -> list[Tensor]:
    """Hidden states at `indices` (HF output_hidden_states numbering) for every position of `blocks`.

    `blocks` yields LongTensors (B, T); returns one fp32 CPU tensor (N, D) per index, N = all positions.
    """
    model.eval()
    out: list[list[Tensor]] = [[] for _ in indices]
    for ids in tqdm(list(blocks), desc=desc, unit="batch", disable=not progress, leave=False):
        _, hs = decoder_forward(model, ids.to(device), None, output_hidden_states=True)  # no head: no logits
        for slot, idx in zip(out, indices, strict=True):
            slot.append(hs[idx].float().reshape(-1, hs[idx].shape[-1]).cpu())
    return [torch.cat(slot) for slot in out]


@torch.inference_mode()
def generate_samples(
    model: PreTrainedModel,
    tokenizer,
    prompts: Sequence[str] = PROMPTS,
    max_new_tokens: int = 32,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> list[dict[str, str]]:
    """Greedy and seeded-sampling continuations (top-k 50) of each prompt: [{prompt, greedy, sampled}]."""
    model.eval()
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else model.config.eos_token_id
    results = []
    for i, prompt in enumerate(prompts):
        ids = torch.tensor([tokenizer.encode(prompt)], dtype=torch.long, device=device)
        ids = ids[:, -(context_length(model.config) - max_new_tokens):]
        common = {"max_new_tokens": max_new_tokens, "pad_token_id": eos, "attention_mask": torch.ones_like(ids)}
        greedy = model.generate(ids, do_sample=False, **common)
        # a seed per prompt so one prompt's sample does not depend on the ones before it
        torch.manual_seed(seed + i)
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(seed + i)
        sampled = model.generate(ids, do_sample=True, top_k=50, temperature=1.0, **common)
        n = ids.shape[1]
        results.append({
            "prompt": prompt,
            "greedy": tokenizer.decode(greedy[0, n:], skip_special_tokens=True),
            "sampled": tokenizer.decode(sampled[0, n:], skip_special_tokens=True),
        })
    return results
