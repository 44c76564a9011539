"""Statistics for the report: mean and spread over seeds, paired tests across seeds, effect sizes, Holm.

The tests are scipy's: `scipy.stats.ttest_rel` (two-sided paired t-test) with the 95% confidence interval
of the mean difference from `scipy.stats.t.ppf`, and `scipy.stats.wilcoxon(method="exact")` (two-sided
exact signed-rank test, zero differences dropped). Holm's step-down correction is the few lines below
(scipy has none: `false_discovery_control` is Benjamini-Hochberg).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

from scipy import stats as sps

CONFIDENCE = 0.95


def mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if values else math.nan


def std(values: Sequence[float]) -> float:
    """Sample standard deviation (n - 1); nan below two values."""
    if len(values) < 2:
        return math.nan
    m = mean(values)
    return math.sqrt(math.fsum((v - m) ** 2 for v in values) / (len(values) - 1))


# ------------------------------------------------------------------------------ paired tests
@dataclass(frozen=True)
class PairedResult:
    n: int                 # pairs (seeds present in both)
    mean_diff: float       # mean of a - b, in the metric's unit (e.g. PPL)
    ci_low: float          # 95% confidence interval of the mean difference (t based), same unit
    ci_high: float
    t: float
    p_t: float             # two-sided paired t-test
    p_wilcoxon: float      # two-sided exact Wilcoxon signed-rank (zeros dropped)
    baseline_mean: float = math.nan  # mean of b: what the percentages below are relative to

    def percent(self, value: float) -> float:
        """`value` (a difference in the metric's unit) in percent of the baseline mean (nan without one)."""
        if math.isnan(value) or math.isnan(self.baseline_mean) or self.baseline_mean == 0.0:
            return math.nan
        return 100.0 * value / abs(self.baseline_mean)

    @property
    def pct_diff(self) -> float:
        """Mean difference in percent of b's mean."""
        return self.percent(self.mean_diff)

    @property
    def pct_ci(self) -> tuple[float, float]:
        """The 95% CI in percent of b's mean (b's mean taken as fixed: its own uncertainty is not added)."""
        return self.percent(self.ci_low), self.percent(self.ci_high)


def paired_t(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float, float]:
    """(t, two-sided p, ci_low, ci_high) of the paired differences a - b (scipy.stats.ttest_rel; CI from
    scipy.stats.t.ppf). Fewer than two pairs: all nan. No spread in the differences (where scipy's t is
    undefined): identical pairs give t = 0, p = 1; the same nonzero shift every time gives t = ±inf, p = 0."""
    d = [x - y for x, y in zip(a, b, strict=True)]
    n = len(d)
    if n < 2:
        return math.nan, math.nan, math.nan, math.nan
    m, s = mean(d), std(d)
    if s == 0.0:
        return (0.0, 1.0, m, m) if m == 0.0 else (math.copysign(math.inf, m), 0.0, m, m)
    res = sps.ttest_rel(a, b)
    half = float(sps.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * s / math.sqrt(n)
    return float(res.statistic), float(res.pvalue), m - half, m + half


def wilcoxon_exact(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided exact p of the Wilcoxon signed-rank test on a - b (scipy.stats.wilcoxon, method="exact";
    zero differences dropped); 1 when every difference is zero."""
    if all(x == y for x, y in zip(a, b, strict=True)):
        return 1.0
    return float(sps.wilcoxon(a, b, method="exact").pvalue)


def min_wilcoxon_p(n: int) -> float:
    """The smallest two-sided p the exact signed-rank test can give with n pairs (2 / 2^n: every
    difference of one sign); 1 with no pairs."""
    return min(1.0, 2.0 / 2**n) if n > 0 else 1.0


def paired(a: Sequence[float], b: Sequence[float]) -> PairedResult:
    """Paired t-test, its CI, the exact Wilcoxon p and the baseline (b) mean for the effect in percent."""
    t, p, lo, hi = paired_t(a, b)
    d = [x - y for x, y in zip(a, b, strict=True)]
    return PairedResult(len(d), mean(d), lo, hi, t, p, wilcoxon_exact(a, b) if d else math.nan, mean(b))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (nan stays nan and is not counted)."""
    idx = sorted((i for i, p in enumerate(pvalues) if not math.isnan(p)), key=lambda i: pvalues[i])
    m = len(idx)
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def swapped(first: dict[str, float], second: dict[str, float]) -> list[tuple[str, str]]:
    """Pairs (a, b) of the keys both have that `first` orders a < b and `second` the other way round (ties in
    either order are no swap)."""
    keys = [k for k in first if k in second]
    return [(a, b) if first[a] < first[b] else (b, a) for a, b in combinations(keys, 2)
            if (first[a] - first[b]) * (second[a] - second[b]) < 0]
