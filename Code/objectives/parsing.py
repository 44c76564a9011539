"""`--loss` and `--weights` (or a config file's list of terms) -> the run's weighted `Term`s with options."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from Code.objectives.options import LossSpecError
from Code.objectives.registry import REGISTRY, Term

_TERM = re.compile(r"^\s*([A-Za-z0-9_\-]*)\s*(?:\[(.*)\])?\s*$")


def _split_terms(spec: str) -> list[tuple[str, dict[str, str]]]:
    """`kd[temperature=2,kd_topk=64]+lm` -> [("kd", {...}), ("lm", {})]."""
    out = []
    for raw in spec.split("+"):
        match = _TERM.match(raw)
        if not match or not match.group(1):
            raise LossSpecError(f"cannot read term {raw.strip()!r} of --loss '{spec}': write names joined by "
                                "'+', each optionally with [key=value,...], e.g. wd+kd[temperature=2]+lm")
        options: dict[str, str] = {}
        for item in filter(None, (s.strip() for s in (match.group(2) or "").split(","))):
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise LossSpecError(f"option {item!r} of loss '{match.group(1)}' is not key=value")
            options[key.strip()] = value.strip()
        out.append((match.group(1), options))
    return out


def _parse_weights(weights: str | None, n: int, spec: str) -> list[float]:
    if weights is None or not str(weights).strip():
        return [1.0] * n
    try:
        values = [float(w) for w in str(weights).split(",")]
    except ValueError:
        raise LossSpecError(f"--weights '{weights}' must be comma-separated numbers, e.g. 0.3,0.4,0.3") from None
    if len(values) != n:
        raise LossSpecError(f"--weights '{weights}' has {len(values)} values for {n} losses in --loss '{spec}': "
                            "give one weight per loss")
    return values


def _term_entries(spec: str | Sequence[Mapping[str, Any]], weights: str | None) -> list[tuple[str, float, dict]]:
    if isinstance(spec, str):
        parsed = _split_terms(spec)
        values = _parse_weights(weights, len(parsed), spec)
        return [(name, w, opts) for (name, opts), w in zip(parsed, values, strict=True)]
    if weights is not None and str(weights).strip():
        raise LossSpecError("the loss is a list of terms with their own weights: drop --weights")
    entries = []
    for item in spec:
        if not isinstance(item, Mapping) or "name" not in item:
            raise LossSpecError(f"loss list entry {item!r} must be a mapping with a name, e.g. "
                                "{name: kd, weight: 0.5, temperature: 2}")
        opts = {k: v for k, v in item.items() if k not in ("name", "weight")}
        entries.append((str(item["name"]), item.get("weight", 1.0), opts))
    return entries


def parse_losses(spec: str | Sequence[Mapping[str, Any]], weights: str | None = None,
                 defaults: Mapping[str, Any] | None = None) -> list[Term]:
    """`"wd+kd[temperature=2]+lm"` with `"0.3,0.4,0.3"`, or a YAML list of `{name, weight, option: value}`.

    `defaults` (the run's flags) set any option a term has by its field name; a term's own options win.
    """
    entries = _term_entries(spec, weights)
    names = [name for name, _, _ in entries]
    if not names:
        raise LossSpecError("empty --loss: give names joined by '+', e.g. wd+kd+lm")
    for name in names:
        if name not in REGISTRY:
            raise LossSpecError(f"unknown loss '{name}' in --loss; known losses: {', '.join(sorted(REGISTRY))}")
    if len(set(names)) != len(names):
        raise LossSpecError("a loss appears twice in --loss: give each term once with its weight")
    terms = []
    for name, weight, own in entries:
        weight = float(weight)
        if not math.isfinite(weight) or weight < 0:
            raise LossSpecError(f"loss '{name}' has a negative or non-finite weight ({weight}): weights must be >= 0")
        loss = REGISTRY[name]
        fields = {f.name for f in dataclasses.fields(loss.options)}
        inherited = {k: v for k, v in (defaults or {}).items() if k in fields and v is not None}
        terms.append(Term(loss, weight, loss.make_options(**{**inherited, **own})))
    return terms
