"""The training engine behind the loop: DeepSpeed (default) or plain PyTorch DDP with autocast BF16.

Both expose the same small surface the loop uses (the DeepSpeed engine's): call, `backward`, `step`,
`get_lr`, `module`, `train`/`eval`, `save_checkpoint`, `load_checkpoint`. The DDP engine exists for
machines where DeepSpeed won't install; it writes its own checkpoint format (no resume across the two).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn

from Code.config import OptimConfig
from Code.run_folder import load_tensors
from Code.utils import atomic_torch_save


def init_distributed(launcher: str) -> None:
    if dist.is_initialized():
        return
    if launcher == "deepspeed":
        import deepspeed

        deepspeed.init_distributed(verbose=False)
    else:
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")


def warmup_cosine(warmup: int, total: int, min_ratio: float) -> Callable[[int], float]:
    """LR multiplier: linear warm-up, then cosine decay to `min_ratio` at `total` steps."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def deepspeed_config(args: OptimConfig, world: int, device: torch.device) -> dict[str, Any]:
    """The JSON file's structure with every "auto" filled from the flags (arguments.py owns the values)."""
    path = Path(args.ds_config)
    if not path.is_file():
        raise FileNotFoundError(f"DeepSpeed config {path} not found: pass --ds-config PATH")
    cfg = json.loads(path.read_text())
    values = {
        ("train_micro_batch_size_per_gpu",): args.micro_batch_size,
        ("gradient_accumulation_steps",): args.grad_accum,
        ("gradient_clipping",): args.clip_grad,
        ("bf16", "enabled"): args.precision == "bf16",
        # One rank has nothing to partition: ZeRO there only adds flat-buffer copies (16% of a CPU step,
        # GPT-2 shapes, measured), so stage 0 does the same update faster.
        ("zero_optimization", "stage"): args.zero_stage if world > 1 else 0,
        ("optimizer", "params", "lr"): args.lr,
        ("optimizer", "params", "weight_decay"): args.weight_decay,
    }
    for keys, value in values.items():
        node = cfg
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        if node.get(keys[-1], "auto") == "auto":
            node[keys[-1]] = value
    cfg["train_batch_size"] = args.micro_batch_size * args.grad_accum * world
    # DeepSpeed's fused Adam needs CUDA; on CPU ranks torch's AdamW does the same update, with its fused
    # CPU kernel (one pass over the weights: 10x faster than the per-op loop, measured on 20M params).
    params = cfg.setdefault("optimizer", {}).setdefault("params", {})
    params["torch_adam"] = device.type != "cuda"
    if device.type == "cpu":
        params.setdefault("fused", True)
    return cfg


def maybe_compile(model: nn.Module, mode: str, device: torch.device) -> bool:
    """`--compile`: torch.compile the model in place (auto: on GPU only; on CPU compiling costs minutes and
    gains little). In place (`Module.compile`), so state_dict keys and `model.student` stay as they were."""
    if mode == "on" or (mode == "auto" and device.type == "cuda"):
        model.compile()
        return True
    return False


class Engine(Protocol):
    """What the trainer needs of an engine (DeepSpeed's engine has exactly this surface)."""

    module: nn.Module

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...
    def backward(self, loss: torch.Tensor) -> None: ...
    def step(self) -> None: ...
    def get_lr(self) -> list[float]: ...
    def train(self) -> None: ...
    def eval(self) -> None: ...
    def save_checkpoint(self, root: str, tag: str, client_state: dict[str, Any], save_latest: bool = False) -> Any: ...
    def load_checkpoint(self, root: str, tag: str) -> tuple[str | None, dict[str, Any]]: ...


def make_engine(args: OptimConfig, model: nn.Module, total_steps: int, device: torch.device,
                compile_mode: str = "off") -> Engine:
    """DeepSpeed (`args.launcher == "deepspeed"`) or DDP engine over `model`, warm-up + cosine LR."""
    schedule = warmup_cosine(args.warmup_steps, total_steps, args.min_lr_ratio)
    maybe_compile(model, compile_mode, device)
    if args.launcher == "deepspeed":
        import deepspeed

        world = dist.get_world_size() if dist.is_initialized() else 1
        engine, _, _, _ = deepspeed.initialize(
            model=model, model_parameters=[p for p in model.parameters() if p.requires_grad],
            config=deepspeed_config(args, world, device),
            lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, schedule))
        safe_deepspeed_loads(engine)
        return engine
    return DDPEngine(model, args, schedule, device)


