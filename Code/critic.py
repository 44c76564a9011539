"""WGAN-GP / WGAN-LP critics (Gulrajani et al. 2017; Petzka et al. 2018), one per matched layer, batched.

Each critic is a small MLP on one hidden vector (no batch norm: the gradient penalty is per sample, and
batch statistics would couple samples). All layers' weights are stacked `(L, in, out)` and applied with
`torch.baddbmm`, so every op is one kernel for all layers (214 ops per critic step at 6 layers against
1170 for a loop of per-layer `nn.Sequential` critics: what costs on a GPU is launches), and the gradient
penalty is one out-of-place double backward for all layers at once. On CPU the two cost the same within
~10% (the matmul FLOPs are identical; a per-layer CPU path was tried and gained nothing measurable).
The critic works in fp32 whatever the features' dtype.

The critics' inputs are standardised per layer and dimension with the teacher's running mean and variance
(`TeacherMoments`, updated from every batch of teacher features the critics train on, detached, all-reduced
over ranks, saved with the critics), the same transform for teacher and student, in the critics' updates and
in `student_loss`/`estimate`. GPT-2's residual stream has a few dimensions hundreds of times larger than the
rest; in raw units a 1-Lipschitz critic spends its whole slope on those and the student's gradient from the
term is as large as those dimensions are. Standardised, every dimension counts in units of the teacher's own
spread. A fresh run's first `update` also runs `warmup_steps` extra critic iterations (a critic at its random
init sends the student noise, not a distance); the flag is in the state dict, so a resumed run does not
repeat it.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from Code.cli import first_line
from Code.config import CriticConfig
from Code.knobs import ConfigError
from Code.objectives.estimators import split_halves
from Code.objectives.hidden import sample_positions, stack_layers
from Code.objectives.masking import flat_mask, masked_mean


class CriticConfigError(ValueError):
    """A critic setting or a loaded critic state that cannot work."""


class BatchedCritic(nn.Module):
    """`L` MLPs `dim -> hidden (x depth) -> 1` with LeakyReLU; forward `(L, N, dim)` -> `(L, N)`."""

    def __init__(self, num_layers: int, dim: int, hidden: int = 256, depth: int = 2,
                 negative_slope: float = 0.2, seed: int = 0) -> None:
        super().__init__()
        self.negative_slope = negative_slope
        sizes = [dim] + [hidden] * depth + [1]
        # Initialized from a private CPU generator: every rank (and every device) starts identical.
        gen = torch.Generator().manual_seed(seed)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
            bound = 1.0 / math.sqrt(n_in)  # nn.Linear's default range
            w = (torch.rand(num_layers, n_in, n_out, generator=gen) * 2 - 1) * bound
            b = (torch.rand(num_layers, 1, n_out, generator=gen) * 2 - 1) * bound
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(b))

    def forward(self, x: Tensor, params: tuple[list[Tensor], list[Tensor]] | None = None) -> Tensor:
        weights, biases = params if params is not None else (list(self.weights), list(self.biases))
        h = x
        last = len(weights) - 1
        for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
            h = torch.baddbmm(b, h, w)
            if i < last:
                # LeakyReLU as a product with its slope, a constant: same values and gradients, but the
                # penalty's double backward sends nothing back through the forward (F.leaky_relu's does:
                # a zeros tensor through every matmul; this saves ~25% of the matmuls of a critic update).
                h = h * torch.where(h > 0, 1.0, self.negative_slope)
        return h.squeeze(-1)


class TeacherMoments:
    """Running per-layer, per-dimension mean and variance of the teacher features the critics see.

    Each batch's count, sum and squared deviations (over its real positions, summed over ranks when
    torch.distributed is initialised, so every rank holds the same numbers) are merged into the running ones
    with Chan et al.'s parallel update in float64: the exact mean and population variance of every teacher
    position seen so far. The teacher is frozen and the data stationary, so a plain running average (not an
    EMA) is the right estimate. Before the first batch the transform is the identity.
    """

    def __init__(self, num_layers: int, dim: int, device: torch.device, eps: float = 1e-5) -> None:
        self.eps = eps
        self.count = torch.zeros((), dtype=torch.float64, device=device)
        self.mean = torch.zeros(num_layers, 1, dim, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(num_layers, 1, dim, dtype=torch.float64, device=device)
        self._refresh()

    def _refresh(self) -> None:
        var = self.m2 / self.count.clamp(min=1)
        seen = self.count > 0
        self.shift = torch.where(seen, self.mean, 0.0).float()
        self.scale = torch.where(seen, torch.rsqrt(var + self.eps), 1.0).float()

    @torch.no_grad()
    def observe(self, teacher: Tensor, valid: Tensor) -> None:
        """Merge the real positions of one batch `(L, N, D)` (any float dtype) into the running moments."""
        m = valid[None, :, None]
        x = teacher.float()
        local = torch.cat([valid.sum().reshape(1).double(),
                           torch.where(m, x, 0.0).sum(1).double().reshape(-1)])
        n_b, sum_b = _sum_over_ranks(local).split([1, local.numel() - 1])
        n_b = n_b.reshape(())
        mean_b = (sum_b / n_b.clamp(min=1)).view_as(self.mean)
        m2_b = _sum_over_ranks(torch.where(m, (x - mean_b.float()) ** 2, 0.0).sum(1, keepdim=True).double())
        total = self.count + n_b
        delta = mean_b - self.mean
        self.mean += delta * (n_b / total.clamp(min=1))
        self.m2 += m2_b + delta**2 * (self.count * n_b / total.clamp(min=1))
        self.count = total
        self._refresh()

    def standardize(self, x: Tensor) -> Tensor:
        """`(x - mean) / sqrt(var + eps)` per layer and dimension, out of place (gradients reach `x`)."""
        return (x - self.shift) * self.scale

    def state_dict(self) -> dict[str, Tensor]:
        return {"count": self.count.clone(), "mean": self.mean.clone(), "m2": self.m2.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        device = self.mean.device
        self.count = state["count"].to(device, torch.float64)
        self.mean = state["mean"].to(device, torch.float64).clone()
        self.m2 = state["m2"].to(device, torch.float64).clone()
        self._refresh()


def _sum_over_ranks(t: Tensor) -> Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t


class CriticTrainer:
    """Owns the critics, their optimizer, LR schedule, sampling generator, input statistics, warm-up and
    gradient penalty."""

    def __init__(self, num_layers: int, dim: int, config: CriticConfig | None = None, *, seed: int = 0,
                 device: str | torch.device = "cpu", total_steps: int | None = None, depth: int = 2,
                 **fields: Any) -> None:
        """Critics for `num_layers` matched layers of width `dim`, set up by `config` (the run's
        `cfg.critic`; default: every critic knob's default), with `fields` (CriticConfig field names, e.g.
        `hidden=16, n_critic=2`) replacing some of its values. The config's own checks (its knobs', in
        Code/knobs/training.py) run once, when it is built; `total_steps` is the student's, for a cosine
        schedule."""
        try:
            cfg = dataclasses.replace(config or CriticConfig(), **fields)
        except (ConfigError, TypeError) as exc:
            raise CriticConfigError(first_line(exc)) from None
        if num_layers < 1 or dim < 1 or depth < 1:
            raise CriticConfigError(f"critic sizes must be positive (layers={num_layers}, dim={dim}, depth={depth})")
        if cfg.schedule == "cosine" and not total_steps:
            raise CriticConfigError("a cosine critic schedule needs total_steps (the student's step count)")
        self.settings = cfg
        hidden, optimizer, lr, betas = cfg.hidden, cfg.optimizer, cfg.lr, cfg.betas
        n_critic, max_samples, warmup_steps, standardize = (cfg.n_critic, cfg.max_samples, cfg.warmup_steps,
                                                            cfg.standardize)
        self.device = torch.device(device)
        self.config = dict(num_layers=num_layers, dim=dim, hidden=hidden, depth=depth)
        self.gp_lambda = cfg.gp_lambda
        self.one_sided = cfg.penalty == "lp"
        self.paired = cfg.pairing == "paired"
        self.n_critic = n_critic
        self.max_samples = max_samples
        self.critic = BatchedCritic(num_layers, dim, hidden, depth, seed=seed).to(self.device)
        self.moments = TeacherMoments(num_layers, dim, self.device) if standardize else None
        self.warmup_steps = warmup_steps
        self.warmed_up = warmup_steps == 0  # saved: a resumed run does not warm up again
        params = list(self.critic.parameters())
        fused = {"fused": True} if self.device.type == "cuda" else {}
        if optimizer == "adam":
            self.optimizer: torch.optim.Optimizer = torch.optim.Adam(params, lr=lr, betas=betas, **fused)
        else:
            self.optimizer = torch.optim.RMSprop(params, lr=lr)
        self.scheduler: torch.optim.lr_scheduler.LambdaLR | None = None
        if cfg.schedule == "cosine":
            total, floor = int(total_steps), float(cfg.min_lr_ratio)  # type: ignore[arg-type]
            # Cosine from lr down to floor * lr (not to 0: a critic whose LR reaches 0 stops tracking the
            # student it is supposed to measure). floor 0 is the seed study's schedule, bit for bit.
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer,
                lambda step: floor + (1.0 - floor) * (0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))),
            )
        # Its own generator: sample positions and interpolation weights repeat run to run, whatever
        # else consumes the global RNG; seeded alike on every rank (ranks already see different data).
        self.generator = torch.Generator(device=self.device).manual_seed(seed + 1)
        self.last_estimates: Tensor | None = None

    # ---------------------------------------------------------------- training the critics
    def _penalty_and_estimates(self, ts: Tensor, valid_t: Tensor, valid_s: Tensor) -> tuple[Tensor, Tensor]:
        """Per-layer (E[f(t)] - E[f(s)], gradient penalty) on `ts` = `(L, 2k, D)`, teacher then student.

        Teacher and student samples go through one forward; interpolates (between the i-th teacher and the
        i-th student sample: the same position when paired) through a second, whose input gradient
        (create_graph, out-of-place) gives the penalty for all layers in one double backward. GP penalises
        every norm away from 1; LP only norms above 1 (a flat critic is then free where the sets agree).
        """
        k = ts.shape[1] // 2
        t, s = ts[:, :k], ts[:, k:]
        f_ts = self.critic(ts)
        estimate = masked_mean(f_ts[:, :k], valid_t) - masked_mean(f_ts[:, k:], valid_s)
        eps = torch.rand(ts.shape[0], k, 1, generator=self.generator, device=ts.device)
        x_hat = torch.lerp(s, t, eps).requires_grad_(True)  # eps * t + (1 - eps) * s, one pass
        (grad,) = torch.autograd.grad(self.critic(x_hat).sum(), x_hat, create_graph=True)
        excess = torch.linalg.vector_norm(grad, dim=-1) - 1.0
        if self.one_sided:
            excess = excess.clamp(min=0.0)
        return estimate, masked_mean(excess**2, valid_t & valid_s)

    def _average_gradients(self) -> None:
        """Average critic gradients over ranks (one all-reduce) so every rank's critics stay identical."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        grads = [p.grad for p in self.critic.parameters()]
        flat = torch.cat([g.reshape(-1) for g in grads])  # type: ignore[union-attr]
        dist.all_reduce(flat)
        flat.div_(dist.get_world_size())
        offset = 0
        for g in grads:
            n = g.numel()  # type: ignore[union-attr]
            g.copy_(flat[offset : offset + n].view_as(g))  # type: ignore[union-attr]
            offset += n

    @property
    def warmup_pending(self) -> bool:
        """True until the first `update` of a fresh run (which then runs `warmup_steps` extra iterations)."""
        return not self.warmed_up

    def update(self, teacher_feats: list[Tensor] | Tensor, student_feats: list[Tensor] | Tensor,
               mask: Tensor) -> Tensor:
        """`n_critic` critic steps on detached features; returns per-layer WD estimates `(L,)` (no GP).

        Features are `L` tensors `(B, T, D)` (or one `(L, B, T, D)`); `mask` `(B, T)` marks real positions.
        Each step samples up to `max_samples` real positions (the same for every layer). With standardised
        inputs the batch's teacher features first join the running moments. The first call of a fresh run
        runs `warmup_steps + n_critic` steps on its batch.
        """
        valid_all = flat_mask(mask).to(self.device)
        n = valid_all.shape[0]
        ts_all = self._pack(teacher_feats, student_feats, n)
        if self.moments is not None:  # standardised once per call, in fp32 (a bf16 batch doubles in size)
            self.moments.observe(ts_all[:, :n], valid_all)
            ts_all = self.moments.standardize(ts_all.float())
        steps = self.n_critic + (0 if self.warmed_up else self.warmup_steps)
        estimate = torch.zeros(ts_all.shape[0], device=self.device)
        with torch.enable_grad(), torch.autocast(self.device.type, enabled=False):
            for _ in range(steps):
                if self.paired:
                    idx, valid = sample_positions(valid_all, self.max_samples, self.generator)
                    t_idx, s_idx, valid_t, valid_s = idx, idx, valid, valid
                else:  # fresh disjoint halves each step: no student sample meets its own teacher state
                    s_idx, valid_s, t_idx, valid_t = split_halves(valid_all, self.max_samples, self.generator)
                if self.paired and t_idx.shape[0] == n:
                    ts = ts_all.float()  # no subsampling: a no-op for fp32 features
                else:
                    ts = ts_all.index_select(1, torch.cat([t_idx, s_idx + n])).float()
                estimate, penalty = self._penalty_and_estimates(ts, valid_t, valid_s)
                loss = (self.gp_lambda * penalty - estimate).sum()  # layers are independent: sum
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self._average_gradients()
                self.optimizer.step()
        self.warmed_up = True
        self.last_estimates = estimate.detach()
        return self.last_estimates

    def step_scheduler(self) -> None:
        """Advance the critic LR schedule by one student step (a no-op for a constant schedule)."""
        if self.scheduler is not None:
            self.scheduler.step()

    def current_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    # ---------------------------------------------------------------- using the critics
    def student_loss(self, student_feats: list[Tensor] | Tensor, mask: Tensor) -> Tensor:
        """Per-layer `-E[f(student)]` `(L,)` over real positions; gradients reach the features only.

        The critic runs on detached copies of its parameters (no weight-gradient work in backward, and
        nothing accumulates in `.grad` of the critics between their own steps).
        """
        valid = flat_mask(mask).to(self.device)
        feats = stack_layers(student_feats, torch.float32)
        self._check_shapes(feats, feats, valid)
        params = ([w.detach() for w in self.critic.weights], [b.detach() for b in self.critic.biases])
        with torch.autocast(self.device.type, enabled=False):
            return -masked_mean(self.critic(self._standardize(feats), params), valid)

    @torch.no_grad()
    def estimate(self, teacher_feats: list[Tensor] | Tensor, student_feats: list[Tensor] | Tensor,
                 mask: Tensor) -> Tensor:
        """Per-layer E[f(teacher)] - E[f(student)] over all real positions, without training (for eval)."""
        valid = flat_mask(mask).to(self.device)
        t = stack_layers(teacher_feats, torch.float32).to(self.device)
        s = stack_layers(student_feats, torch.float32).to(self.device)
        self._check_shapes(t, s, valid)
        with torch.autocast(self.device.type, enabled=False):
            t, s = self._standardize(t), self._standardize(s)
            return masked_mean(self.critic(t), valid) - masked_mean(self.critic(s), valid)

    def _standardize(self, x: Tensor) -> Tensor:
        return self.moments.standardize(x) if self.moments is not None else x

    @torch.no_grad()
    def _pack(self, teacher_feats: list[Tensor] | Tensor, student_feats: list[Tensor] | Tensor, n: int) -> Tensor:
        """One `(L, 2N, D)` copy, in the features' own dtype, on the critic's device: layer l holds its N
        teacher positions then its N student positions, so a step's samples are one gather, one forward."""
        layers, dim = self.config["num_layers"], self.config["dim"]
        if len(teacher_feats) != layers or len(student_feats) != layers or any(
                f.numel() != n * dim for f in [*teacher_feats, *student_feats]):
            shapes = [tuple(f.shape) for f in [*teacher_feats, *student_feats]]
            raise CriticConfigError(f"critic expects {layers} layers of width {dim} over the mask's {n} positions "
                                    f"for teacher and student, got shapes {shapes}")
        dtype = torch.promote_types(teacher_feats[0].dtype, student_feats[0].dtype)
        ts = torch.empty(layers, 2 * n, dim, dtype=dtype, device=self.device)
        for i, (t, s) in enumerate(zip(teacher_feats, student_feats, strict=True)):
            ts[i, :n].copy_(t.reshape(n, dim))
            ts[i, n:].copy_(s.reshape(n, dim))
        return ts

    def _check_shapes(self, t: Tensor, s: Tensor, valid: Tensor) -> None:
        want = (self.config["num_layers"], valid.shape[0], self.config["dim"])
        if tuple(t.shape) != want or tuple(s.shape) != want:
            raise CriticConfigError(f"critic expects {want[0]} layers of width {want[2]} over the mask's "
                                    f"{want[1]} positions, got teacher {tuple(t.shape)}, student "
                                    f"{tuple(s.shape)} (layers, positions, width)")

    # ---------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        return {
            "config": dict(self.config),
            "critic": self.critic.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "generator": self.generator.get_state(),
            "last_estimates": self.last_estimates,
            "moments": self.moments.state_dict() if self.moments is not None else None,
            "warmed_up": self.warmed_up,
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("config") != self.config:
            raise CriticConfigError(f"critic checkpoint was made for {state.get('config')}, this run builds "
                                    f"{self.config}: use the same layer map, width and critic size")
        saved = state.get("moments")
        if (saved is not None) != (self.moments is not None):
            made, want = ("with", "--critic-standardize") if saved is not None else ("without",
                                                                                   "--no-critic-standardize")
            raise CriticConfigError(f"critic checkpoint was made {made} standardised inputs: resume with {want}")
        self.critic.load_state_dict(state["critic"])
        # A copy: Optimizer.load_state_dict keeps the given moment tensors, which would otherwise stay
        # shared with whoever produced `state` (e.g. a live trainer) and be updated twice.
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"].cpu())
        last = state.get("last_estimates")
        self.last_estimates = last.to(self.device) if last is not None else None
        if self.moments is not None:
            self.moments.load_state_dict(saved)  # type: ignore[arg-type]
        self.warmed_up = bool(state.get("warmed_up", True))  # a checkpoint is a run under way: no warm-up
