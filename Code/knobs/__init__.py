"""Each knob declared once; its flag, config field, launcher variable and checks derive from the declaration.

A `Knob` names one setting: its name (the argparse dest and, by default, the config field), type,
default, help, check, choices, the environment variable a shell launcher maps onto it, the argparse group
and the config section it lands in. A `Knobs` set is the whole list of one program (training:
`Code.knobs.training.TRAINING`). From a set derive:

    knobs.add_to(parser)              # argparse flags, grouped, with defaults, choices and help
    knobs.check(namespace)            # every knob's check on the parsed values: ConfigError naming the flag
    @knobs.section("optim")           # a frozen, keyword-only dataclass whose fields are the section's knobs;
    class OptimConfig: ...            #   its __post_init__ runs the same checks (then the class's `_check`)
    knobs.build(OptimConfig, values)  # a section's config from flat values (a Namespace or dict), by keyword
    knobs.launcher_map()              # bash lines `flag --seq-len "${SEQ_LEN:-}"` for each knob with a variable

`python3 -m Code.knobs launcher-map training` prints that map; `Code/launch_common.sh` evals it, so a
launcher variable exists because a knob declares it (this module imports no torch: the launcher starts in
milliseconds). Launcher-only knobs (`flag=False`, e.g. NUM_GPUS, MASTER_PORT) are read by the shell itself
and declared here so every list of launcher variables (the GPU check's, the study's) is derived.

A check is a function of the config value returning None (ok) or a phrase ("must be at least 1"); `at_least`
and `between` make the common ones, `choices` is checked too. None (an unset optional knob) is not checked.
Adding a knob: one `Knob(...)` in the program's set, then read it where it is used (`cfg.optim.<field>`).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ConfigError", "Knob", "Knobs", "at_least", "between"]

Check = Callable[[Any], "str | None"]


class ConfigError(ValueError):
    """A bad flag value, config file or config field, reported as one line."""


@dataclass(frozen=True)
class Knob:
    name: str                              # argparse dest (snake_case); the flag is --name-with-dashes
    default: Any = None
    type: Callable[[str], Any] = str       # parses a command-line / YAML string
    help: str = ""
    group: str = "run"                     # argparse group (help layout)
    env: str | None = None                 # launcher variable mapped onto the flag ("" or None: none)
    choices: tuple[Any, ...] = ()
    switch: bool = False                   # boolean: --name turns it on (off with --no-name if negatable)
    negatable: bool = False                # --name / --no-name (argparse.BooleanOptionalAction)
    check: Check | None = None             # on the config value: None if fine, else "must be ..."
    section: str | None = None             # config section the value lands in (None: read from the flat flags)
    field: str | None = None               # its field there (default: name)
    to_config: Callable[[Any], Any] | None = None  # flag value -> config value (e.g. "0.0,0.9" -> (0.0, 0.9))
    flag: bool = True                      # False: a launcher-only variable, read by the shell itself
    nargs: str | None = None               # argparse nargs ("+": one or more values, a list)

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def field_name(self) -> str:
        return self.field or self.name

    def config_value(self, value: Any) -> Any:
        if value is None or self.to_config is None:
            return value
        try:
            return self.to_config(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{self.option} {value!r}: {exc}") from None

    def problem(self, value: Any) -> str | None:
        """Why the config value `value` is not allowed, or None."""
        if value is None:
            return None
        if self.choices and value not in self.choices:
            return "must be " + _alternatives(self.choices)
        return self.check(value) if self.check is not None else None

    def env_line(self) -> str | None:
        """The bash line mapping this knob's variable to its flag (None: no variable or no flag)."""
        if not (self.env and self.flag):
            return None
        if self.switch:  # VAR=1 flips the default: --x for an off knob, --no-x for an on one
            option = self.option if not self.default else "--no-" + self.option[2:]
            return f'switch {option} "${{{self.env}:-0}}"'
        return f'flag {self.option} "${{{self.env}:-}}"'


def _help(k: Knob) -> str:
    """The knob's help with its default and launcher variable, as --help shows them."""
    parts = [] if k.switch or k.default is None else [f"default {k.default}"]
    if k.env:
        parts.append(f"launcher ${k.env}" + ("=1" if k.switch else ""))
    text = k.help + (f" ({'; '.join(parts)})" if parts else "")
    return text.replace("%", "%%").strip()


def _alternatives(choices: Iterable[Any]) -> str:
    names = [str(c) for c in choices]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def at_least(low: float) -> Check:
    return lambda v: None if v >= low else f"must be at least {low}"


def between(low: float, high: float, *, high_open: bool = False) -> Check:
    """low <= v <= high (v < high with high_open)."""
    close = ")" if high_open else "]"
    return lambda v: None if low <= v and (v < high if high_open else v <= high) else \
        f"must be in [{low}, {high}{close}"


