"""MiniLLM training: reverse KL by policy gradient on student samples (see minillm.py for the method).

    python Code/train_minillm.py --task dolly --data-dir Code/data/dolly --teacher SFT_TEACHER \
        --student SFT_STUDENT --mix-alpha 0.2 --max-new-tokens 256 --max-steps 1000

Usually started through `scripts/dolly/minillm.sh`. Same flags (`arguments.py`), engines (DeepSpeed or
DDP), checkpoints, resume and run-directory outputs as `train_related.py`: `metrics.jsonl`,
`checkpoints/`, `best/` and `final/` loadable by `from_pretrained`. Per micro-batch: one rollout of
`--micro-batch-size` training prompts (teacher-mixed sampling), then one update on the MiniLLM surrogate
plus `--pt-weight` times the LM loss on a batch of `--pt-data-dir` (default: the training data, prompts
masked).
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from Code.arguments import ConfigError, parse_args
from Code.distributed_indexed import DistributedBlockSampler
from Code.instruction_data import clip_prompt, load_examples
from Code.modeling.generation import prompt_budget
from Code.modeling.student import DistillStudent
from Code.objectives import logit as ll
from Code.objectives.masking import label_mask, masked_mean
from Code.objectives.minillm import Rollout, minillm_loss, rollout
from Code.objectives.registry import parse_losses
from Code.tokenization import load_tokenizer
from Code.train_related import _batches, _device, _prepare_run_dir, _reduce_mean, _single_process_env, evaluate_lm
from Code.training.checkpointing import resume_training, save_hf_folder, save_training_state
from Code.training.distill_step import LossPlan
from Code.training.engines import init_distributed, make_engine
from Code.training.metrics_log import MetricsLog
from Code.training.selection import Selection
from Code.training.setup import as_batch, build_models, train_loader, valid_loader
from Code.utils import barrier, fail, is_main, print0, rank, seed_everything, world_size


class PromptSet(Dataset):
    """Training prompts (token ids), clipped from the left to fit beside the generated response."""

    def __init__(self, prompts: list[list[int]]) -> None:
        self.prompts = prompts

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, i: int) -> list[int]:
        return self.prompts[int(i)]


LOSS_PARTS = ("single", "long", "rl", "pt")  # logged as loss/<name>; the rest are rollout statistics


def _log_name(key: str) -> str:
    return key if key == "loss" else (f"loss/{key}" if key in LOSS_PARTS else f"minillm/{key}")


def _pad_to(x: torch.Tensor, width: int, value: int) -> torch.Tensor:
    return F.pad(x, (0, width - x.shape[1]), value=value)


def minillm_forward(engine, teacher, roll: Rollout, pt: dict[str, torch.Tensor] | None, pt_weight: float,
                    length_norm: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One student forward over rollout rows and pretraining rows together (one graph for any engine)."""
    with torch.no_grad():
        t_logits = teacher(input_ids=roll.input_ids, attention_mask=roll.attention_mask, use_cache=False).logits
    ids, attn = roll.input_ids, roll.attention_mask
    n_roll, width = ids.shape
    if pt is not None:
        width = max(width, pt["input_ids"].shape[1])
        pt_attn = torch.ones_like(pt["input_ids"])
        ids = torch.cat([_pad_to(ids, width, 0), _pad_to(pt["input_ids"], width, 0)])
        attn = torch.cat([_pad_to(attn, width, 0), _pad_to(pt_attn, width, 0)])
    logits, _ = engine(ids, attention_mask=attn)
    L = roll.input_ids.shape[1]
    loss, parts = minillm_loss(logits[:n_roll, :L], t_logits, roll.labels, roll.logq, roll.logp, roll.logmix,
                               length_norm)
    parts["rl"] = loss.detach()
    if pt is not None:
        labels = pt["labels"]
        rows = logits[n_roll:, : labels.shape[1]].reshape(-1, logits.shape[-1])
        flat = labels.reshape(-1)
        pt_loss = masked_mean(ll.cross_entropy_rows(rows, flat), label_mask(flat))
        parts["pt"] = pt_loss.detach()
        loss = loss + pt_weight * pt_loss
    if not bool(torch.isfinite(loss)):
        raise ValueError(f"MiniLLM loss is {loss.item()} (parts { {k: v.item() for k, v in parts.items()} }): "
                         "lower the learning rate")
    return loss, parts


