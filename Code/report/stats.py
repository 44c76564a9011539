"""Statistics for the report: mean and spread over seeds, paired tests across seeds, Holm's correction.

Pure Python. The t distribution's tail comes from scipy when it is installed (it ships with scikit-learn)
and otherwise from the regularized incomplete beta function below, so the report never depends on it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product


def mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if values else math.nan


def std(values: Sequence[float]) -> float:
    """Sample standard deviation (n - 1); nan below two values."""
    if len(values) < 2:
        return math.nan
    m = mean(values)
    return math.sqrt(math.fsum((v - m) ** 2 for v in values) / (len(values) - 1))


# ------------------------------------------------------------------------------ t distribution
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_sf_math(t: float, df: float) -> float:
    """P(T > t) for Student's t with `df` degrees of freedom, from the incomplete beta function."""
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


def t_sf(t: float, df: float) -> float:
    try:
        from scipy.stats import t as student_t
    except ImportError:
        return t_sf_math(t, df)
    return float(student_t.sf(t, df))


def t_ppf(q: float, df: float) -> float:
    """Quantile of Student's t (bisection on the tail; only used for confidence intervals)."""
    lo, hi = -1e3, 1e3
    for _ in range(200):
        mid = (lo + hi) / 2
        if 1.0 - t_sf(mid, df) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


# ------------------------------------------------------------------------------ paired tests
@dataclass(frozen=True)
class PairedResult:
    n: int                 # pairs (seeds present in both)
    mean_diff: float       # mean of a - b
    ci_low: float          # 95% confidence interval of the mean difference (t based)
    ci_high: float
    t: float
    p_t: float             # two-sided paired t-test
    p_wilcoxon: float      # two-sided exact Wilcoxon signed-rank (zeros dropped)


def paired_t(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float, float]:
    """(t, two-sided p, ci_low, ci_high) of the paired differences a - b; identical pairs give t = 0, p = 1."""
    d = [x - y for x, y in zip(a, b, strict=True)]
    n = len(d)
    if n < 2:
        return math.nan, math.nan, math.nan, math.nan
    m, s = mean(d), std(d)
    if s == 0.0:
        # every pair differs by the same amount: no spread, so any nonzero shift is certain
        return (0.0, 1.0, m, m) if m == 0.0 else (math.copysign(math.inf, m), 0.0, m, m)
    se = s / math.sqrt(n)
    t = m / se
    half = t_ppf(0.975, n - 1) * se
    return t, min(1.0, 2.0 * t_sf(abs(t), n - 1)), m - half, m + half


def wilcoxon_exact(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided exact p of the Wilcoxon signed-rank test (average ranks for ties, zero differences dropped);
    a normal approximation above 16 pairs."""
    d = [x - y for x, y in zip(a, b, strict=True) if x != y]
    n = len(d)
    if n == 0:
        return 1.0
    order = sorted(range(n), key=lambda i: abs(d[i]))
    ranks = [0.0] * n
    i = 0
    while i < n:
        j = i
        while j + 1 < n and abs(d[order[j + 1]]) == abs(d[order[i]]):
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    w_plus = sum(r for r, x in zip(ranks, d, strict=True) if x > 0)
    total = sum(ranks)
    observed = abs(w_plus - total / 2)
    if n > 16:
        sd = math.sqrt(sum(r * r for r in ranks) / 4)
        return min(1.0, math.erfc(observed / sd / math.sqrt(2)))
    extreme = sum(1 for signs in product((0, 1), repeat=n)
                  if abs(sum(r for r, s in zip(ranks, signs, strict=True) if s) - total / 2) >= observed - 1e-12)
    return extreme / 2**n


def min_wilcoxon_p(n: int) -> float:
    """The smallest two-sided p the exact signed-rank test can give with n pairs (2 / 2^n)."""
    return min(1.0, 2.0 / 2**n) if n > 0 else 1.0


def paired(a: Sequence[float], b: Sequence[float]) -> PairedResult:
    t, p, lo, hi = paired_t(a, b)
    d = [x - y for x, y in zip(a, b, strict=True)]
    return PairedResult(len(d), mean(d), lo, hi, t, p, wilcoxon_exact(a, b) if d else math.nan)


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
