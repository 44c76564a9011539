"""One plan for a run's models, from their configs alone: the teacher, how the student is made, its blocks,
the layer map, each checked against the data's vocabulary.

The pre-flight check (`preflight.py`) plans on configs read from config.json (no weights); setup
(`setup.build_models`) plans on the configs of the models it loads, then builds what the plan says. So every
rule (a teacher when the loss needs one, the student's source, truncation, vocabulary, layer map) lives here
once and both paths run it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from transformers import GPT2Config, PretrainedConfig

from Code.config import ModelConfig
from Code.data_pipeline.lm_datasets import check_vocab
from Code.knobs import ConfigError
from Code.modeling.families import check_pair, context_length, family_of, hidden_size, num_layers, with_layers
from Code.modeling.layer_map import resolve_layer_map, validate_layer_map
from Code.modeling.truncation import parse_student_layers, student_config_from_spec

# (hub name or folder, "teacher" or "student") -> that model's config: read from config.json by the check,
# taken from the loaded model by setup.
ConfigOf = Callable[[str, str], PretrainedConfig]


@dataclass(frozen=True)
class ModelPlan:
    teacher: PretrainedConfig | None        # None: --no-teacher
    student: PretrainedConfig               # the student's config as it will be built
    how: str                                # "loaded", "config" (random init) or "truncated"
    base: PretrainedConfig | None           # how == "config": the config the student's spec overrides
    student_layers: list[int] | None        # how == "truncated": the teacher blocks it keeps
    layer_map: list[tuple[int, int]]        # (student hidden index, teacher hidden index)

    def describe(self, cfg: ModelConfig) -> str:
        if self.how == "loaded":
            return f"from {cfg.student}"
        if self.how == "config":
            return f"random {cfg.student_config}"
        return f"teacher blocks {','.join(map(str, self.student_layers or []))}"

    @property
    def contexts(self) -> list[tuple[str, int]]:
        """(model, positions) of each model the run holds."""
        named = [("teacher", self.teacher), ("student", self.student)]
        return [(name, context_length(c)) for name, c in named if c is not None]


def plan_models(cfg: ModelConfig, meta: Mapping[str, Any], needs_teacher: bool, config_of: ConfigOf, *,
                loss: str = "the loss") -> ModelPlan:
    """The run's models as `setup.build_models` makes them; ConfigError or ValueError naming what is wrong.
    `loss` names the run's loss in the message when it needs a teacher that --no-teacher drops."""
    if cfg.no_teacher and needs_teacher:
        raise ConfigError(f"--no-teacher but {loss} needs a teacher: drop --no-teacher (NO_TEACHER) or use --loss lm")
    teacher = None
    if not cfg.no_teacher:
        teacher = config_of(cfg.teacher, "teacher")
        check_vocab(dict(meta), teacher.vocab_size, what=f"teacher {cfg.teacher}")
    base, layers = None, None
    if cfg.student:
        student, how = config_of(cfg.student, "student"), "loaded"
    elif cfg.student_config:
        # Without a teacher (pretraining one from scratch), the vocabulary comes from the data's tokenizer.
        eos = int(meta["eos_id"])
        base = teacher if teacher is not None else GPT2Config(
            vocab_size=int(meta["vocab_size"]), bos_token_id=eos, eos_token_id=eos)
        student, how = student_config_from_spec(cfg.student_config, base), "config"
    else:
        if teacher is None:
            raise ConfigError("a truncated student needs a teacher: give --teacher, --student or --student-config "
                              "(or drop --no-teacher)")
        layers = parse_student_layers(cfg.student_layers, num_layers(teacher))
        bound = family_of(teacher).position_bound
        if bound and getattr(teacher, bound, False):
            raise ConfigError(f"cannot truncate a teacher with {bound}=True: give --student "
                              "or --student-config instead of --student-layers")
        student, how = with_layers(teacher, layers), "truncated"
    check_vocab(dict(meta), student.vocab_size, what="student")
    if teacher is not None:
        check_pair(teacher, student)
    layer_map: list[tuple[int, int]] = []
    if teacher is not None:
        s_n, t_n = num_layers(student), num_layers(teacher)
        layer_map, _ = resolve_layer_map(cfg.layer_map, layers, s_n, t_n)
        validate_layer_map(layer_map, s_n, t_n, hidden_size(student), hidden_size(teacher))
    return ModelPlan(teacher, student, how, base, layers, layer_map)