class Knobs:
    """The knobs of one program, in declaration order (which is the order of --help and of the launcher map)."""

    def __init__(self, knobs: Iterable[Knob]) -> None:
        self._knobs = tuple(knobs)
        names = [k.name for k in self._knobs]
        envs = [k.env for k in self._knobs if k.env]
        for what, seen in (("name", names), ("environment variable", envs)):
            doubled = sorted({n for n in seen if seen.count(n) > 1})
            if doubled:
                raise ValueError(f"knob {what} declared twice: {doubled}")
        bad = [e for e in envs if not re.fullmatch(r"[A-Z][A-Z0-9_]*", e)]
        if bad:
            raise ValueError(f"launcher variables must be UPPER_CASE identifiers: {bad}")
        self.by_name = {k.name: k for k in self._knobs}

    def __iter__(self) -> Iterator[Knob]:
        return iter(self._knobs)

    def __getitem__(self, name: str) -> Knob:
        return self.by_name[name]

    def __add__(self, other: Knobs) -> Knobs:
        return Knobs([*self._knobs, *other._knobs])

    # ----------------------------------------------------------------------------------- command line
    def add_to(self, parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        """Every knob with a flag as an argparse option, in its group."""
        groups: dict[str, Any] = {}
        for k in self._knobs:
            if not k.flag:
                continue
            g = groups.get(k.group) or groups.setdefault(k.group, parser.add_argument_group(k.group))
            help_ = _help(k)
            if k.switch and k.negatable:
                g.add_argument(k.option, dest=k.name, action=argparse.BooleanOptionalAction, default=k.default,
                               help=help_)
            elif k.switch:
                g.add_argument(k.option, dest=k.name, action="store_true", default=bool(k.default), help=help_)
            else:
                g.add_argument(k.option, dest=k.name, type=k.type, default=k.default, help=help_,
                               choices=list(k.choices) or None, nargs=k.nargs)
        return parser

    def check(self, values: argparse.Namespace | Mapping[str, Any]) -> None:
        """Each knob's check on the flat parsed values; the first problem as ConfigError naming the flag."""
        flat = vars(values) if isinstance(values, argparse.Namespace) else values
        for k in self._knobs:
            if k.name in flat:
                value = flat[k.name]
                problem = k.problem(k.config_value(value))
                if problem:
                    raise ConfigError(f"{k.option} {problem}, got {value}")

    def env_vars(self) -> tuple[str, ...]:
        """Every launcher variable of the set, flags and launcher-only alike."""
        return tuple(k.env for k in self._knobs if k.env)

    def launcher_map(self) -> str:
        """Bash lines mapping each knob's variable to its flag (Code/launch_common.sh evals them)."""
        return "\n".join(line for k in self._knobs if (line := k.env_line())) + "\n"

    # --------------------------------------------------------------------------------- typed config
    def in_section(self, section: str) -> list[Knob]:
        return [k for k in self._knobs if k.section == section]

    def section(self, section: str) -> Callable[[type], type]:
        """Class decorator: a frozen keyword-only dataclass with one field per knob of `section` (its
        default the knob's config default), after the class's own annotated fields. `__post_init__` runs
        the knobs' checks on the values it was given, then the class's own `_check(self)` if it has one."""
        knobs = self.in_section(section)

        def wrap(cls: type) -> type:
            own = dict(cls.__dict__.get("__annotations__", {}))
            annotations = {**own}
            for k in knobs:
                annotations[k.field_name] = Any
                setattr(cls, k.field_name, k.config_value(k.default))
            cls.__annotations__ = annotations
            extra = getattr(cls, "_check", None)

            def __post_init__(self: Any) -> None:
                for k in knobs:
                    value = getattr(self, k.field_name)
                    problem = k.problem(value)
                    if problem:
                        raise ConfigError(f"{cls.__name__}.{k.field_name} ({k.option}) {problem}, got {value!r}")
                if extra is not None:
                    extra(self)

            cls.__post_init__ = __post_init__  # type: ignore[attr-defined]
            cls.__knobs__ = tuple(knobs)  # type: ignore[attr-defined]
            return dataclass(frozen=True, kw_only=True)(cls)

        return wrap

    @staticmethod
    def build(cls: type, values: argparse.Namespace | Mapping[str, Any], **fields: Any) -> Any:
        """A section's config (a class made by `section`) from the flat flag values, by keyword; `fields`
        gives the class's own (non-knob) fields."""
        flat = vars(values) if isinstance(values, argparse.Namespace) else values
        for k in cls.__knobs__:  # type: ignore[attr-defined]
            if k.name in flat:
                fields.setdefault(k.field_name, k.config_value(flat[k.name]))
        return cls(**fields)


def section_fields(cls: type) -> list[str]:
    """The field names of a config class (for tests and readers)."""
    return [f.name for f in dataclasses.fields(cls)]
