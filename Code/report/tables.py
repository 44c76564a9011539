"""Numbers of the report as Markdown tables and sentences, computed from a loaded study (no figures here).

Every value comes from the study's files; formats are fixed here so tests can recompute them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from Code.report.data import Run, StudyData
from Code.report.stats import PairedResult, holm, mean, min_wilcoxon_p, paired, std

ALPHA = 0.05
MISSING = "–"  # a number the runs do not have (e.g. out-of-domain PPL of runs evaluated before it existed)
# the perplexities every method is tested on against the baseline
PPL_METRICS = ("test_ppl", "ood_ppl")
# metric -> (title, getter, which direction is better)
METRICS = {
    "test_ppl": ("test perplexity", lambda r: r.test_ppl, "lower"),
    "ood_ppl": ("out-of-domain perplexity", lambda r: r.ood_ppl, "lower"),         # None: evaluated without it
    "mean_swd": ("mean sliced WD", lambda r: r.layer_mean("sliced_wd"), "lower"),   # over matched layers
    "mean_cka": ("mean CKA", lambda r: r.layer_mean("cka"), "higher"),
}
# the claims this study tests, when both methods are present: the seed study's WD-vs-MSE claim in both its
# pure and preset forms, and the critic against its critic-free twin
PAIRS = [("wd_lm", "mse_lm"), ("wd_lm", "kd_lm"), ("mse_lm", "kd_lm"), ("wd", "mse"), ("seed_wd", "seed_mse"),
         ("wd", "swd")]


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


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def pvalue(p: float) -> str:
    if p != p:
        return "n/a"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


# ------------------------------------------------------------------------------------------ results
def partial_pm(values: list[float | None]) -> str:
    """`pm` of the values present; MISSING when none is; how many seeds when only some are."""
    have = [v for v in values if v is not None]
    if not have:
        return MISSING
    if len(have) == len(values):
        return pm(have)
    spread = f" ± {num(std(have))}" if len(have) > 1 else ""
    return f"{num(mean(have))}{spread} ({len(have)} of {plural(len(values), 'seed')})"


def ppl_table(study: StudyData) -> list[str]:
    rows = []
    for m in study.methods:
        runs = study.of(m)
        values = [r.test_ppl for r in runs]
        seeds = ", ".join(f"{r.seed}: {num(r.test_ppl)}" + (f" / {num(r.ood_ppl)}" if r.ood_ppl is not None else "")
                          for r in runs) or "none finished"
        rows.append([m, str(len(values)), pm(values), partial_pm([r.ood_ppl for r in runs]) if runs else "n/a",
                     num(min(values)) if values else "n/a", num(max(values)) if values else "n/a", seeds])
    return table(["method", "seeds", "test PPL mean ± std", "out-of-domain PPL mean ± std", "test min", "test max",
                  "per seed (test / out-of-domain)"], rows)


def teacher_ppl(study: StudyData, ood: bool = False) -> float | None:
    """The teacher's perplexity on the test (or out-of-domain) tokens, from the first evaluation that has it."""
    for r in study.runs.values():
        if r.status == "done":
            value = r.teacher_ood_ppl if ood else r.eval["teacher"].get("ppl")
            if value is not None:
                return value
    return None


def layer_table(study: StudyData, key: str) -> list[str]:
    layers = sorted({i for r in study.runs.values() if r.status == "done" for i in r.layer_values(key)})
    teacher_of = {}
    for r in study.runs.values():
        for row in (r.eval or {}).get("layers", []):
            teacher_of.setdefault(int(row["student_layer"]), int(row["teacher_layer"]))
    rows = []
    for m in study.methods:
        per_run = [r.layer_values(key) for r in study.of(m)]
        if not per_run:
            continue
        rows.append([m, *(pm([d[i] for d in per_run if i in d], 4, sig) for i in layers)])
    return table(["method", *(f"s{i} ↔ t{teacher_of.get(i, '?')}" for i in layers)], rows)


# ------------------------------------------------------------------------------------------ tests
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
        better = METRICS[self.metric][2]
        a_lower = self.result.mean_diff < 0
        good = a_lower if better == "lower" else not a_lower
        return f"{self.a} {'lower' if a_lower else 'higher'} ({'better' if good else 'worse'})"


def baseline(study: StudyData) -> str:
    return "lm" if "lm" in study.methods else study.methods[0]


