"""The loss registry: every distillation term as a pure function `(LossInputs, options) -> (scalar, parts)`.

The training loop asks a `LossSpec` what a term needs (teacher, logits, hidden states, critics) and
never branches on a loss name. Adding a term is one `register(LossSpec(...))` entry: its function and,
if it has knobs, its own frozen options dataclass (each field is settable per term, `kd[temperature=2]`
or a YAML `{name: kd, temperature: 2}`, and by the flag of the same name for every term at once). The
math lives in `logit.py` (per-token divergences over the vocabulary) and `hidden.py` (per-layer distances
between hidden states); this file adapts them to `LossInputs`, masks and averages.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from Code.objectives import estimators as est
from Code.objectives import hidden as hl
from Code.objectives import logit as ll
from Code.objectives import topk_kd as tk
from Code.objectives.masking import flat_mask, label_mask, masked_mean
from Code.objectives.options import (
    CosOptions,
    JSDOptions,
    KDOptions,
    LogitOptions,
    LossSpecError,
    MSEOptions,
    NoOptions,
    SkewOptions,
    SWDOptions,
    WDOptions,
)

LossOutput = tuple[Tensor, dict[str, Tensor]]


class NonFiniteLossError(ValueError):
    """A loss term came out NaN or inf; `.term` names it."""

    def __init__(self, message: str, term: str) -> None:
        super().__init__(message)
        self.term = term


class CriticEstimates(Protocol):
    """What a loss term may read from the critics: the student side of the Wasserstein estimate.

    Training the critics is the step's job (`DistillStep.train_critics`); a term only reads.
    """

    last_estimates: Tensor | None  # (L,) per-layer W1 estimates from the critics' latest update

    def student_loss(self, student_feats: list[Tensor], mask: Tensor) -> Tensor:
        """(L,) per-layer -E[f(student)], differentiable with respect to the student's features."""
        ...


# ----------------------------------------------------------------------------------------- inputs, specs
@dataclass
class LossInputs:
    labels: Tensor                                  # (B, T) next-token ids aligned with logits, -100 = ignore
    mask: Tensor                                    # (B, T) bool, True = a real position
    student_logits: Tensor | None = None            # (B, T, V)
    teacher_logits: Tensor | None = None
    teacher_topk: tk.TopKTargets | None = None     # (B, T, k) cached top-k targets, in place of teacher_logits
    student_hidden: list[Tensor] = field(default_factory=list)  # matched layers, (B, T, D_teacher)
    teacher_hidden: list[Tensor] = field(default_factory=list)
    critic: CriticEstimates | None = None
    layer_ids: tuple[int, ...] | None = None        # names of per-layer parts (student hidden index), else 1..L
    seed: int | None = 0                            # per-step randomness (swd) from seed + step; None: global RNG
    step: int = 0


