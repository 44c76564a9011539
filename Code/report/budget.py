"""The budget point: the main comparison (LM-only, `kd_lm`, `mse_lm`, the best critic and the best critic-free
family by validation PPL) trained 10x longer on a few seeds, beside the same methods at the test stage's
steps: does the ranking hold as training goes on?

study.json `budget`: {max_steps, seeds, methods: {role: method}}; the runs are `budget/<method>/seed<k>`.
"""

from __future__ import annotations

from Code.report.comparisons import MSE_FAMILY, Comparison, compare, tests_table, with_holm
from Code.report.data import StudyData
from Code.report.fmt import MISSING, num, pm, sig, table
from Code.report.stats import mean, paired, swapped


def budget_means(study: StudyData) -> tuple[dict[str, float], dict[str, float]]:
    """Per budget method: mean test PPL at the budget steps, and at the test stage's steps on the same seeds."""
    spec = study.manifest.get("budget") or {}
    long, short = {}, {}
    for m in (spec.get("methods") or {}).values():
        runs = study.budget_of(m)
        at_test = {r.seed: r.test_ppl for r in study.of(m)}
        matched = [at_test[r.seed] for r in runs if r.seed in at_test]
        if runs and matched:
            long[m], short[m] = mean([r.test_ppl for r in runs]), mean(matched)
    return long, short


def budget_table(study: StudyData) -> list[str]:
    spec = study.manifest.get("budget") or {}
    steps = spec.get("max_steps")
    short_steps = next((r.args.get("max_steps") for r in study.runs.values() if r.args.get("max_steps")), None)
    rows = []
    for role, m in (spec.get("methods") or {}).items():
        runs = study.budget_of(m)
        at_test = {r.seed: r.test_ppl for r in study.of(m)}
        pairs = [(r.test_ppl, at_test[r.seed]) for r in runs if r.seed in at_test]
        change = MISSING
        if pairs:
            r = paired([a for a, _ in pairs], [b for _, b in pairs])
            change = f"{sig(r.mean_diff, 3)} over {len(pairs)} seed(s)"
        rows.append([role, f"`{m}`", pm([r.test_ppl for r in runs]) if runs else MISSING,
                     pm([b for _, b in pairs]) if pairs else MISSING,
                     pm(list(at_test.values())) if at_test else MISSING, change])
    return table(["role", "method", f"test PPL at {steps} steps", f"at {short_steps or '?'} steps, same seeds",
                  f"at {short_steps or '?'} steps, all test seeds", f"{steps} − {short_steps or '?'} steps (paired)"],
                 rows)


def budget_tests(study: StudyData) -> list[Comparison]:
    """At the budget steps: every budget method against `mse_lm`'s and LM-only's, paired over the seeds both
    finished, on test PPL; Holm over these tests (a family of their own)."""
    methods = list(((study.manifest.get("budget") or {}).get("methods") or {}).values())
    mse = next((m for m in methods if study.family(m) == MSE_FAMILY), None)
    refs = [r for r in (mse, study.lm if study.lm in methods else None) if r]
    wanted = [(m, ref) for ref in refs for m in methods
              if m != ref and not (m in refs and refs.index(m) > refs.index(ref))]
    return with_holm([c for a, b in wanted
                      if (c := compare(a, b, "test_ppl", study.budget_of(a), study.budget_of(b))) is not None])


def _order(means: dict[str, float]) -> str:
    return " < ".join(f"{m} ({num(means[m])})" for m in sorted(means, key=means.__getitem__))


def ranking_line(study: StudyData) -> list[str]:
    long, short = budget_means(study)
    if len(long) < 2:
        return [f"- Ranking: {len(long)} budget method(s) finished: nothing to rank yet."]
    swaps = swapped(short, long)
    head = f"- Ranking by mean test PPL, best first: at the test steps (same seeds) {_order(short)}; at the budget " \
           f"steps {_order(long)}: "
    if not swaps:
        return [head + "the same order."]
    return [head + "the order changes: " + ", ".join(f"{a} ahead of {b} at the test steps, behind at the budget "
                                                     "steps" for a, b in swaps) + "."]


def budget_section(study: StudyData) -> list[str]:
    spec = study.manifest.get("budget") or {}
    if not spec:
        return ["The budget point has not been planned yet (study.json has no `budget`: its stage runs after "
                "tuning and the test stage)."]
    lines = [f"{spec.get('max_steps')} steps on seeds {', '.join(str(s) for s in spec.get('seeds') or [])}, "
             "beside the same method's test-stage runs; test PPL mean ± sd over the seeds finished.", ""]
    lines += budget_table(study) + [""] + ranking_line(study)
    tests = budget_tests(study)
    if tests:
        lines += ["", f"Paired tests at {spec.get('max_steps')} steps (Holm over these {len(tests)} tests):", ""]
        lines += tests_table(tests)
    return lines