def comparisons(study: StudyData) -> list[Comparison]:
    """The family of paired tests (over seeds both methods finished), Holm-corrected together."""
    base = baseline(study)
    wanted = [(m, base, metric) for metric in PPL_METRICS for m in study.methods if m != base]
    for a, b in PAIRS:
        if a in study.methods and b in study.methods:
            wanted += [(a, b, metric) for metric in METRICS]
    out = []
    for a, b, metric in wanted:
        get = METRICS[metric][1]
        ra = {r.seed: get(r) for r in study.of(a)}
        rb = {r.seed: get(r) for r in study.of(b)}
        seeds = sorted(s for s in set(ra) & set(rb) if ra[s] is not None and rb[s] is not None)
        if not seeds:
            continue
        out.append(Comparison(a, b, metric, paired([ra[s] for s in seeds], [rb[s] for s in seeds]), seeds))
    for c, p in zip(out, holm([c.result.p_t for c in out]), strict=True):
        c.p_holm = p
    return out


def pct(x: float) -> str:
    """A signed percentage (n/a for nan)."""
    return "n/a" if x != x else f"{x:+.2f}%"


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


def baseline_line(tests: list[Comparison], base: str, metric: str = "test_ppl") -> list[str]:
    """Every method against the baseline on one perplexity (test or out-of-domain), grouped by what the
    Holm-corrected test says."""
    vs_base = [c for c in tests if c.b == base and c.metric == metric]
    if not vs_base:
        return []
    title = METRICS[metric][0]
    better = [f"{c.a} ({effect(c.result, ' PPL', base)})" for c in vs_base if c.significant and c.result.mean_diff < 0]
    worse = [f"{c.a} ({effect(c.result, ' PPL', base)})" for c in vs_base if c.significant and c.result.mean_diff > 0]
    same = [f"{c.a} ({effect(c.result, ' PPL', base)}; Holm p = {pvalue(c.p_holm)})"
            for c in vs_base if not c.significant and c.result.n >= 2]
    untested = [c.a for c in vs_base if c.result.n < 2]
    lead = (f"- Against the `{base}` baseline (paired over seeds, Holm-corrected, α = {ALPHA}; differences are "
            f"method − {base} with their 95% CI)" if metric == "test_ppl" else
            f"- On the out-of-domain text, against the `{base}` baseline (the same tests)")
    return [f"{lead}: significantly lower {title}: {'; '.join(better) or 'none'}; "
            f"significantly higher: {'; '.join(worse) or 'none'}; no significant difference: "
            f"{'; '.join(same) or 'none'}"
            + (f"; not testable (fewer than 2 paired seeds): {', '.join(untested)}" if untested else "") + "."]


def pair_lines(tests: list[Comparison]) -> list[str]:
    """One sentence per tested pair of methods (PAIRS), one clause per metric."""
    lines = []
    for a, b in PAIRS:
        pair = [c for c in tests if (c.a, c.b) == (a, b)]
        if not pair:
            continue
        parts = []
        for c in pair:
            title = METRICS[c.metric][0]
            if c.result.n < 2:
                parts.append(f"{title}: not testable with {c.result.n} paired seed (difference "
                             f"{sig(c.result.mean_diff)})")
            elif c.significant:
                parts.append(f"{title}: {c.verdict()} (difference {effect(c.result, base=b)}, Holm p = "
                             f"{pvalue(c.p_holm)})")
            else:
                parts.append(f"{title}: no significant difference (difference {effect(c.result, base=b)}, Holm p = "
                             f"{pvalue(c.p_holm)})")
        lines.append(f"- `{a}` vs `{b}` — " + "; ".join(parts) + ".")
    return lines


def claim_line(tests: list[Comparison]) -> list[str]:
    """The seed study's claim (WD matches each layer's distribution better than MSE), as the tests decide it."""
    claim = [c for c in tests if (c.a, c.b) in (("wd_lm", "mse_lm"), ("wd", "mse"), ("seed_wd", "seed_mse"))
             and c.metric == "mean_swd"]
    if not claim:
        return []
    held = [f"`{c.a}` vs `{c.b}`" for c in claim if c.significant and c.result.mean_diff < 0]
    against = [f"`{c.a}` vs `{c.b}`" for c in claim if c.significant and c.result.mean_diff > 0]
    neutral = [f"`{c.a}` vs `{c.b}` ({c.a} {'higher' if c.result.mean_diff > 0 else 'lower'} by "
               f"{sig(abs(c.result.mean_diff))}, Holm p = {pvalue(c.p_holm)})"
               for c in claim if not c.significant and c.result.n >= 2]
    untested = [f"`{c.a}` vs `{c.b}`" for c in claim if c.result.n < 2]
    verdicts = ([f"supported for {', '.join(held)}"] if held else []) + \
               ([f"contradicted (MSE closer) for {', '.join(against)}"] if against else []) + \
               ([f"no significant difference for {', '.join(neutral)}"] if neutral else []) + \
               ([f"not testable with one seed for {', '.join(untested)}"] if untested else [])
    return ["- The seed study's claim that WD distillation matches each layer's distribution better than "
            "MSE, measured by the mean sliced Wasserstein distance to the teacher's matched layers: "
            + "; ".join(verdicts) + "."]


