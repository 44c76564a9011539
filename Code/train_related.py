"""Distil a frozen GPT-2 teacher into a student under DeepSpeed (or DDP), one readable loop.

    python Code/train_related.py --teacher PATH --data-dir Code/data/wikitext-2 --loss wd --max-steps 100

Usually started through `Code/wd_stu_base.sh` / `Code/mse_stu_base.sh`, which map environment variables
to these flags. Every flag lives in `arguments.py`.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import socket
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm import tqdm

from Code.arguments import ConfigError, parse_args
from Code.modeling.student import DistillStudent
from Code.objectives.registry import LossOptions, parse_losses
from Code.tokenization import load_tokenizer
from Code.training.checkpointing import resume_training, save_hf_folder, save_training_state
from Code.training.distill_step import LossPlan, distill_forward
from Code.training.engines import init_distributed, make_engine
from Code.training.metrics_log import MetricsLog
from Code.training.selection import Selection
from Code.training.setup import as_batch, build_critics, build_models, train_loader, valid_loader
from Code.utils import atomic_write_json, barrier, fail, is_main, print0, rank, seed_everything, world_size


def _single_process_env() -> None:
    """Let plain `python train_related.py` run as one rank without a launcher."""
    if "RANK" in os.environ:
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))


def _device() -> torch.device:
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def _prepare_run_dir(args: argparse.Namespace) -> Path:
    out = Path(args.out_dir)
    # A run that failed before its first log line left only args.json: retrying it must not need --overwrite.
    started = any((out / name).exists() for name in ("metrics.jsonl", "checkpoints", "best", "final"))
    if started and not (args.resume or args.overwrite):
        raise ConfigError(f"{out} already holds a run: pass --resume to continue it or --overwrite to start over")
    if args.overwrite and is_main():
        for name in ("checkpoints", "best", "final", "tensorboard", "eval"):
            shutil.rmtree(out / name, ignore_errors=True)
        (out / "metrics.jsonl").unlink(missing_ok=True)
    barrier()
    if is_main():
        atomic_write_json(out / "args.json", vars(args))
    return out


def _reduce_mean(values: dict[str, torch.Tensor], count: int) -> dict[str, float]:
    """Average logged values over the interval and across ranks: the only host sync of a log interval."""
    if not values:
        return {}
    keys = sorted(values)
    stacked = torch.stack([values[k].float() for k in keys]) / max(count, 1)
    if world_size() > 1:
        dist.all_reduce(stacked)
        stacked /= world_size()
    return dict(zip(keys, stacked.tolist(), strict=True))


@torch.no_grad()
def evaluate_lm(engine, loader: DataLoader, iters: int, device: torch.device) -> float:
    """Mean next-token cross-entropy of the student on up to `iters` validation batches per rank."""
    engine.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)
    for i, block in enumerate(loader):
        if i >= iters:
            break
        batch = as_batch(block, device)
        logits, _ = engine(batch["input_ids"])
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), batch["labels"].flatten(),
                                                 reduction="sum")
        scored = (batch["labels"] != -100).sum()  # task dolly: only response targets count
        total += torch.stack([loss.double(), scored.double()])
    if world_size() > 1:
        dist.all_reduce(total)
    engine.train()
    return (total[0] / total[1].clamp(min=1)).item()


def _batches(blocks, sampler, loader_kwargs: dict, seed: int, start_batch: int):
    """Endless batches over epochs; starts `start_batch` batches in, as the interrupted run would have."""
    per_epoch = sampler.samples_per_rank // loader_kwargs["batch_size"]
    epoch, offset = divmod(start_batch, per_epoch)
    while True:
        sampler.set_epoch(epoch)
        sampler.set_start(offset * loader_kwargs["batch_size"])
        # An own generator keeps worker seeding off the global RNG, which dropout replays on resume.
        loader = DataLoader(blocks, sampler=sampler, generator=torch.Generator().manual_seed(seed + epoch),
                            **loader_kwargs)
        yield from loader
        epoch, offset = epoch + 1, 0


def run(args: argparse.Namespace) -> None:
    init_distributed(args.launcher)
    device = _device()
    seed_everything(args.seed)
    out = _prepare_run_dir(args)
    terms = parse_losses(args.loss, args.weights)
    plan = LossPlan.from_terms(terms)
    on_gpu = device.type == "cuda"
    teacher_dtype = torch.bfloat16 if (on_gpu and args.precision == "bf16") else torch.float32
    models = build_models(args, plan, device, teacher_dtype)
    tokenizer = load_tokenizer(str(Path(args.data_dir) / "tokenizer")) \
        if (Path(args.data_dir) / "tokenizer").is_dir() else None

    blocks, sampler, loader_kwargs = train_loader(
        args.data_dir, args.seq_len, args.micro_batch_size, rank(), world_size(), args.seed,
        args.num_workers, pin=on_gpu, task=args.task)
    steps_per_epoch = sampler.samples_per_rank // (args.micro_batch_size * args.grad_accum)
    total_steps = args.max_steps or max(1, math.ceil(args.epochs * steps_per_epoch))
    valid = valid_loader(args.data_dir, args.seq_len, args.micro_batch_size, rank(), world_size(), task=args.task)
    selection = Selection(args, tokenizer, device, rank(), world_size())  # best/ by loss or by ROUGE-L

    options = LossOptions(temperature=args.temperature, kd_topk=args.kd_topk, skew_alpha=args.skew_alpha,
                          jsd_beta=args.jsd_beta, mse_normalize=args.mse_normalize,
                          cos_last_only=args.cos_last_only, swd_projections=args.swd_projections,
                          swd_seed=args.seed, layer_ids=tuple(s for s, _ in models.layer_map) or None)
    model = DistillStudent(models.student, [s for s, _ in models.layer_map], models.teacher_dim)
    teacher_idx = [t for _, t in models.layer_map]
    engine = make_engine(args, model, total_steps, device)
    critics = None
    if plan.needs_critic:
        critics = build_critics(args, len(models.layer_map), models.teacher_dim,
                                total_steps * args.grad_accum, device)

    step, best_val, ckpt_root = 0, math.inf, out / "checkpoints"
    if args.resume:
        step, best_val = resume_training(engine, ckpt_root, total_steps, critics)

    info = {"teacher": None if args.no_teacher else args.teacher, "student_layers": models.student_layers,
            "layer_map": [list(p) for p in models.layer_map], "data_dir": str(Path(args.data_dir).resolve()),
            "loss": args.loss, "weights": args.weights, "seq_len": args.seq_len, "task": args.task}
    tokens_per_step = args.micro_batch_size * args.seq_len * args.grad_accum * world_size()
    log = MetricsLog(out, tensorboard=not args.no_tensorboard) if is_main() else None
    print0(f"run {out}: {total_steps} steps of {tokens_per_step} tokens, loss {args.loss}, "
           f"student {sum(p.numel() for p in models.student.parameters()) / 1e6:.1f}M params, "
           f"{world_size()} rank(s) on {device.type}, layer map {models.layer_map}")

    batches = _batches(blocks, sampler, loader_kwargs, args.seed, step * args.grad_accum)
    bar = tqdm(total=total_steps, initial=step, disable=not is_main() or args.no_progress,
               dynamic_ncols=True, unit="step")
    sums: dict[str, torch.Tensor] = {}
    count, t_last, train_start = 0, time.perf_counter(), time.perf_counter()
    engine.train()  # a student loaded from a checkpoint arrives in eval mode: dropout must be on from step 1
    while step < total_steps:
        for _ in range(args.grad_accum):
            batch = as_batch(next(batches), device)
            try:
                loss, parts = distill_forward(engine, models.teacher, batch, plan, teacher_idx, critics, options,
                                              step=step)
            except ValueError as exc:  # NonFiniteLossError names the term; add where it happened
                raise ValueError(f"step {step + 1}: {exc}") from exc
            engine.backward(loss)
            engine.step()
            if critics is not None:
                critics.step_scheduler()
            parts["loss"] = loss.detach()
            for k, v in parts.items():
                sums[k] = sums[k] + v if k in sums else v.clone()
            count += 1
        step += 1
        bar.update(1)

        if step % args.log_interval == 0 or step == total_steps:
            means = _reduce_mean(sums, count)
            elapsed = time.perf_counter() - t_last
            record = {"kind": "train", "step": step, "tokens": step * tokens_per_step,
                      "lr": engine.get_lr()[0], "tokens_per_s": count / args.grad_accum * tokens_per_step / elapsed,
                      **{(k if k == "loss" else f"loss/{k}"): v for k, v in means.items()}}
            if log is not None:
                log.write(record)
                shown = {k.removeprefix("loss/"): f"{v:.3g}" for k, v in record.items()
                         if k.startswith("loss") and "/" not in k.removeprefix("loss/")}
                bar.set_postfix(**shown, tok_s=f"{record['tokens_per_s']:.0f}")
                if args.no_progress:
                    print(f"step {step}/{total_steps} " + " ".join(f"{k}={v}" for k, v in shown.items()), flush=True)
            sums, count, t_last = {}, 0, time.perf_counter()

        if step % args.eval_interval == 0 or step == total_steps:
            val = evaluate_lm(engine, valid, args.eval_iters, device)
            score, extra = selection.measure(engine.module.student, val)  # val, or -ROUGE-L (lower is better)
            if log is not None:
                log.write({"kind": "val", "step": step, "val/loss": val,
                           "val/ppl": math.exp(val) if val < 50 else math.inf, **extra})
            if math.isfinite(val) and math.isfinite(score) and score < best_val:  # a NaN model is never "best"
                best_val = score
                if is_main():
                    save_hf_folder(engine.module.student, tokenizer, out / "best",
                                   {**info, "step": step, "val_loss": val, **extra})
            barrier()
            t_last = time.perf_counter()  # evaluation time stays out of the next interval's throughput

        if step % args.save_interval == 0 or step == total_steps:
            state = {"torch_rng": torch.get_rng_state(),
                     "critics": critics.state_dict() if critics is not None else None,
                     "student_checksum": {n: p.detach().double().sum().item()
                                          for n, p in engine.module.named_parameters()}}
            save_training_state(engine, ckpt_root, step, {"step": step, "best_val": best_val}, state,
                                keep=args.keep_checkpoints)
            t_last = time.perf_counter()
    bar.close()

    if is_main():
        save_hf_folder(engine.module.student, tokenizer, out / "final", {**info, "step": step})
        log.write({"kind": "done", "step": step, "train_time_s": time.perf_counter() - train_start,
                   **selection.summary(best_val), "world_size": world_size(), "device": device.type})
        log.close()
    barrier()
    print0(f"done: {out}/final (best validation {selection.describe(best_val)} in {out}/best)")


def main(argv: list[str] | None = None) -> None:
    _single_process_env()
    try:
        args = parse_args(argv)
        run(args)
    except (ValueError, FileNotFoundError) as exc:
        if os.environ.get("DISTILL_DEBUG"):
            raise
        fail(f"[rank {rank()}] {exc}" if world_size() > 1 else str(exc))


if __name__ == "__main__":
    main()
