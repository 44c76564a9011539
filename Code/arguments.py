"""The training command line: flags (declared once in `Code/knobs/training.py`), presets, `--config` files.

A YAML file given with `--config` may set any flag (dashes or underscores); the command line wins.
Presets (`--preset seed_wd`) fill the loss, weights and critic settings of a named recipe, and flags
given explicitly still win over the preset.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from Code import CODE_DIR
from Code.config import RunConfig, from_namespace
from Code.knobs import ConfigError
from Code.knobs.training import PRESETS, TRAINING
from Code.objectives.registry import LossSpecError

__all__ = ["PRESETS", "ConfigError", "build_parser", "parse_args", "parse_config", "validate"]


def build_parser() -> argparse.ArgumentParser:
    """Every training flag, derived from its declaration in `Code/knobs/training.py` (one `Knob` each)."""
    return TRAINING.add_to(argparse.ArgumentParser(description="Distil a GPT-2 teacher into a smaller student."))


def _config_defaults(parser: argparse.ArgumentParser, path: str) -> dict[str, object]:
    import yaml

    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config file {path} not found: pass an existing YAML file to --config")
    try:
        raw = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML ({exc.__class__.__name__}): fix it") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must be a mapping of flag: value")
    known = {a.dest for a in parser._actions}
    values = {str(k).replace("-", "_"): v for k, v in raw.items()}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"config file {path} sets unknown flags {unknown}: see --help for the names")
    for key, value in values.items():  # YAML reads 3e-4 as a string: parse it as its flag would
        knob = TRAINING.by_name.get(key)
        if knob is not None and isinstance(value, str) and knob.type is not str:
            try:
                values[key] = knob.type(value)
            except ValueError:
                raise ConfigError(f"config file {path}: {key}: {value!r} is not a {knob.type.__name__} "
                                  f"(as {knob.option} takes)") from None
    return values


def _explicit_dests(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """Which options the command line itself set (so presets and configs do not override them)."""
    flags = {opt: a.dest for a in parser._actions for opt in a.option_strings}
    dests = set()
    for token in argv:
        name = token.split("=", 1)[0]
        if name in flags:
            dests.add(flags[name])
    return dests


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    # DeepSpeed's launcher appends --local_rank=N; LOCAL_RANK in the environment says the same.
    argv = [a for a in argv if not a.startswith("--local_rank")]
    parser = build_parser()
    first = parser.parse_args(argv)
    explicit = _explicit_dests(parser, argv)
    layered: dict[str, object] = {}
    if first.config:
        layered.update(_config_defaults(parser, first.config))
    preset = layered.get("preset", first.preset) if "preset" not in explicit else first.preset
    if preset:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}: choose one of {sorted(PRESETS)}")
        # preset < config file < command line
        layered = {**PRESETS[preset], **layered}
        if "loss" in explicit and "weights" not in explicit:
            layered.pop("weights", None)  # LOSS=wd alone must not inherit the preset's three weights
    args = parser.parse_args(argv)
    for key, value in layered.items():
        if key not in explicit:
            setattr(args, key, value)
    validate(args)
    return args


def validate(args: argparse.Namespace) -> None:
    """Resolve the defaults that depend on other flags, then every knob's check and the config's own rules
    (by building the typed config once: the checks live on the knobs and in `Code/config.py`, not here)."""
    if args.student_dropout is None and not args.no_teacher:
        args.student_dropout = 0.0  # the teacher's eval mode (see --help); args.json records the value
    if args.grad_share_interval is None:
        args.grad_share_interval = args.log_interval
    TRAINING.check(args)
    args.critic_betas = ",".join(str(b) for b in TRAINING["critic_betas"].config_value(args.critic_betas))
    for name in _loss_names(args.loss):
        if name in PRESETS:
            preset = PRESETS[name]
            raise ConfigError(f"'{name}' is a preset, not a loss: use --preset {name} "
                              f"(= --loss {preset['loss']} --weights {preset['weights']} and more)")
    if args.out_dir is None:
        name = args.run_name or f"{'_'.join(_loss_names(args.loss))}_seed{args.seed}"
        args.out_dir = str(CODE_DIR / "output" / name)
    _typed(args)


def _loss_names(loss: object) -> list[str]:
    """The term names of `--loss` (a `+` string with optional [options], or a config file's list)."""
    if isinstance(loss, str):
        return [part.split("[", 1)[0].strip() for part in loss.split("+")]
    return [str(item.get("name", "")) if isinstance(item, dict) else str(item) for item in loss or []]


def parse_config(argv: list[str] | None = None) -> RunConfig:
    """Command line (and config file, preset) -> the typed `RunConfig` every other module reads."""
    return _typed(parse_args(argv))


def _typed(args: argparse.Namespace) -> RunConfig:
    try:
        return from_namespace(args)
    except LossSpecError as exc:
        raise ConfigError(str(exc)) from None
