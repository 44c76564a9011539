"""The report's result tables and sentences, computed from a loaded study (no figures, no tests here): test
scores per method, layer distances, gradient shares, cost, the runs' status.

Every value comes from the study's files; formats are fixed (Code/report/fmt.py) so tests can recompute them.
"""

from __future__ import annotations

from Code.report.comparisons import METRICS
from Code.report.data import Run, StudyData
from Code.report.fmt import MISSING, num, partial_pm, pm, sig, table
from Code.report.stats import mean


# ------------------------------------------------------------------------------------------ results
def score_table(study: StudyData) -> list[str]:
    """Every test method: mean ± sd over its finished seeds of test PPL, test bits per byte, out-of-domain PPL
    and bits per byte (MISSING where the evaluations lack them); the teacher's own scores on top."""
    ref = run_of(study)
    rows = []
    if ref is not None:
        rows.append(["teacher", "–", *(num(ref.score(k, "teacher"), 3 if "bpb" in k else 2) if
                                       ref.score(k, "teacher") is not None else MISSING
                                       for k in ("ppl", "bpb", "ood_ppl", "ood_bpb"))])
    for m in study.methods:
        runs = study.of(m)
        if not runs:
            rows.append([m, "0", *[MISSING] * 4])
            continue
        rows.append([m, str(len(runs)),
                     *(partial_pm([METRICS[k][1](r) for r in runs], 3 if "bpb" in k else 2) for k in METRICS)])
    return table(["method", "seeds", "test PPL", "test bits/byte", "out-of-domain PPL", "out-of-domain bits/byte"],
                 rows)


def per_seed_table(study: StudyData) -> list[str]:
    """Each seed's test / out-of-domain PPL, so a reader can redo any test."""
    rows = []
    for m in study.methods:
        runs = study.of(m)
        values = [r.test_ppl for r in runs]
        rows.append([m, num(min(values)) if values else "n/a",
                     num(max(values)) if values else "n/a",
                     ", ".join(f"{r.seed}: {num(r.test_ppl)}" + (f" / {num(r.ood_ppl)}" if r.ood_ppl is not None
                                                                 else "") for r in runs) or "none finished"])
    return table(["method", "test min", "test max", "per seed (test / out-of-domain)"], rows)


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
    if not rows:
        return ["No test run has been evaluated yet."]
    return table(["method", *(f"s{i} ↔ t{teacher_of.get(i, '?')}" for i in layers)], rows)


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


def distill_share(run: Run) -> float | None:
    """The distillation terms' share of the squared gradient: every logged term but the LM term (None when the
    run logged no shares)."""
    shares = grad_shares(run)
    return sum(v for t, v in shares.items() if t != "lm") if shares else None


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
    if not rows:
        return ["No test run has been evaluated yet."]
    return table(["method", "student params", "teacher params", "train tokens", "train tokens/s",
                  "train time (s)", "run wall (s)", "student fwd tokens/s", "fwd speedup vs teacher"], rows)


def status_lines(study: StudyData) -> list[str]:
    """Every planned run of every stage (tune, test, budget) that is not in the numbers, with what study.json
    says went wrong (a failed training or evaluation), and the stages not reached yet."""
    planned = [*study.tune_runs.values(), *study.runs.values(), *study.budget_runs.values()]
    missing = study.incomplete
    recorded = {(v.get("dir"), v.get("status")) for v in (study.manifest.get("runs") or {}).values()}
    failed = {d: st for d, st in recorded if st and st != "done"}
    lines = [f"All {len(planned)} planned runs finished and were evaluated." if not missing else
             f"{len(missing)} of {len(planned)} planned runs are not in the numbers above:"]
    if missing:
        lines.append("")
    groups: dict[tuple[str, str], list[int]] = {}  # (method folder, what is wrong) -> seeds, in stage order
    for r in missing:
        rel = r.path.relative_to(study.root) if study.root in r.path.parents else r.path
        why = f"; study.json: {failed[str(rel)]}" if str(rel) in failed else ""
        groups.setdefault((str(rel.parent), r.status + why), []).append(r.seed)
    for (folder, what), seeds in groups.items():
        lines.append(f"- `{folder}` seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}: {what}")
    not_yet = [name for name, there in (("tuning", study.manifest.get("tuning") or study.tune_runs),
                                        ("budget point", study.manifest.get("budget")),
                                        ("calibration", study.calibration), ("out-of-domain self-check",
                                                                             study.selfcheck)) if not there]
    if not_yet:
        lines += ["", f"Not in this study (yet): {', '.join(not_yet)}."]
    return lines


def run_of(study: StudyData) -> Run | None:
    """A representative finished run (for settings shared by all)."""
    return next((r for r in study.runs.values() if r.status == "done"), None)
