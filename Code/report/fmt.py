"""How the report writes numbers: fixed formats (so tests can recompute them), Markdown tables, mean ± sd."""

from __future__ import annotations

import math

from Code.report.stats import mean, std

MISSING = "–"  # a number the runs do not have (e.g. bits per byte of runs evaluated before it existed)


def num(x: float | None, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def sig(x: float | None, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}g}"


def pm(values: list[float], digits: int = 2, fmt=num) -> str:
    """`mean ± std` over seeds (sample std); a single value has no spread."""
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{fmt(values[0], digits)} (1 seed)"
    spread = fmt(std(values), digits) if fmt is num else fmt(std(values), 2)  # two significant digits of spread
    return f"{fmt(mean(values), digits)} ± {spread}"


def partial_pm(values: list[float | None], digits: int = 2) -> str:
    """`pm` of the values present; MISSING when none is; how many seeds when only some are."""
    have = [v for v in values if v is not None]
    if not have:
        return MISSING
    if len(have) == len(values):
        return pm(have, digits)
    spread = f" ± {num(std(have), digits)}" if len(have) > 1 else ""
    return f"{num(mean(have), digits)}{spread} ({len(have)} of {plural(len(values), 'seed')})"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def pvalue(p: float) -> str:
    if p != p:
        return "n/a"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def pct(x: float) -> str:
    """A signed percentage (n/a for nan)."""
    return "n/a" if x != x else f"{x:+.2f}%"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]
