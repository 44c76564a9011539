"""A run's configuration as typed objects, built once from the parsed command line (`arguments.py`).

Past the command line nothing reads an argparse Namespace: the trainer, steps, engines, setup and
selection each take the part of `RunConfig` they need. Each section's fields are its knobs
(`Code/knobs/training.py`: `section="optim"` etc.), so a knob declared there is a field here; sections are
frozen, keyword-only dataclasses whose `__post_init__` runs the knobs' checks (and `_check` below for rules
that span fields). `RunConfig.flags` keeps the flat resolved flags, which is what `args.json` records (and
what the study compares to reuse a run).
"""

from __future__ import annotations

import argparse
from dataclasses import field
from pathlib import Path
from typing import Any

from Code.data_pipeline.instruction_data import PROMPT_TASKS
from Code.knobs import ConfigError
from Code.knobs.training import TRAINING
from Code.objectives.parsing import parse_losses
from Code.objectives.registry import Term


@TRAINING.section("model")
class ModelConfig:
    def _check(self) -> None:
        if self.student and self.student_config:
            raise ConfigError("give either --student or --student-config, not both")


@TRAINING.section("data")
class DataConfig:
    def _check(self) -> None:  # "dolly" is the old name of "prompt": one name past the command line
        if self.task in PROMPT_TASKS:
            object.__setattr__(self, "task", "prompt")

    @property
    def prompt_masked(self) -> bool:
        return self.task == "prompt"


@TRAINING.section("optim")
class OptimConfig:
    pass


@TRAINING.section("critic")
class CriticConfig:
    pass


@TRAINING.section("log")
class LogConfig:
    pass


@TRAINING.section("select")
class SelectionConfig:
    pass


@TRAINING.section("minillm")
class MiniLLMConfig:
    pass


@TRAINING.section("run")
class RunConfig:
    model: ModelConfig
    data: DataConfig
    optim: OptimConfig
    losses: tuple[Term, ...]
    critic: CriticConfig
    log: LogConfig
    select: SelectionConfig
    minillm: MiniLLMConfig
    flags: dict[str, Any] = field(default_factory=dict, compare=False)

    def _check(self) -> None:
        if self.out_dir is not None:
            object.__setattr__(self, "out_dir", Path(self.out_dir))
        if self.select.select_by == "rougeL" and self.data.task != "prompt":
            raise ConfigError("--select-by rougeL scores responses to prompts: use it with --task prompt")

    @property
    def loss_label(self) -> str:
        return "+".join(t.name for t in self.losses)


def from_namespace(ns: argparse.Namespace) -> RunConfig:
    """The one conversion from flags to typed config (`arguments.parse_config` calls it), by keyword."""
    build = TRAINING.build
    return build(
        RunConfig, ns,
        model=build(ModelConfig, ns), data=build(DataConfig, ns), optim=build(OptimConfig, ns),
        losses=tuple(parse_losses(ns.loss, ns.weights, defaults=vars(ns))),
        critic=build(CriticConfig, ns), log=build(LogConfig, ns), select=build(SelectionConfig, ns),
        minillm=build(MiniLLMConfig, ns), flags=dict(vars(ns)),
    )