def conclusion(study: StudyData, tests: list[Comparison]) -> list[str]:
    """Sentences that state only what the numbers above support."""
    done = {m: [r.test_ppl for r in study.of(m)] for m in study.methods if study.of(m)}
    if not done:
        return ["No run has finished and been evaluated yet: there is nothing to conclude."]
    best = min(done, key=lambda m: mean(done[m]))
    teacher = next(r.eval["teacher"]["ppl"] for m in done for r in study.of(m))
    lines = [f"- Lowest mean test perplexity: **{best}** ({pm(done[best])}, {plural(len(done[best]), 'seed')}); "
             f"the teacher scores {num(teacher)} on the same tokens."]
    lines += ood_lines(study)
    lines += baseline_line(tests, baseline(study)) + baseline_line(tests, baseline(study), "ood_ppl")
    lines += pair_lines(tests) + claim_line(tests)
    n = min((len(v) for v in done.values()), default=0)
    lines += critic_lines(study)
    lines.append(f"- The verdicts use the Holm-corrected paired t-test (normal differences assumed); the exact "
                 f"Wilcoxon signed-rank test is shown as a check, and with {plural(n, 'seed')} per method it cannot "
                 f"go below p = {min_wilcoxon_p(n):.3g}. The 95% CIs are per comparison, not Holm-adjusted; "
                 f"{len(tests)} tests are corrected together.")
    return lines


def ood_lines(study: StudyData) -> list[str]:
    """The lowest mean out-of-domain perplexity, the teacher's, and which runs have no such number."""
    done = {m: [r.ood_ppl for r in study.of(m) if r.ood_ppl is not None] for m in study.methods if study.of(m)}
    lacking = [f"{r.method}/seed{r.seed}" for m in study.methods for r in study.of(m) if r.ood_ppl is None]
    have = {m: v for m, v in done.items() if v}
    if not have:
        return []
    best = min(have, key=lambda m: mean(have[m]))
    teacher = teacher_ppl(study, ood=True)
    lines = [f"- Lowest mean out-of-domain perplexity: **{best}** ({pm(have[best])}, "
             f"{plural(len(have[best]), 'seed')}); the teacher scores {num(teacher)} on the same tokens."]
    if lacking:
        lines.append(f"- No out-of-domain perplexity (evaluated without `--ood-text`; running the study again "
                     f"evaluates them, without retraining): {', '.join(lacking)}.")
    return lines


def critic_lines(study: StudyData) -> list[str]:
    """For methods with critics: where their WD estimate ended (mean over seeds of the last logged value).
    A critic that keeps up with the student never reports a negative distance, so a negative one is said."""
    lines = []
    for m in study.methods:
        finals: dict[str, list[float]] = {}
        for r in study.of(m):
            train = r.kind("train")
            for k, v in (train[-1] if train else {}).items():
                if k.startswith("loss/wd/layer") and v is not None:
                    finals.setdefault(k.removeprefix("loss/wd/"), []).append(float(v))
        if not finals:
            continue
        by_index = sorted(finals.items(), key=lambda kv: int(kv[0].removeprefix("layer")))
        text = ", ".join(f"{layer} {pm(v, 3, sig)}" for layer, v in by_index)
        negative = [layer for layer, v in finals.items() if mean(v) < 0]
        lines.append(f"- `{m}`: the critics' last Wasserstein estimates per matched layer (layerN: the "
                     f"pair of student hidden state N) were {text}"
                     + (f"; negative for {', '.join(sorted(negative))}: a critic at its optimum never reports a "
                        "negative distance, so there it had not caught up with the student." if negative else "."))
    return lines


def grad_shares(run: Run) -> dict[str, float]:
    """term -> mean over the run's logged probes of `grad_share/<term>` (its share of the squared gradient
    the weighted terms send into the student)."""
    values: dict[str, list[float]] = {}
    for rec in run.kind("train"):
        for k, v in rec.items():
            if k.startswith("grad_share/") and v is not None:
                values.setdefault(k.removeprefix("grad_share/"), []).append(float(v))
    return {term: sum(v) / len(v) for term, v in values.items()}