@dataclass(frozen=True)
class LossSpec:
    """A term: its name and function, then by keyword what it needs (the loop asks these, never the name)."""

    name: str
    fn: Callable[[LossInputs, Any], LossOutput]
    _: dataclasses.KW_ONLY
    needs_teacher: bool = False
    needs_logits: bool = False
    needs_hidden: bool = False
    needs_critic: bool = False
    topk_cache: bool = False  # a teacher cache's top-k targets (LossInputs.teacher_topk) can stand in for the teacher
    doc: str = ""
    options: type = NoOptions  # a frozen dataclass; its fields are the term's knobs

    def make_options(self, **values: Any) -> Any:
        """The term's options from `values` (unknown keys: one-line error listing the known ones)."""
        known = {f.name: f for f in dataclasses.fields(self.options)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            listed = ", ".join(known) or "none"
            raise LossSpecError(f"loss '{self.name}' has no option {unknown[0]!r}; its options: {listed}")
        return self.options(**{k: _coerce(known[k], v, self.name) for k, v in values.items()})


def _coerce(spec_field: dataclasses.Field, value: Any, term: str) -> Any:
    """YAML and `key=value` give strings or ints where a float or bool is meant: convert by the default."""
    default = spec_field.default
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                return value.lower() in ("true", "1")
            return bool(value)
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
    except (TypeError, ValueError):
        raise LossSpecError(f"loss '{term}': option {spec_field.name}={value!r} is not a "
                            f"{type(default).__name__}") from None
    return value


@dataclass(frozen=True)
class Term:
    """One weighted term of a run's loss, with its own options."""

    spec: LossSpec
    weight: float
    options: Any

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class LossPlan:
    """What one step must compute for a list of terms (so the step skips the rest)."""

    terms: tuple[Term, ...]
    needs_teacher: bool
    needs_teacher_logits: bool
    needs_hidden: bool
    needs_critic: bool

    @classmethod
    def from_terms(cls, terms: Sequence[Term], cached: bool = False) -> LossPlan:
        """`cached`: a teacher cache serves the terms marked `topk_cache`, so they need no live teacher."""
        specs = [t.spec for t in terms]
        live = [s for s in specs if s.needs_teacher and not (cached and s.topk_cache)]
        return cls(terms=tuple(terms),
                   needs_teacher=bool(live),
                   needs_teacher_logits=any(s.needs_logits for s in live),
                   needs_hidden=any(s.needs_hidden for s in specs),
                   needs_critic=any(s.needs_critic for s in specs))


# ---------------------------------------------------------------------------------------------- logits
def _logit_rows(inputs: LossInputs, name: str, teacher: bool = True) -> tuple[Tensor, Tensor | None, Tensor]:
    if inputs.student_logits is None or (teacher and inputs.teacher_logits is None):
        raise LossSpecError(f"loss '{name}' needs {'student and teacher' if teacher else 'student'} logits, "
                            "but LossInputs has none: compute them when the spec's needs_logits is set")
    vocab = inputs.student_logits.shape[-1]
    s = inputs.student_logits.reshape(-1, vocab)
    t = inputs.teacher_logits.reshape(-1, vocab) if teacher else None  # type: ignore[union-attr]
    return s, t, inputs.labels.reshape(-1)


def _lm(inputs: LossInputs, options: NoOptions) -> LossOutput:
    s, _, labels = _logit_rows(inputs, "lm", teacher=False)
    return masked_mean(ll.cross_entropy_rows(s, labels), label_mask(labels)), {}


def _divergence(name: str, rows_fn: Callable[[Tensor, Tensor, Any], Tensor], scaled: bool = True):
    def fn(inputs: LossInputs, options: LogitOptions) -> LossOutput:
        s, t, labels = _logit_rows(inputs, name)
        value = masked_mean(rows_fn(s, t, options), label_mask(labels))  # type: ignore[arg-type]
        return (value * options.temperature**2 if scaled else value), {}

    return fn


def _kd_rows(s: Tensor, t: Tensor, o: KDOptions) -> Tensor:
    if o.kd_topk:  # the teacher's top-k plus one bucket for the rest (topk_kd.py), as a teacher cache gives it
        return tk.topk_kl_rows(s, tk.topk_targets(t, o.kd_topk, o.temperature).rows())
    return ll.forward_kl_rows(s, t, o.temperature)


_kd_live = _divergence("kd", _kd_rows)


def _kd(inputs: LossInputs, options: KDOptions) -> LossOutput:
    """Forward KL; from a teacher cache's top-k targets when the inputs carry them (kd_topk <= the cache's k)."""
    if inputs.teacher_topk is None:
        return _kd_live(inputs, options)
    s, _, labels = _logit_rows(inputs, "kd", teacher=False)
    targets = inputs.teacher_topk
    if targets.temperature != options.temperature:
        raise LossSpecError(f"loss 'kd' at temperature {options.temperature}, but the teacher cache holds targets "
                            f"at {targets.temperature}: use --temperature {targets.temperature} or rebuild the cache")
    rows = tk.topk_kl_rows(s, targets.first(options.kd_topk).rows())
    return masked_mean(rows, label_mask(labels)) * options.temperature**2, {}


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
    return hl.stack_layers(s_list), hl.stack_layers([t.detach() for t in t_list]), flat_mask(inputs.mask)


def layer_parts(values: Tensor, layer_ids: tuple[int, ...] | None, prefix: str = "") -> dict[str, Tensor]:
    """`{prefix}layer<i>: value` per matched layer, named by student hidden index (else 1..L)."""
    ids = layer_ids or tuple(range(1, values.shape[0] + 1))
    if len(ids) != values.shape[0]:
        raise LossSpecError(f"layer_ids has {len(ids)} names for {values.shape[0]} matched layers")
    return {f"{prefix}layer{i}": v for i, v in zip(ids, values, strict=True)}


def _mse(inputs: LossInputs, options: MSEOptions) -> LossOutput:
    s, t, mask = _hidden(inputs, "mse")
    per = hl.mse_per_layer(s, t, mask, options.mse_normalize, options.norm_eps)
    return per.mean(), layer_parts(per, inputs.layer_ids)


def _cos(inputs: LossInputs, options: CosOptions) -> LossOutput:
    s, t, mask = _hidden(inputs, "cos")
    if options.cos_last_only:
        per = hl.cosine_per_layer(s[-1:], t[-1:], mask)
        ids = inputs.layer_ids
        return per[0], {f"layer{ids[-1] if ids else s.shape[0]}": per[0]}
    per = hl.cosine_per_layer(s, t, mask)
    return per.mean(), layer_parts(per, inputs.layer_ids)


def _step_generator(inputs: LossInputs, device: torch.device) -> torch.Generator | None:
    # Fresh samples every step, yet a resumed run draws the same ones as an uninterrupted run.
    if inputs.seed is None:
        return None
    return torch.Generator(device=device).manual_seed(inputs.seed * 1_000_003 + inputs.step)


def _swd(inputs: LossInputs, options: SWDOptions) -> LossOutput:
    s, t, mask = _hidden(inputs, "swd")
    per = hl.sliced_wasserstein_per_layer(s, t, mask, options.swd_projections, options.swd_p,
                                          options.swd_max_samples, _step_generator(inputs, s.device))
    return per.mean(), layer_parts(per, inputs.layer_ids)


def _wd(inputs: LossInputs, options: WDOptions) -> LossOutput:
    """Mean over matched layers of `-E[f_l(student_l)]` (as mse/cos/swd average theirs), so the term's scale
    does not grow with the number of matched layers; `wd_reduce=sum` is the seed study's sum."""
    if inputs.critic is None:
        raise LossSpecError("loss 'wd' needs critics: pass their estimates as LossInputs.critic")
    _check_hidden(inputs, "wd")
    per = inputs.critic.student_loss(inputs.student_hidden, inputs.mask)
    parts = layer_parts(per, inputs.layer_ids, prefix="student_")
    if inputs.critic.last_estimates is not None:
        parts.update(layer_parts(inputs.critic.last_estimates, inputs.layer_ids))
        # the distance itself (mean over layers), shown as wd_est beside the term, whose level is arbitrary
        parts["estimate"] = inputs.critic.last_estimates.mean()
    return (per.sum() if options.wd_reduce == "sum" else per.mean()), parts


def _sinkhorn(paired: bool) -> Callable[[LossInputs, est.SinkhornOptions], LossOutput]:
    name = "sinkhorn" if paired else "sinkhorn_unpaired"

    def fn(inputs: LossInputs, options: est.SinkhornOptions) -> LossOutput:
        s, t, mask = _hidden(inputs, name)
        per = est.sinkhorn_terms(s, t, mask, options, paired, _step_generator(inputs, s.device))
        return per.mean(), layer_parts(per, inputs.layer_ids)

    return fn


def _gauss_w2(inputs: LossInputs, options: est.GaussW2Options) -> LossOutput:
    s, t, mask = _hidden(inputs, "gauss_w2")
    s, t = est.standardize_by_teacher(s, t, mask)
    per = est.gaussian_w2_per_layer(s, t, mask, options.gauss_eps)
    return per.mean(), layer_parts(per, inputs.layer_ids)


REGISTRY: dict[str, LossSpec] = {}


def register(spec: LossSpec) -> LossSpec:
    """Add a term to the registry (a test or a user module may add its own before training)."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", spec.name):
        raise LossSpecError(f"loss name {spec.name!r} must be lowercase letters, digits and _")
    if not (dataclasses.is_dataclass(spec.options) and spec.options.__dataclass_params__.frozen):
        raise LossSpecError(f"loss '{spec.name}': options must be a frozen dataclass")
    REGISTRY[spec.name] = spec
    return spec


for _spec in [
    LossSpec("lm", _lm, needs_logits=True, doc="next-token cross-entropy on the labels"),
    LossSpec("kd", _kd, needs_teacher=True, needs_logits=True, topk_cache=True, options=KDOptions,
             doc="forward KL(teacher || student) at temperature T, x T^2 (kd_topk: teacher's top-k + a rest bucket)"),
    LossSpec("rkl", _divergence("rkl", lambda s, t, o: ll.reverse_kl_rows(s, t, o.temperature)),
             needs_teacher=True, needs_logits=True, options=LogitOptions, doc="reverse KL(student || teacher), x T^2"),
    LossSpec("jsd", _divergence("jsd", lambda s, t, o: ll.jsd_rows(s, t, o.temperature, o.jsd_beta)),
             needs_teacher=True, needs_logits=True, options=JSDOptions,
             doc="generalized Jensen-Shannon (jsd_beta), x T^2"),
    LossSpec("skl", _divergence("skl", lambda s, t, o: ll.skew_kl_rows(s, t, o.temperature, o.skew_alpha)),
             needs_teacher=True, needs_logits=True, options=SkewOptions,
             doc="skew KL(p || a p + (1-a) q) (skew_alpha), x T^2"),
    LossSpec("tvd", _divergence("tvd", lambda s, t, o: ll.tvd_rows(s, t, o.temperature), scaled=False),
             needs_teacher=True, needs_logits=True, options=LogitOptions, doc="total variation distance, in [0, 1]"),
    LossSpec("mse", _mse, needs_teacher=True, needs_hidden=True, options=MSEOptions,
             doc="mean over layers of hidden-state MSE"),
    LossSpec("cos", _cos, needs_teacher=True, needs_hidden=True, options=CosOptions,
             doc="1 - cosine similarity of hidden states"),
    LossSpec("swd", _swd, needs_teacher=True, needs_hidden=True, options=SWDOptions,
             doc="critic-free sliced Wasserstein distance"),
    LossSpec("wd", _wd, needs_teacher=True, needs_hidden=True, needs_critic=True, options=WDOptions,
             doc="Wasserstein critics (--critic-penalty lp|gp, --critic-pairing): mean over layers of "
             "-E[f(student)] (wd_reduce=sum: the seed study's sum)"),
    LossSpec("sinkhorn", _sinkhorn(True), needs_teacher=True, needs_hidden=True, options=est.SinkhornOptions,
             doc="debiased Sinkhorn divergence (GeomLoss) between student and teacher states at the same positions"),
    LossSpec("sinkhorn_unpaired", _sinkhorn(False), needs_teacher=True, needs_hidden=True,
             options=est.SinkhornOptions, doc="debiased Sinkhorn divergence, student and teacher states from "
             "disjoint halves of the positions (only the distributions can match)"),
    LossSpec("gauss_w2", _gauss_w2, needs_teacher=True, needs_hidden=True, options=est.GaussW2Options,
             doc="closed-form W2^2 between per-dimension Gaussians (means and stds), standardised units"),
]:
    register(_spec)


def compute_losses(terms: Sequence[Term], inputs: LossInputs,
                   check_finite: bool = True) -> tuple[Tensor, dict[str, Tensor]]:
    """Weighted total and detached logs: `{name: unweighted value, name/part: ...}`.

    Losses run with autocast off (each casts to fp32 itself). `check_finite` costs one host sync; a
    non-finite total raises `NonFiniteLossError` naming the term. Zero-weight terms are logged only.
    """
    values = term_values(terms, inputs)
    total: Tensor | None = None
    logs: dict[str, Tensor] = {}
    for term, (value, parts) in zip(terms, values, strict=True):
        logs[term.name] = value.detach()
        for part, v in parts.items():
            logs[f"{term.name}/{part}"] = v.detach()
        if term.weight != 0:
            total = value * term.weight if total is None else total + value * term.weight
    if total is None:
        total = torch.zeros((), device=inputs.labels.device)
    if check_finite and not bool(torch.isfinite(total)):
        raise_non_finite(terms, logs)
    return total, logs


def term_values(terms: Sequence[Term], inputs: LossInputs) -> list[LossOutput]:
    """Each term's unweighted value (still attached to the graph) and its named parts, autocast off."""
    with torch.autocast(inputs.labels.device.type, enabled=False):
        return [term.spec.fn(inputs, term.options) for term in terms]


def raise_non_finite(terms: Sequence[Term], logs: Mapping[str, Tensor]) -> None:
    """Raise `NonFiniteLossError` for the first weighted term that is NaN/inf (else for the total).

    The message names the term, not the step nor a checkpoint: the loop that catches it adds the step number
    and the checkpoint to go back to, which it knows and the registry does not.
    """
    for term in terms:
        value = float(logs[term.name])
        if term.weight != 0 and not math.isfinite(value):
            raise NonFiniteLossError(f"loss term '{term.name}' is {value}: lower the learning rate or check the "
                                     "inputs", term.name)
    raise NonFiniteLossError("the weighted total loss is not finite (each term is finite: the weights overflow it)",
                             "total")