def run(args: argparse.Namespace) -> None:
    if args.task != "dolly":
        raise ConfigError("MiniLLM samples responses to prompts: pass --task dolly with a data dir converted by "
                          "python Code/data_download.py --dataset dolly")
    init_distributed(args.launcher)
    device = _device()
    seed_everything(args.seed)
    out = _prepare_run_dir(args)
    plan = LossPlan.from_terms(parse_losses("rkl"))  # what MiniLLM needs: a teacher and its logits
    on_gpu = device.type == "cuda"
    teacher_dtype = torch.bfloat16 if (on_gpu and args.precision == "bf16") else torch.float32
    models = build_models(args, plan, device, teacher_dtype)
    teacher = models.teacher
    tok_dir = Path(args.data_dir) / "tokenizer"
    tokenizer = load_tokenizer(str(tok_dir)) if tok_dir.is_dir() else None
    eos = int(teacher.config.eos_token_id if teacher.config.eos_token_id is not None else 0)
    if tokenizer is not None:
        eos = int(tokenizer.eos_token_id)

    budget = min(prompt_budget(models.student, args.max_new_tokens, args.max_prompt_len),
                 prompt_budget(teacher, args.max_new_tokens, args.max_prompt_len))
    prompts = PromptSet([clip_prompt(e.prompt, budget) for e in load_examples(args.data_dir, "train")])
    sampler = DistributedBlockSampler(len(prompts), rank=rank(), world_size=world_size(), shuffle=True,
                                      seed=args.seed)
    prompt_kwargs = {"batch_size": args.micro_batch_size, "drop_last": True, "num_workers": 0, "collate_fn": list}
    if sampler.samples_per_rank < args.micro_batch_size:
        raise ValueError(f"{len(prompts)} training prompts give each of {world_size()} ranks fewer than one "
                         f"batch of {args.micro_batch_size}: lower --micro-batch-size")
    pt_dir = args.pt_data_dir or args.data_dir
    pt_task = args.task if Path(pt_dir).resolve() == Path(args.data_dir).resolve() else "lm"
    pt_blocks, pt_sampler, pt_kwargs = train_loader(pt_dir, args.seq_len, args.micro_batch_size, rank(),
                                                    world_size(), args.seed, args.num_workers, pin=on_gpu,
                                                    task=pt_task)
    steps_per_epoch = sampler.samples_per_rank // (args.micro_batch_size * args.grad_accum)
    total_steps = args.max_steps or max(1, math.ceil(args.epochs * steps_per_epoch))
    valid = valid_loader(args.data_dir, args.seq_len, args.micro_batch_size, rank(), world_size(), task=args.task)

    engine = make_engine(args, DistillStudent(models.student, [], models.teacher_dim), total_steps, device)
    selection = Selection(args, tokenizer, device, rank(), world_size())
    step, best, ckpt_root = 0, math.inf, out / "checkpoints"
    if args.resume:
        step, best = resume_training(engine, ckpt_root, total_steps)

    info = {"teacher": args.teacher, "student_layers": models.student_layers, "layer_map": [],
            "data_dir": str(Path(args.data_dir).resolve()), "loss": "minillm", "weights": None,
            "seq_len": args.seq_len, "task": args.task, "mix_alpha": args.mix_alpha, "pt_weight": args.pt_weight,
            "max_new_tokens": args.max_new_tokens, "length_norm": not args.no_length_norm}
    log = MetricsLog(out, tensorboard=not args.no_tensorboard) if is_main() else None
    print0(f"run {out}: MiniLLM, {total_steps} steps of {args.micro_batch_size * args.grad_accum * world_size()} "
           f"prompts, mix alpha {args.mix_alpha}, {args.max_new_tokens} new tokens, pt weight {args.pt_weight}, "
           f"{world_size()} rank(s) on {device.type}")

    prompt_batches = _batches(prompts, sampler, prompt_kwargs, args.seed, step * args.grad_accum)
    pt_batches = _batches(pt_blocks, pt_sampler, pt_kwargs, args.seed, step * args.grad_accum)
    engine.train()  # from_pretrained returns eval mode: without this, dropout would start at the first evaluation
    sums: dict[str, torch.Tensor] = {}
    count, t_last, train_start, tokens_seen = 0, time.perf_counter(), time.perf_counter(), 0
    while step < total_steps:
        for micro in range(args.grad_accum):
            # Sampling has its own generator: a resumed run draws the same responses as an uninterrupted one.
            gen = torch.Generator(device=device).manual_seed(
                (args.seed * 1_000_003 + step * 1009 + micro) * 97 + rank())
            roll = rollout(engine.module.student, teacher, next(prompt_batches), eos, args.max_new_tokens,
                           args.mix_alpha, gen)
            pt = as_batch(next(pt_batches), device) if args.pt_weight > 0 else None
            loss, parts = minillm_forward(engine, teacher, roll, pt, args.pt_weight, not args.no_length_norm)
            engine.backward(loss)
            engine.step()
            parts["loss"] = loss.detach()
            tokens_seen += int(roll.attention_mask.sum())
            for k, v in parts.items():
                sums[k] = sums[k] + v if k in sums else v.clone()
            count += 1
        step += 1

        if step % args.log_interval == 0 or step == total_steps:
            means = _reduce_mean(sums, count)
            elapsed = time.perf_counter() - t_last
            record = {"kind": "train", "step": step, "lr": engine.get_lr()[0],
                      "tokens_per_s": tokens_seen * world_size() / elapsed,
                      **{_log_name(k): v for k, v in means.items()}}
            if log is not None:
                log.write(record)
                print(f"step {step}/{total_steps} " + " ".join(f"{k.removeprefix('loss/')}={v:.4g}"
                                                               for k, v in record.items() if k.startswith("loss")),
                      flush=True)
            sums, count, t_last, tokens_seen = {}, 0, time.perf_counter(), 0

        if step % args.eval_interval == 0 or step == total_steps:
            val = evaluate_lm(engine, valid, args.eval_iters, device)
            score, extra = selection.measure(engine.module.student, val)
            if log is not None:
                log.write({"kind": "val", "step": step, "val/loss": val,
                           "val/ppl": math.exp(val) if val < 50 else math.inf, **extra})
            if math.isfinite(score) and score < best:
                best = score
                if is_main():
                    save_hf_folder(engine.module.student, tokenizer, out / "best",
                                   {**info, "step": step, "val_loss": val, **extra})
            barrier()
            t_last = time.perf_counter()

        if step % args.save_interval == 0 or step == total_steps:
            save_training_state(engine, ckpt_root, step, {"step": step, "best_val": best},
                                {"torch_rng": torch.get_rng_state()}, keep=args.keep_checkpoints)
            t_last = time.perf_counter()

    if is_main():
        save_hf_folder(engine.module.student, tokenizer, out / "final", {**info, "step": step})
        log.write({"kind": "done", "step": step, "train_time_s": time.perf_counter() - train_start,
                   **selection.summary(best), "world_size": world_size(),
                   "device": device.type})
        log.close()
    barrier()
    print0(f"done: {out}/final (best validation {selection.describe(best)} in {out}/best)")


def main(argv: list[str] | None = None) -> None:
    _single_process_env()
    try:
        run(parse_args(argv))
    except (ValueError, FileNotFoundError) as exc:
        if os.environ.get("DISTILL_DEBUG"):
            raise
        fail(f"[rank {rank()}] {exc}" if world_size() > 1 else str(exc))


if __name__ == "__main__":
    main()
