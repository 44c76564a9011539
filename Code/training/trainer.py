"""The one training loop. A `Trainer` owns a run: setup, resume, the loop, logging, evaluation, `best/`
selection and saving; a `Step` (distillation or MiniLLM) owns what one micro-batch does.

    cfg = parse_config(argv)                       # Code/arguments.py: flags -> typed RunConfig
    Trainer(cfg, DistillStep).run()                # or MiniLLMStep

Step numbers are 1-based everywhere: the log line, metrics.jsonl, checkpoints `step<N>` and error
messages all name the optimizer step being taken or just completed.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import shlex
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from Code.config import RunConfig
from Code.data_pipeline.tokenization import load_tokenizer
from Code.objectives.registry import NonFiniteLossError
from Code.origin import code_state
from Code.run_folder import newest_whole
from Code.training.checkpointing import resume_training, save_hf_folder, save_training_state
from Code.training.engines import Engine, init_distributed, make_engine
from Code.training.env_faults import disk_message, folder_bytes
from Code.training.metrics_log import MetricsLog, mean_over_ranks
from Code.training.preflight import check_run, check_run_dir
from Code.training.rng_state import capture_rng
from Code.training.run_guard import record_start, release_lock, take_lock
from Code.training.selection import Selection
from Code.training.setup import build_models, valid_loader
from Code.training.steps import Step, StepOutput
from Code.training.stops import StopWatch
from Code.training.validation import evaluate_lm
from Code.utils import barrier, is_main, pick_device, print0, quiet_third_party, rank, seed_everything, world_size


def single_process_env() -> None:
    """Let plain `python Code/train_related.py` run as one rank without a launcher."""
    if "RANK" in os.environ:
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


def prepare_run_dir(cfg: RunConfig) -> Path:
    """Refuse to mix into a started run (unless --resume/--overwrite) or into a live one (the lock, taken here
    by rank 0 once every rank has passed the checks); clear it on --overwrite; args.json (or, on a resume,
    a line in resumes.jsonl)."""
    out = cfg.out_dir
    check_run_dir(out, cfg.resume, cfg.overwrite)
    barrier()
    if is_main():
        take_lock(out, say=print0)
        if cfg.overwrite:
            for name in ("checkpoints", "best", "final", "tensorboard", "eval"):
                shutil.rmtree(out / name, ignore_errors=True)
            (out / "metrics.jsonl").unlink(missing_ok=True)
            (out / "args.json").unlink(missing_ok=True)
        record_start(out, cfg.flags, world_size(), cfg.resume, code_state())
    barrier()
    return out


def resume_command() -> str:
    """What the user types to continue this run: the launcher with RESUME=1, or this command with --resume."""
    script = os.environ.get("DISTILL_LAUNCH_SCRIPT")
    if script:
        return f"RESUME=1 bash {script} (with the same variables)"
    argv = [a for a in sys.argv if a != "--resume"]
    return shlex.join(["python", *argv, "--resume"])


def train_micro_batch(engine: Engine, step_obj: Step, batch: Any, step: int, micro: int,
                      ckpt_root: Path | None = None) -> StepOutput:
    """One micro-batch: the step's loss, backward, the engine's (accumulating) step; `parts["loss"]` added.
    A non-finite loss is one line naming the step and the checkpoint in `ckpt_root` to go back to."""
    try:
        out = step_obj.compute(batch, step, micro)
    except NonFiniteLossError as exc:
        # the registry's message names the term; this hint names the checkpoint, which only the loop knows
        raise ValueError(f"step {step}: {exc}{nonfinite_hint(ckpt_root)}") from exc
    engine.backward(out.loss)
    engine.step()
    step_obj.after_update()
    out.parts["loss"] = out.loss.detach()
    return out


def nonfinite_hint(ckpt_root: Path | None) -> str:
    """The checkpoint a NaN run can go back to: the newest whole one that really exists (verified), or none."""
    if ckpt_root is None:
        return ""
    tag = newest_whole(ckpt_root)
    return (f"; the newest whole checkpoint is {Path(ckpt_root) / tag} (--resume goes back to it)" if tag
            else "; no whole checkpoint was saved yet")


class Trainer:
    def __init__(self, cfg: RunConfig, step_type: Any) -> None:
        quiet_third_party(cfg.log.verbose)
        with contextlib.redirect_stdout(io.StringIO()) if not cfg.log.verbose else contextlib.nullcontext():
            init_distributed(cfg.optim.launcher)  # DeepSpeed prints "... shm_comm_op built successfully" here
        self.cfg = cfg
        self.device = pick_device("auto")
        seed_everything(cfg.seed)
        # what the launcher checked before starting the ranks, again here
        check_run(cfg, world_size(), minillm=getattr(step_type, "samples_responses", False))
        self.out = prepare_run_dir(cfg)
        bf16_teacher = self.device.type == "cuda" and cfg.optim.precision == "bf16"
        self.models = build_models(cfg.model, cfg.data.data_dir, step_type.needs_teacher(cfg), cfg.seed,
                                   self.device, torch.bfloat16 if bf16_teacher else torch.float32)
        tok_dir = Path(cfg.data.data_dir) / "tokenizer"
        self.tokenizer = load_tokenizer(str(tok_dir)) if tok_dir.is_dir() else None
        self.step: Step = step_type.for_run(cfg, self.models, self.device, self.tokenizer)
        accum = cfg.optim.grad_accum
        self.total_steps = cfg.optim.max_steps or max(
            1, math.ceil(cfg.optim.epochs * (self.step.batches_per_epoch() // accum)))
        self.valid = valid_loader(cfg.data.data_dir, cfg.data.seq_len, cfg.optim.micro_batch_size, rank(),
                                  world_size(), task=cfg.data.task)
        self.selection = Selection(cfg.select, cfg.data.data_dir, cfg.optim.micro_batch_size, self.tokenizer,
                                   self.device, rank(), world_size())
        self.engine = make_engine(cfg.optim, self.step.module, self.total_steps, self.device, cfg.model.compile)
        self.step.bind(self.engine, self.total_steps * accum)
        self.done, self.best, self.time_before = 0, math.inf, 0.0  # time_before: earlier stretches of the run
        if cfg.resume:
            self.done, self.best, self.time_before = resume_training(self.engine, self.ckpt_root, self.total_steps,
                                                                     self.step)
        self.info = {"teacher": None if cfg.model.no_teacher else cfg.model.teacher,
                     "student_layers": self.models.student_layers,
                     "data_dir": str(Path(cfg.data.data_dir).resolve()), "seq_len": cfg.data.seq_len,
                     "task": cfg.data.task, **self.step.info}
        self.log = MetricsLog(self.out, tensorboard=cfg.log.tensorboard) if is_main() else None
        self.stops = StopWatch(cfg.log.save_every_minutes, world_size(), self.device)

    @property
    def ckpt_root(self) -> Path:
        return self.out / "checkpoints"

    def run(self) -> int:
        """Steps `done+1 .. total`: micro-batches, then log / evaluate / save when due; final/ at the end.
        Returns the exit code: 0 when trained, 143/130 when a signal stopped it after a save (stops.py)."""
        cfg, accum = self.cfg, self.cfg.optim.grad_accum
        print0(f"run {self.out}: {self.total_steps} steps, loss {self.step.info['loss']}, student "
               f"{sum(p.numel() for p in self.models.student.parameters()) / 1e6:.1f}M params, {world_size()} "
               f"rank(s) on {self.device.type}, layer map {self.models.layer_map}")
        batches = self.step.stream(self.done * accum)
        self.bar = tqdm(total=self.total_steps, initial=self.done, disable=not is_main() or not cfg.log.progress,
                        dynamic_ncols=True, unit="step")
        self.sums: dict[str, torch.Tensor] = {}
        self.probes: dict[str, torch.Tensor] = {}  # the step's occasional measurements (grad_share/...), summed
        self.n_probes = 0
        self.count, self.tokens, self.t_last, start = 0, 0, time.perf_counter(), time.perf_counter()
        self.t_start = start
        self.engine.train()  # a student loaded from a checkpoint arrives in eval mode: dropout on from step 1
        self.stops.install()
        try:
            for step in range(self.done + 1, self.total_steps + 1):
                for micro in range(accum):
                    self.micro_step(next(batches), step, micro)
                self.bar.update(1)
                last = step == self.total_steps
                if step % cfg.log.log_interval == 0 or last:
                    self.log_train(step)
                if step % cfg.log.eval_interval == 0 or last:
                    self.evaluate(step)
                saved = step % cfg.log.save_interval == 0 or last
                if saved:
                    self.save(step)
                stop, due = self.stops.poll()  # every rank the same answer: all save, or stop, together
                if (stop or due) and not saved:
                    self.save(step)
                if stop and not last:
                    return self.stopped(step)
            self.bar.close()
            self.finish(time.perf_counter() - start)
        finally:
            self.stops.uninstall()
            if is_main():
                release_lock(self.out)
        return 0

    def stopped(self, step: int) -> int:
        """After a signal: the checkpoint of `step` is saved; one line with the resume command; the exit code."""
        self.bar.close()
        if self.log is not None:
            self.log.close()
        print0(f"stopped by {self.stops.signal_name} at step {step}/{self.total_steps}: checkpoint "
               f"{self.ckpt_root / f'step{step}'} saved; resume with: {resume_command()}")
        return self.stops.exit_code

    def micro_step(self, batch: Any, step: int, micro: int) -> None:
        out = train_micro_batch(self.engine, self.step, batch, step, micro, self.ckpt_root)
        for k, v in out.parts.items():
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
        if out.probes:
            self.probes = {k: self.probes[k] + v if k in self.probes else v for k, v in out.probes.items()}
            self.n_probes += 1
        self.count += 1
        self.tokens += out.tokens

    def log_train(self, step: int) -> None:
        means = mean_over_ranks(self.sums, self.count)
        elapsed = time.perf_counter() - self.t_last
        record: dict[str, Any] = {"kind": "train", "step": step, "lr": self.engine.get_lr()[0],
                                  "tokens_per_s": self.tokens * world_size() / elapsed}
        if self.step.tokens_per_step is not None:
            record["tokens"] = step * self.step.tokens_per_step
        record.update({(k if k == "loss" else self.step.log_key(k)): v for k, v in means.items()})
        record.update(mean_over_ranks(self.probes, self.n_probes))  # as named: grad_norm/kd, grad_share/kd
        if self.log is not None:
            self.log.write(record)
            shown = {k.removeprefix("loss/"): f"{v:.4g}" for k, v in record.items()
                     if k.startswith("loss") and "/" not in k.removeprefix("loss/")}
            # beside a term, its own estimate of what it measures (wd: the critics' W1 distance) as <term>_est
            shown.update({k.removeprefix("loss/").replace("/estimate", "_est"): f"{v:.4g}" for k, v in record.items()
                          if k.startswith("loss/") and k.endswith("/estimate")})
            self.bar.set_postfix(**shown, tok_s=f"{record['tokens_per_s']:.0f}")
            if not self.cfg.log.progress:
                print(f"step {step}/{self.total_steps} " + " ".join(f"{k}={v}" for k, v in shown.items()), flush=True)
        self.sums, self.count, self.tokens, self.t_last = {}, 0, 0, time.perf_counter()
        self.probes, self.n_probes = {}, 0

    def evaluate(self, step: int) -> None:
        """Validation loss (and the selection score); `best/` when it improves (a NaN model never does).

        The generators are forked: an evaluation draws nothing from the training RNG (iterating a DataLoader
        draws a seed), so a run evaluated at a step (a run stopped there by --max-steps) trains on as one that
        was not, and its checkpoint resumes bit-identically with dropout on."""
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            val = evaluate_lm(self.engine, self.valid, self.cfg.log.eval_iters, self.device)
            score, extra = self.selection.measure(self.engine.module.student, val)  # val, or -ROUGE-L
        if self.log is not None:
            self.log.write({"kind": "val", "step": step, "val/loss": val,
                            "val/ppl": math.exp(val) if val < 50 else math.inf, **extra})
            self.bar.write(f"step {step}/{self.total_steps}: validation loss {val:.4f}, ppl "
                           f"{math.exp(min(val, 50)):.2f}" + "".join(f", {k.removeprefix('val/')} {v:.4g}"
                                                                     for k, v in extra.items()))
        if math.isfinite(val) and math.isfinite(score) and score < self.best:
            self.best = score
            if is_main():
                save_hf_folder(self.engine.module.student, self.tokenizer, self.out / "best",
                               {**self.info, "step": step, "val_loss": val, **extra})
        barrier()
        self.t_last = time.perf_counter()  # evaluation time stays out of the next interval's throughput

    def save(self, step: int) -> None:
        state = {**capture_rng(), **self.step.state_dict()}
        try:
            save_training_state(self.engine, self.ckpt_root, step, {"step": step, "best_val": self.best,
                                "train_time_s": self.time_before + time.perf_counter() - self.t_start}, state,
                                keep=self.cfg.log.keep_checkpoints)
        except (OSError, RuntimeError) as exc:  # a full disk: drop the partial step folder, say so in one line
            tag = newest_whole(self.ckpt_root)
            need = folder_bytes(self.ckpt_root / tag) if tag else 3 * sum(  # weights and two Adam moments
                p.numel() * p.element_size() for p in self.engine.module.parameters() if p.requires_grad)
            message = disk_message(exc, self.ckpt_root / f"step{step}", need)
            if message is None:
                raise
            shutil.rmtree(self.ckpt_root / f"step{step}", ignore_errors=True)
            raise ValueError(message) from None
        self.stops.saved()
        self.t_last = time.perf_counter()

    def finish(self, train_time_s: float) -> None:
        if is_main():
            save_hf_folder(self.engine.module.student, self.tokenizer, self.out / "final",
                           {**self.info, "step": self.total_steps})
            self.log.write({"kind": "done", "step": self.total_steps, "train_time_s": self.time_before + train_time_s,
                            **self.selection.summary(self.best), "world_size": world_size(),
                            "device": self.device.type})
            self.log.close()
        barrier()
        print0(f"done: {self.out}/final (best validation {self.selection.describe(self.best)} in {self.out}/best)")
