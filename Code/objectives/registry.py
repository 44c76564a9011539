"""The loss registry: every distillation term as a pure function `LossInputs -> (scalar, parts)`.

The training loop asks a `LossSpec` what a term needs (teacher, logits, hidden states, critics) and
never branches on a loss name; adding a recipe means adding one entry to `REGISTRY`. The math lives in
`logit_losses.py` (per-token divergences over the vocabulary) and `hidden_losses.py` (per-layer
distances between hidden states); this file adapts them to `LossInputs`, masks and averages.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from Code.arguments import PRESETS
from Code.objectives import hidden as hl
from Code.objectives import logit as ll
from Code.objectives.masking import label_mask, masked_mean

if TYPE_CHECKING:
    from Code.critic import CriticTrainer

LossOutput = tuple[Tensor, dict[str, Tensor]]


class LossSpecError(ValueError):
    """A `--loss` / `--weights` / loss option that cannot be used."""


class NonFiniteLossError(ValueError):
    """A loss term came out NaN or inf; `.term` names it."""

    def __init__(self, message: str, term: str) -> None:
        super().__init__(message)
        self.term = term


@dataclass(frozen=True)
class LossOptions:
    temperature: float = 1.0          # logit losses; kd/rkl/jsd/skl are scaled by T^2 (Hinton et al.)
    kd_topk: int = 0                  # kd over the teacher's top-k tokens only; 0 = full vocabulary
    skew_alpha: float = 0.1           # skl: KL(p || a*p + (1-a)*q), DistiLLM's default 0.1
    jsd_beta: float = 0.5             # jsd mixing coefficient; 0.5 = symmetric JSD
    mse_normalize: bool = False       # mse: divide each dim by the teacher's per-dim std in the batch
    norm_eps: float = 1e-5            # added to that variance
    cos_last_only: bool = False       # cos on the last matched layer only (Hugging Face's DistilGPT2)
    swd_projections: int = 128        # swd: random directions per layer per call
    swd_p: int = 1                    # swd: 1 = SW_1, 2 = squared SW_2
    swd_max_samples: int = 4096       # swd: positions subsampled per call
    swd_seed: int | None = 0          # swd projections from seed + step (None: the global torch RNG)
    layer_ids: tuple[int, ...] | None = None  # names of per-layer parts (student hidden index), else 1..L

    def __post_init__(self) -> None:
        checks = [
            (self.temperature > 0, f"temperature must be > 0, got {self.temperature}"),
            (self.kd_topk >= 0, f"kd_topk must be >= 0 (0 = full vocabulary), got {self.kd_topk}"),
            (0 <= self.skew_alpha < 1, f"skew_alpha must be in [0, 1), got {self.skew_alpha}"),
            (0 < self.jsd_beta < 1, f"jsd_beta must be in (0, 1), got {self.jsd_beta}"),
            (self.norm_eps > 0, f"norm_eps must be > 0, got {self.norm_eps}"),
            (self.swd_projections >= 1, f"swd_projections must be >= 1, got {self.swd_projections}"),
            (self.swd_p in (1, 2), f"swd_p must be 1 or 2, got {self.swd_p}"),
            (self.swd_max_samples >= 1, f"swd_max_samples must be >= 1, got {self.swd_max_samples}"),
        ]
        for ok, message in checks:
            if not ok:
                raise LossSpecError(message)


@dataclass
class LossInputs:
    labels: Tensor                                  # (B, T) next-token ids aligned with logits, -100 = ignore
    mask: Tensor                                    # (B, T) bool, True = a real position
    student_logits: Tensor | None = None            # (B, T, V)
    teacher_logits: Tensor | None = None
    student_hidden: list[Tensor] = field(default_factory=list)  # matched layers, (B, T, D_teacher)
    teacher_hidden: list[Tensor] = field(default_factory=list)
    critics: CriticTrainer | None = None
    options: LossOptions = field(default_factory=LossOptions)
    step: int = 0                                   # seeds per-step randomness (swd projections)


@dataclass(frozen=True)
class LossSpec:
    name: str
    fn: Callable[[LossInputs], LossOutput]
    needs_teacher: bool
    needs_logits: bool
    needs_hidden: bool
    needs_critic: bool
    doc: str = ""


@dataclass(frozen=True)
class Requirements:
    """What one step must compute for a list of terms (so the loop skips the rest)."""

    teacher: bool
    student_logits: bool
    teacher_logits: bool
    hidden: bool
    critic: bool


# ---------------------------------------------------------------------------------------------- logits
def _logit_rows(inputs: LossInputs, name: str, teacher: bool = True) -> tuple[Tensor, Tensor | None, Tensor]:
    if inputs.student_logits is None or (teacher and inputs.teacher_logits is None):
        raise LossSpecError(f"loss '{name}' needs {'student and teacher' if teacher else 'student'} logits, "
                            "but LossInputs has none: compute them when the spec's needs_logits is set")
    vocab = inputs.student_logits.shape[-1]
    s = inputs.student_logits.reshape(-1, vocab)
    t = inputs.teacher_logits.reshape(-1, vocab) if teacher else None  # type: ignore[union-attr]
    return s, t, inputs.labels.reshape(-1)


def _token_mean(rows: Tensor, labels: Tensor) -> Tensor:
    """Average per-token values over positions whose label is not -100 (`where`: padding can't leak)."""
    return masked_mean(rows, label_mask(labels))


def _lm(inputs: LossInputs) -> LossOutput:
    s, _, labels = _logit_rows(inputs, "lm", teacher=False)
    return _token_mean(ll.cross_entropy_rows(s, labels), labels), {}


def _divergence(name: str, rows_fn: Callable[[Tensor, Tensor, LossOptions], Tensor], scaled: bool = True):
    def fn(inputs: LossInputs) -> LossOutput:
        s, t, labels = _logit_rows(inputs, name)
        opts = inputs.options
        value = _token_mean(rows_fn(s, t, opts), labels)  # type: ignore[arg-type]
        return (value * opts.temperature**2 if scaled else value), {}

    return fn


def _kd_rows(s: Tensor, t: Tensor, o: LossOptions) -> Tensor:
    if o.kd_topk:
        return ll.topk_kl_rows(s, t, o.temperature, o.kd_topk)
    return ll.forward_kl_rows(s, t, o.temperature)


# ---------------------------------------------------------------------------------------------- hidden
def _check_hidden(inputs: LossInputs, name: str) -> None:
    s_list, t_list = inputs.student_hidden, inputs.teacher_hidden
    if not s_list or len(s_list) != len(t_list):
        raise LossSpecError(f"loss '{name}' needs matched hidden states, got {len(s_list)} student and "
                            f"{len(t_list)} teacher layers: pass one per layer-map pair")
    if s_list[0].shape[-1] != t_list[0].shape[-1]:
        raise LossSpecError(f"loss '{name}': student width {s_list[0].shape[-1]} != teacher width "
                            f"{t_list[0].shape[-1]}: project student states first (HiddenProjections)")


def _hidden(inputs: LossInputs, name: str) -> tuple[Tensor, Tensor, Tensor]:
    _check_hidden(inputs, name)
    s_list, t_list = inputs.student_hidden, inputs.teacher_hidden
    mask = inputs.mask.reshape(-1).to(torch.bool)
    return hl.stack_layers(s_list), hl.stack_layers([t.detach() for t in t_list]), mask


def _per_layer(values: Tensor, inputs: LossInputs, prefix: str = "") -> dict[str, Tensor]:
    ids = inputs.options.layer_ids or tuple(range(1, values.shape[0] + 1))
    if len(ids) != values.shape[0]:
        raise LossSpecError(f"options.layer_ids has {len(ids)} names for {values.shape[0]} matched layers")
    return {f"{prefix}layer{i}": v for i, v in zip(ids, values, strict=True)}


def _mse(inputs: LossInputs) -> LossOutput:
    s, t, mask = _hidden(inputs, "mse")
    per = hl.mse_per_layer(s, t, mask, inputs.options.mse_normalize, inputs.options.norm_eps)
    return per.mean(), _per_layer(per, inputs)


def _cos(inputs: LossInputs) -> LossOutput:
    s, t, mask = _hidden(inputs, "cos")
    if inputs.options.cos_last_only:
        per = hl.cosine_per_layer(s[-1:], t[-1:], mask)
        ids = inputs.options.layer_ids
        return per[0], {f"layer{ids[-1] if ids else s.shape[0]}": per[0]}
    per = hl.cosine_per_layer(s, t, mask)
    return per.mean(), _per_layer(per, inputs)


def _swd(inputs: LossInputs) -> LossOutput:
    s, t, mask = _hidden(inputs, "swd")
    o = inputs.options
    gen = None
    if o.swd_seed is not None:
        # Fresh directions every step, yet a resumed run draws the same ones as an uninterrupted run.
        gen = torch.Generator(device=s.device).manual_seed(o.swd_seed * 1_000_003 + inputs.step)
    per = hl.sliced_wasserstein_per_layer(s, t, mask, o.swd_projections, o.swd_p, o.swd_max_samples, gen)
    return per.mean(), _per_layer(per, inputs)


def _wd(inputs: LossInputs) -> LossOutput:
    if inputs.critics is None:
        raise LossSpecError("loss 'wd' needs critics: pass a CriticTrainer as LossInputs.critics")
    _check_hidden(inputs, "wd")
    per = inputs.critics.student_loss(inputs.student_hidden, inputs.mask)
    parts = _per_layer(per, inputs, prefix="student_")
    if inputs.critics.last_estimates is not None:
        parts.update(_per_layer(inputs.critics.last_estimates, inputs))
    return per.sum(), parts


REGISTRY: dict[str, LossSpec] = {
    spec.name: spec
    for spec in [
        LossSpec("lm", _lm, False, True, False, False, "next-token cross-entropy on the labels"),
        LossSpec("kd", _divergence("kd", _kd_rows), True, True, False, False,
                 "forward KL(teacher || student) at temperature T, x T^2 (kd_topk: teacher's top-k)"),
        LossSpec("rkl", _divergence("rkl", lambda s, t, o: ll.reverse_kl_rows(s, t, o.temperature)),
                 True, True, False, False, "reverse KL(student || teacher), x T^2"),
        LossSpec("jsd", _divergence("jsd", lambda s, t, o: ll.jsd_rows(s, t, o.temperature, o.jsd_beta)),
                 True, True, False, False, "generalized Jensen-Shannon (jsd_beta), x T^2"),
        LossSpec("skl",
                 _divergence("skl", lambda s, t, o: ll.skew_kl_rows(s, t, o.temperature, o.skew_alpha)),
                 True, True, False, False, "skew KL(p || a p + (1-a) q) (skew_alpha), x T^2"),
        LossSpec("tvd", _divergence("tvd", lambda s, t, o: ll.tvd_rows(s, t, o.temperature), scaled=False),
                 True, True, False, False, "total variation distance, in [0, 1]"),
        LossSpec("mse", _mse, True, False, True, False, "mean over layers of hidden-state MSE"),
        LossSpec("cos", _cos, True, False, True, False, "1 - cosine similarity of hidden states"),
        LossSpec("swd", _swd, True, False, True, False, "critic-free sliced Wasserstein distance"),
        LossSpec("wd", _wd, True, False, True, True, "WGAN-GP critics: sum over layers of -E[f(student)]"),
    ]
}

def parse_losses(spec: str, weights: str | None = None) -> list[tuple[LossSpec, float]]:
    """`"wd+kd+lm"`, `"0.3,0.4,0.3"` -> [(spec, weight), ...]; weights default to 1 each."""
    names = [n.strip() for n in spec.split("+")]
    if not spec.strip() or any(not n for n in names):
        raise LossSpecError(f"empty loss name in --loss '{spec}': write names joined by '+', e.g. wd+kd+lm")
    known = ", ".join(sorted(REGISTRY))
    for name in names:
        if name in PRESETS:
            preset = PRESETS[name]
            raise LossSpecError(f"'{name}' is a preset, not a loss: use --preset {name} "
                                f"(= --loss {preset['loss']} --weights {preset['weights']} and more)")
        if name not in REGISTRY:
            raise LossSpecError(f"unknown loss '{name}' in --loss '{spec}'; known losses: {known}")
    if len(set(names)) != len(names):
        raise LossSpecError(f"a loss appears twice in --loss '{spec}': give each term once with its weight")
    if weights is None or not weights.strip():
        values = [1.0] * len(names)
    else:
        try:
            values = [float(w) for w in weights.split(",")]
        except ValueError:
            raise LossSpecError(f"--weights '{weights}' must be comma-separated numbers, "
                                "e.g. 0.3,0.4,0.3") from None
        if len(values) != len(names):
            raise LossSpecError(f"--weights '{weights}' has {len(values)} values for {len(names)} losses "
                                f"in --loss '{spec}': give one weight per loss")
        bad = [w for w in values if not math.isfinite(w) or w < 0]
        if bad:
            raise LossSpecError(f"--weights '{weights}' has a negative or non-finite weight ({bad[0]}): "
                                "weights must be >= 0")
    return [(REGISTRY[n], w) for n, w in zip(names, values, strict=True)]


def requirements(terms: list[tuple[LossSpec, float]]) -> Requirements:
    specs = [s for s, _ in terms]
    return Requirements(
        teacher=any(s.needs_teacher for s in specs),
        student_logits=any(s.needs_logits for s in specs),
        teacher_logits=any(s.needs_logits and s.needs_teacher for s in specs),
        hidden=any(s.needs_hidden for s in specs),
        critic=any(s.needs_critic for s in specs),
    )


def compute_losses(terms: list[tuple[LossSpec, float]], inputs: LossInputs,
                   check_finite: bool = True) -> tuple[Tensor, dict[str, Tensor]]:
    """Weighted total and detached logs: `{name: unweighted value, name/part: ...}`.

    Losses run with autocast off (each casts to fp32 itself). `check_finite` costs one host sync; a
    non-finite total raises `NonFiniteLossError` naming the term. Zero-weight terms are logged only.
    """
    total: Tensor | None = None
    logs: dict[str, Tensor] = {}
    with torch.autocast(inputs.labels.device.type, enabled=False):
        for spec, weight in terms:
            value, parts = spec.fn(inputs)
            logs[spec.name] = value.detach()
            for part, v in parts.items():
                logs[f"{spec.name}/{part}"] = v.detach()
            if weight != 0:
                total = value * weight if total is None else total + value * weight
    if total is None:
        total = torch.zeros((), device=inputs.labels.device)
    if check_finite and not bool(torch.isfinite(total)):
        raise_non_finite(terms, logs, inputs.step)
    return total, logs


def raise_non_finite(terms: list[tuple[LossSpec, float]], logs: dict[str, Tensor], step: int) -> None:
    """Raise `NonFiniteLossError` for the first weighted term that is NaN/inf (else for the total)."""
    for spec, weight in terms:
        value = float(logs[spec.name])
        if weight != 0 and not math.isfinite(value):
            raise NonFiniteLossError(f"loss term '{spec.name}' is {value} at step {step}: lower the learning "
                                     "rate or check the inputs (the last good checkpoint is unaffected)",
                                     spec.name)
    raise NonFiniteLossError(f"the weighted total loss is not finite at step {step} (each term is finite: "
                             "the weights overflow it)", "total")
