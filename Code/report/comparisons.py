"""The report's paired tests: every test method against the `mse_lm` family's method and against LM-only, on
test and out-of-domain perplexity, Holm-corrected together (Code/report/stats.py does the statistics).

Each comparison pairs the runs of two methods that share a seed (same data order and initialization).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from Code.report.data import Run, StudyData
from Code.report.fmt import pct, pvalue, sig, table
from Code.report.stats import PairedResult, holm, paired

ALPHA = 0.05
# metric -> (title, getter); lower is better for every one of them
METRICS: dict[str, tuple[str, Callable[[Run], float | None]]] = {
    "test_ppl": ("test perplexity", lambda r: r.score("ppl")),
    "test_bpb": ("test bits per byte", lambda r: r.score("bpb")),
    "ood_ppl": ("out-of-domain perplexity", lambda r: r.score("ood_ppl")),
    "ood_bpb": ("out-of-domain bits per byte", lambda r: r.score("ood_bpb")),
}
TESTED = ("test_ppl", "ood_ppl")  # the perplexities the paired tests are run on
MSE_FAMILY = "mse_lm"             # the per-token baseline every method is also tested against


@dataclass
class Comparison:
    a: str
    b: str
    metric: str
    result: PairedResult
    seeds: list[int]
    p_holm: float = math.nan

    @property
    def significant(self) -> bool:
        return self.p_holm == self.p_holm and self.p_holm < ALPHA

    def verdict(self) -> str:
        if self.result.n < 2:
            return "too few paired seeds"
        if not self.significant:
            return "no significant difference"
        return f"{self.a} {'lower (better)' if self.result.mean_diff < 0 else 'higher (worse)'}"


def compare(a: str, b: str, metric: str, runs_a: list[Run], runs_b: list[Run]) -> Comparison | None:
    """The paired test of a − b on `metric` over the seeds both have a value for; None when they share none."""
    get = METRICS[metric][1]
    va = {r.seed: get(r) for r in runs_a}
    vb = {r.seed: get(r) for r in runs_b}
    seeds = sorted(s for s in set(va) & set(vb) if va[s] is not None and vb[s] is not None)
    if not seeds:
        return None
    return Comparison(a, b, metric, paired([va[s] for s in seeds], [vb[s] for s in seeds]), seeds)


def with_holm(tests: list[Comparison]) -> list[Comparison]:
    """Holm's correction over the t-test p values of `tests` (one family), written into each."""
    for c, p in zip(tests, holm([c.result.p_t for c in tests]), strict=True):
        c.p_holm = p
    return tests


def references(study: StudyData) -> list[str]:
    """The methods every other one is tested against: the `mse_lm` family's method, then LM-only."""
    return [m for m in (study.method_of(MSE_FAMILY), study.lm) if m is not None]


def comparisons(study: StudyData) -> list[Comparison]:
    """Every method against each reference (`mse_lm`, `lm`) on test and out-of-domain PPL, one Holm family.
    A pair is tested once: `mse_lm`'s method against `lm`, never `lm` against it again."""
    refs = references(study)
    wanted = [(m, ref) for ref in refs for m in study.methods
              if m != ref and not (m in refs and refs.index(m) > refs.index(ref))]
    out = [c for metric in TESTED for a, b in wanted
           if (c := compare(a, b, metric, study.of(a), study.of(b))) is not None]
    return with_holm(out)


def effect(r: PairedResult, unit: str = "", base: str = "baseline") -> str:
    """Mean difference with its 95% CI in the metric's unit and in percent of the baseline (b) mean."""
    if r.n < 2:
        return f"{sig(r.mean_diff)}{unit} ({pct(r.pct_diff)} of the {base} mean)"
    lo, hi = r.pct_ci
    return (f"{sig(r.mean_diff)}{unit} [{sig(r.ci_low)}, {sig(r.ci_high)}]; {pct(r.pct_diff)} "
            f"[{pct(lo)}, {pct(hi)}] of the {base} mean")


def tests_table(tests: list[Comparison]) -> list[str]:
    rows = []
    for c in tests:
        r = c.result
        lo, hi = r.pct_ci
        rows.append([f"{c.a} − {c.b}", METRICS[c.metric][0], str(r.n), sig(r.mean_diff),
                     f"[{sig(r.ci_low)}, {sig(r.ci_high)}]", pct(r.pct_diff), f"[{pct(lo)}, {pct(hi)}]",
                     sig(r.t, 3), pvalue(r.p_t), pvalue(c.p_holm), pvalue(r.p_wilcoxon), c.verdict()])
    return table(["difference", "metric", "pairs", "mean diff", "95% CI", "% of b", "95% CI (% of b)", "t",
                  "p (t)", "p (Holm)", "p (Wilcoxon)", "verdict"], rows)


def find(tests: list[Comparison], a: str, b: str, metric: str = "test_ppl") -> Comparison | None:
    return next((c for c in tests if (c.a, c.b, c.metric) == (a, b, metric)), None)


def against(tests: list[Comparison], base: str, metric: str = "test_ppl") -> list[str]:
    """One sentence: every method against `base` on one perplexity, grouped by what the Holm-corrected test
    says (differences are method − base with their 95% CI)."""
    vs = [c for c in tests if c.b == base and c.metric == metric]
    if not vs:
        return []
    better = [f"{c.a} ({effect(c.result, ' PPL', base)})" for c in vs if c.significant and c.result.mean_diff < 0]
    worse = [f"{c.a} ({effect(c.result, ' PPL', base)})" for c in vs if c.significant and c.result.mean_diff > 0]
    same = [f"{c.a} ({effect(c.result, ' PPL', base)}; Holm p = {pvalue(c.p_holm)})"
            for c in vs if not c.significant and c.result.n >= 2]
    untested = [c.a for c in vs if c.result.n < 2]
    return [f"- Against `{base}` on {METRICS[metric][0]} (Holm-corrected, α = {ALPHA}): significantly lower: "
            f"{'; '.join(better) or 'none'}; significantly higher: {'; '.join(worse) or 'none'}; no significant "
            f"difference: {'; '.join(same) or 'none'}"
            + (f"; not testable (fewer than 2 paired seeds): {', '.join(untested)}" if untested else "") + "."]
