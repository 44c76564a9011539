"""The report's conclusion: did any distribution loss (a family of kind `critic` or `critic-free`) beat
`mse_lm` or LM-only on test PPL with Holm-adjusted p < 0.05, and what the budget point adds. Sentences state
only what the tests above support."""

from __future__ import annotations

from Code.report.budget import budget_means, budget_tests
from Code.report.comparisons import ALPHA, MSE_FAMILY, Comparison, against, find, references
from Code.report.data import StudyData
from Code.report.estimators import DISTRIBUTION_KINDS
from Code.report.fmt import num, plural, pm, pvalue, sig
from Code.report.stats import mean, min_wilcoxon_p, swapped
from Code.report.tables import teacher_ppl
from Code.report.tuning import tuning


def distribution_methods(study: StudyData) -> list[str]:
    """The test methods of the distribution-matching families (critic or critic-free)."""
    kinds = {f.name: f.kind for f in tuning(study).values()}
    return [m for m in study.methods if kinds.get(study.family(m) or "") in DISTRIBUTION_KINDS]


def _verdict(tests: list[Comparison], methods: list[str], ref: str | None) -> str:
    """Did any of `methods` beat `ref` (lower test PPL, Holm p < ALPHA)? Yes/No with the numbers, then which
    lost and which tied."""
    if ref is None:
        return "not testable yet (no reference run)"
    found = [c for m in methods if (c := find(tests, m, ref)) is not None and c.result.n >= 2]
    if not found:
        return "not testable yet (no method with 2 paired seeds)"
    beat = [f"{c.a} ({sig(c.result.mean_diff, 3)} PPL, Holm p = {pvalue(c.p_holm)})" for c in found
            if c.significant and c.result.mean_diff < 0]
    lost = [c.a for c in found if c.significant and c.result.mean_diff > 0]
    tied = [c.a for c in found if not c.significant]
    return (f"**{'yes' if beat else 'no'}**" + (f": {'; '.join(beat)}" if beat else "")
            + f" ({plural(len(found), 'method')} tested; significantly worse: {', '.join(lost) or 'none'}; "
            f"no significant difference: {', '.join(tied) or 'none'})")


def _span(shown: list[str]) -> str:
    """'a-b' from the first and last of sorted values as shown, or one value when they show alike."""
    return shown[0] if shown[0] == shown[-1] else f"{shown[0]}-{shown[-1]}"


def size_sentence(tests: list[Comparison], methods: list[str], lm: str | None, mse: str | None) -> str:
    """How large the significant gains over LM-only are, beside mse_lm's: a p-value alone says nothing of it."""
    if lm is None or mse is None:
        return ""
    base = find(tests, mse, lm)
    beat = [c for m in methods if (c := find(tests, m, lm)) is not None and c.significant and c.result.mean_diff < 0]
    if not beat or base is None or base.result.mean_diff >= 0:
        return ""
    gains = sorted(-c.result.mean_diff for c in beat)
    ratios = sorted(-g / base.result.mean_diff for g in gains)
    return (f"How large: those gains over `{lm}` are {_span([sig(g, 3) for g in gains])} PPL, "
            f"{_span([f'{r:.0%}' for r in ratios])} of the {sig(-base.result.mean_diff, 3)} PPL "
            f"that `{mse}` gains. ")


def budget_sentence(study: StudyData) -> str:
    spec = study.manifest.get("budget") or {}
    long, short = budget_means(study)
    if len(long) < 2:
        return "The budget point has no result to compare yet."
    swaps = swapped(short, long)
    text = (f"At {spec.get('max_steps')} steps ({len(long)} methods on the seeds finished) the ranking by mean "
            "test PPL " + ("is the same as at the test steps" if not swaps else "changes: " + ", ".join(
                f"{b} overtakes {a}" for a, b in swaps)))
    tests = budget_tests(study)
    kinds = {f.name: f.kind for f in tuning(study).values()}
    dist = [m for m in long if kinds.get(study.family(m) or "") in DISTRIBUTION_KINDS]
    mse = next((m for m in long if study.family(m) == MSE_FAMILY), None)
    if dist and mse:
        text += f". Did a distribution loss beat `{mse}` at those steps? {_verdict(tests, dist, mse)}"
    lm = study.lm if study.lm in long else None
    if dist and lm:
        text += f". Did one beat `{lm}` there? {_verdict(tests, dist, lm)}"
    seeds = len(spec.get("seeds") or [])
    if dist and (mse or lm) and seeds:
        text += (f" (paired t-tests over {plural(seeds, 'seed')}, Holm over the budget point's own tests; the exact "
                 f"Wilcoxon test cannot go below p = {min_wilcoxon_p(seeds):.3g} there)")
    return text + "."


def conclusion(study: StudyData, tests: list[Comparison]) -> list[str]:
    done = {m: [r.test_ppl for r in study.of(m)] for m in study.methods if study.of(m)}
    if not done:
        return ["No test run has finished and been evaluated yet: there is nothing to conclude."]
    best = min(done, key=lambda m: mean(done[m]))
    mse, lm = study.method_of(MSE_FAMILY), study.lm
    dist = distribution_methods(study)
    n = min(len(v) for v in done.values())
    seeds = f", {plural(len(done[best]), 'seed')}" if len(done[best]) > 1 else ""  # pm says "(1 seed)" itself
    para = (f"Lowest mean test perplexity: **{best}** ({pm(done[best])}{seeds}; the teacher scores "
            f"{num(teacher_ppl(study))}). ")
    if dist:
        para += (f"Did any distribution loss (the critic and critic-free families, each at its validation-chosen "
                 f"weight) beat `{mse or MSE_FAMILY}` on test PPL with Holm-adjusted p < {ALPHA} (paired t-tests "
                 f"over seeds, Holm over all {len(tests)} comparisons)? {_verdict(tests, dist, mse)}. Did any beat "
                 f"`{lm or 'lm'}`? {_verdict(tests, dist, lm)}. " + size_sentence(tests, dist, lm, mse))
    else:
        para += "No distribution-matching family has a finished test run yet. "
    para += budget_sentence(study)
    lines = [para, ""]
    for ref in references(study):
        lines += against(tests, ref) + against(tests, ref, "ood_ppl")
    lines.append(f"- The verdicts use the Holm-corrected paired t-test (normal differences assumed); the exact "
                 f"Wilcoxon signed-rank test is shown beside it, and with {plural(n, 'seed')} it cannot go below "
                 f"p = {min_wilcoxon_p(n):.3g}. The 95% CIs are per comparison, not Holm-adjusted.")
    return lines
