"""Batched response generation for prompt token ids, and ROUGE-L against references.

Shared by instruction evaluation (`eval_dolly.py`), checkpoint selection by ROUGE-L during training
(`selection.py`) and sequence-level KD (`seqkd_generate.py`). Prompts are left-padded so every row's
last prompt token sits at the same column; GPT-2 then needs position ids counted from each row's first
real token, which Hugging Face's `generate` derives from the attention mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from Code.data_pipeline.instruction_data import clip_prompt
from Code.modeling.families import context_length


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int,
             device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Prompts -> input ids (B, P) and attention mask (B, P), padding on the left."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        if len(p):
            ids[i, width - len(p):] = torch.as_tensor(list(p), dtype=torch.long)
            mask[i, width - len(p):] = 1
    return ids.to(device), mask.to(device)


def prompt_budget(model, max_new_tokens: int, max_prompt_len: int | None = None) -> int:
    """Prompt tokens that fit beside `max_new_tokens` in the model's context (and under `max_prompt_len`)."""
    context = context_length(model.config)
    room = context - max_new_tokens
    if room < 1:
        raise ValueError(f"--max-new-tokens {max_new_tokens} leaves no room for a prompt in the model's "
                         f"{context}-token context: lower it")
    return min(room, max_prompt_len) if max_prompt_len else room


def cut_at_eos(tokens: Sequence[int], eos_id: int) -> list[int]:
    """Tokens before the first EOS (generation pads finished rows with EOS)."""
    out = list(tokens)
    return out[: out.index(eos_id)] if eos_id in out else out


@torch.no_grad()
def generate_responses(model, prompts: Sequence[Sequence[int]], eos_id: int, max_new_tokens: int,
                       batch_size: int = 8, do_sample: bool = False, temperature: float = 1.0,
                       top_p: float = 1.0, seed: int = 0, max_prompt_len: int | None = None,
                       device: torch.device | str | None = None) -> list[list[int]]:
    """Response ids (without EOS) per prompt: greedy, or sampled with a seed; the model is left in its mode."""
    device = device or next(model.parameters()).device
    budget = prompt_budget(model, max_new_tokens, max_prompt_len)
    was_training = model.training
    model.eval()
    out: list[list[int]] = []
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0} if do_sample \
        else {"do_sample": False}
    try:
        with torch.random.fork_rng(devices=[device] if torch.device(device).type == "cuda" else []):
            torch.manual_seed(seed)
            for start in range(0, len(prompts), batch_size):
                chunk = [clip_prompt(p, budget) for p in prompts[start : start + batch_size]]
                ids, mask = left_pad(chunk, eos_id, device)
                seqs = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                      pad_token_id=eos_id, eos_token_id=eos_id, use_cache=True, **sampling)
                out.extend(cut_at_eos(row, eos_id) for row in seqs[:, ids.shape[1]:].tolist())
    finally:
        model.train(was_training)
    return out


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """ROUGE-L F-measure (x100) per pair, as the rouge-score package computes it (stemmed, lowercased)."""
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return [100.0 * scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references,
                                                                                     strict=True)]
