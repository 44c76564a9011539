"""Each loss term's knobs: one frozen dataclass per kind of term, validated when built.

A field is settable per term (`kd[temperature=2]`, a config file's `{name: kd, temperature: 2}`) and, by
the flag of the same name, for every term that has it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class LossSpecError(ValueError):
    """A `--loss` / `--weights` / loss option that cannot be used."""


def _require(checks: Sequence[tuple[bool, str]]) -> None:
    for ok, message in checks:
        if not ok:
            raise LossSpecError(message)


@dataclass(frozen=True)
class NoOptions:
    """A term without knobs."""


@dataclass(frozen=True)
class LogitOptions:
    temperature: float = 1.0  # kd/rkl/jsd/skl are scaled by T^2 (Hinton et al.)

    def __post_init__(self) -> None:
        _require([(self.temperature > 0, f"temperature must be > 0, got {self.temperature}")])


@dataclass(frozen=True)
class KDOptions(LogitOptions):
    kd_topk: int = 0  # KL over the teacher's top-k tokens plus the rest as one bucket (topk_kd.py); 0 = all

    def __post_init__(self) -> None:
        super().__post_init__()
        _require([(self.kd_topk >= 0, f"kd_topk must be >= 0 (0 = full vocabulary), got {self.kd_topk}")])


@dataclass(frozen=True)
class JSDOptions(LogitOptions):
    jsd_beta: float = 0.5  # mixing coefficient; 0.5 = symmetric JSD

    def __post_init__(self) -> None:
        super().__post_init__()
        _require([(0 < self.jsd_beta < 1, f"jsd_beta must be in (0, 1), got {self.jsd_beta}")])


@dataclass(frozen=True)
class SkewOptions(LogitOptions):
    skew_alpha: float = 0.1  # KL(p || a*p + (1-a)*q), DistiLLM's default

    def __post_init__(self) -> None:
        super().__post_init__()
        _require([(0 <= self.skew_alpha < 1, f"skew_alpha must be in [0, 1), got {self.skew_alpha}")])


@dataclass(frozen=True)
class MSEOptions:
    mse_normalize: bool = False  # divide each dim by the teacher's per-dim std in the batch
    norm_eps: float = 1e-5       # added to that variance

    def __post_init__(self) -> None:
        _require([(self.norm_eps > 0, f"norm_eps must be > 0, got {self.norm_eps}")])


@dataclass(frozen=True)
class CosOptions:
    cos_last_only: bool = False  # the last matched layer only (Hugging Face's DistilGPT2)


@dataclass(frozen=True)
class SWDOptions:
    swd_projections: int = 128   # random directions per layer per call
    swd_p: int = 1               # 1 = SW_1, 2 = squared SW_2
    swd_max_samples: int = 4096  # positions subsampled per call

    def __post_init__(self) -> None:
        _require([
            (self.swd_projections >= 1, f"swd_projections must be >= 1, got {self.swd_projections}"),
            (self.swd_p in (1, 2), f"swd_p must be 1 or 2, got {self.swd_p}"),
            (self.swd_max_samples >= 1, f"swd_max_samples must be >= 1, got {self.swd_max_samples}"),
        ])


@dataclass(frozen=True)
class WDOptions:
    wd_reduce: str = "mean"  # over matched layers, like every hidden term; "sum": the seed study's

    def __post_init__(self) -> None:
        _require([(self.wd_reduce in ("mean", "sum"), f"wd_reduce must be mean or sum, got {self.wd_reduce!r}")])