def grad_share_table(study: StudyData) -> list[str]:
    """Which term drives each student: mean ± std over seeds of each term's mean gradient share."""
    rows = []
    for m in study.methods:
        per_seed = [grad_shares(r) for r in study.of(m)]
        terms = sorted({t for s in per_seed for t in s})
        if terms:
            rows.append([f"`{m}`", ", ".join(f"{t} {pm([s[t] for s in per_seed if t in s], 3)}" for t in terms)])
    if not rows:
        return ["No run logged gradient shares (runs made before `--grad-share-interval` existed)."]
    return table(["method", "share of the squared gradient, per term (mean ± std over seeds)"], rows)


# WD sensitivity: `wd_lm` variants, each changing one setting (see Code/study/presets.py), against `mse_lm`.
SWEEP_PREFIX = "wd_lm"


def sensitivity_table(study: StudyData) -> list[str]:
    """Every `wd_lm*` method: its settings, WD's measured gradient share, test PPL, and the paired test
    against `mse_lm` on the same seeds (does any setting make WD beat MSE?)."""
    methods = [m for m in study.methods if m.startswith(SWEEP_PREFIX)]
    if len(methods) < 2 or "mse_lm" not in study.methods:
        return []
    ref = {r.seed: r.test_ppl for r in study.of("mse_lm") if r.test_ppl is not None}
    rows = []
    for m in methods:
        runs = [r for r in study.of(m) if r.test_ppl is not None]
        pairs = [(r.test_ppl, ref[r.seed]) for r in runs if r.seed in ref]
        shares = [grad_shares(r).get("wd") for r in runs]
        args = runs[0].args if runs else {}
        setting = (f"weights {args.get('weights')}, critic lr {args.get('critic_lr')}, "
                   f"n_critic {args.get('n_critic')}") if args else "–"
        test = "–"
        if len(pairs) >= 2:
            r = paired([a for a, _ in pairs], [b for _, b in pairs])
            test = f"{effect(r, base='mse_lm')}, t-test p = {pvalue(r.p_t)}, Wilcoxon p = {pvalue(r.p_wilcoxon)}"
        rows.append([f"`{m}`", setting, pm([s for s in shares if s is not None], 3),
                     pm([r.test_ppl for r in runs]), test])
    return table(["method", "setting", "WD gradient share", "test PPL", f"vs `mse_lm` (test PPL, {len(ref)} seeds)"],
                 rows)


# ------------------------------------------------------------------------------------------ cost
def cost_table(study: StudyData, wall: dict[str, float]) -> list[str]:
    rows = []
    for m in study.methods:
        runs = study.of(m)
        if not runs:
            continue
        cost = [r.eval.get("cost", {}) for r in runs]
        s_params = cost[0].get("student", {}).get("params")
        t_params = cost[0].get("teacher", {}).get("params")
        tps = [r.train_tokens_per_s for r in runs if r.train_tokens_per_s]
        times = [r.train_time_s for r in runs if r.train_time_s is not None]
        walls = [wall[f"{m}/seed{r.seed}"] for r in runs if f"{m}/seed{r.seed}" in wall]
        fwd = [c.get("student", {}).get("tokens_per_s") for c in cost if c.get("student", {}).get("tokens_per_s")]
        speed = [c.get("speedup") for c in cost if c.get("speedup")]
        tokens = {r.train_tokens for r in runs}
        rows.append([m, f"{s_params / 1e6:.2f}M" if s_params else "n/a",
                     f"{t_params / 1e6:.2f}M" if t_params else "n/a",
                     ", ".join(f"{t:,}" for t in sorted(t for t in tokens if t)) or "n/a",
                     pm(tps, 0), pm(times, 1), pm(walls, 1), pm(fwd, 0), pm(speed, 2)])
    return table(["method", "student params", "teacher params", "train tokens", "train tokens/s",
                  "train time (s)", "run wall (s)", "student fwd tokens/s", "fwd speedup vs teacher"], rows)


def status_lines(study: StudyData) -> list[str]:
    missing = sorted(study.incomplete, key=lambda r: (r.method, r.seed))
    if not missing:
        return [f"All {len(study.runs)} planned runs finished and were evaluated."]
    return [f"{len(missing)} of {len(study.runs)} planned runs are not in the numbers above:", "",
            *(f"- `{r.method}` seed {r.seed}: {r.status} ({r.path})" for r in missing)]


def run_of(study: StudyData) -> Run | None:
    """A representative finished run (for settings shared by all)."""
    return next((r for r in study.runs.values() if r.status == "done"), None)