def safe_deepspeed_loads(engine: Any) -> None:
    """Make DeepSpeed read its checkpoint files with `weights_only=True`.

    DeepSpeed 0.19's TorchCheckpointEngine.load calls `torch.load(..., weights_only=False)` with no option
    to change it; every file it reads (model states, ZeRO optimizer partitions) goes through
    `engine.checkpoint_engine.load`, so that one method is replaced. Its ZeRO files pickle three plain
    DeepSpeed classes (the loss scaler, the ZeRO stage enum, a fragment address), allowed by name: the
    unpickler rebuilds them from their fields and calls no other code.
    """
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    allowed = (LossScaler, ZeroStageEnum, fragment_address)
    checkpoint_engine = getattr(engine, "checkpoint_engine", None)
    if checkpoint_engine is not None:
        checkpoint_engine.load = lambda path, map_location=None: load_tensors(path, map_location, allowed)


class DDPEngine:
    """DeepSpeed-engine-shaped wrapper over DDP + AdamW + autocast, for `LAUNCHER=torchrun`."""

    def __init__(self, model: nn.Module, args: OptimConfig, schedule: Callable[[int], float],
                 device: torch.device) -> None:
        self.module = model.to(device)
        self.device = device
        self.grad_accum = args.grad_accum
        self.clip = args.clip_grad
        self.autocast_dtype = torch.bfloat16 if args.precision == "bf16" else None
        distributed = dist.is_initialized() and dist.get_world_size() > 1
        ids = [device.index] if device.type == "cuda" else None
        self.wrapped = nn.parallel.DistributedDataParallel(self.module, device_ids=ids) if distributed \
            else self.module
        params = [p for p in model.parameters() if p.requires_grad]
        fused = {"fused": True} if device.type in ("cuda", "cpu") else {}  # torch has fused kernels for both
        self.optimizer = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.95), eps=1e-8,
                                           weight_decay=args.weight_decay, **fused)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.micro_steps = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        ctx = torch.autocast(self.device.type, dtype=self.autocast_dtype) if self.autocast_dtype \
            else contextlib.nullcontext()
        with ctx:
            return self.wrapped(*args, **kwargs)

    def backward(self, loss: torch.Tensor) -> None:
        boundary = (self.micro_steps + 1) % self.grad_accum == 0
        sync = self.wrapped.no_sync() if (not boundary and self.wrapped is not self.module) \
            else contextlib.nullcontext()
        with sync:
            (loss / self.grad_accum).backward()

    def step(self) -> None:
        self.micro_steps += 1
        if self.micro_steps % self.grad_accum:
            return
        if self.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def get_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def train(self) -> None:
        self.module.train()

    def eval(self) -> None:
        self.module.eval()

    def save_checkpoint(self, root: str, tag: str, client_state: dict[str, Any], save_latest: bool = False) -> None:
        folder = Path(root) / tag
        folder.mkdir(parents=True, exist_ok=True)
        if not dist.is_initialized() or dist.get_rank() == 0:
            state = {"module": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                     "scheduler": self.scheduler.state_dict(), "micro_steps": self.micro_steps,
                     "client_state": copy.copy(client_state)}
            atomic_torch_save(state, folder / "ddp_state.pt")
        del save_latest  # the caller writes `latest` after every rank is done

    def load_checkpoint(self, root: str, tag: str) -> tuple[str, dict[str, Any]]:
        path = Path(root) / tag / "ddp_state.pt"
        if not path.is_file():
            raise FileNotFoundError(f"{path} missing: this checkpoint was not written by LAUNCHER=torchrun; "
                                    "resume it with the launcher that wrote it")
        state = load_tensors(path, map_location=self.device)  # tensors and plain values only: runs no code
        self.module.load_state_dict(state["module"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.micro_steps = state["micro_steps"]
        return str(path), state["client_state"]

