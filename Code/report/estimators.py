""""Does the estimator matter?": the calibration (calibration/calibration.json, written by
`python -m Code.evaluation.calibration`) and every distribution-matching family's test result beside
`mse_lm` and LM-only.

The calibration file holds, per pair of state sets (`student`: teacher vs the LM-only student at the same
positions; `teacher_self`: two disjoint samples of the teacher's own states, true distance ~0) the judges
(exact W1, Sinkhorn, sliced WD, per layer, on the sets the critics train on) and each critic variant's
per-layer readings after N updates on its training sets and on held-out sets; the gradient each trained
critic sends into a student sitting on the teacher's states (`grad_at_zero`, teacher_self), beside MSE's
gradient for the real student; and the paired/unpaired Sinkhorn value and gradient beside MSE's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from Code.report.comparisons import MSE_FAMILY, Comparison, find
from Code.report.data import StudyData
from Code.report.fmt import MISSING, num, pm, pvalue, sig, table
from Code.report.stats import mean
from Code.report.tables import distill_share
from Code.report.tuning import tuning

JUDGES = {"exact_w1": "exact W1 (POT)", "sinkhorn": "Sinkhorn (debiased)", "sliced_wd": "sliced WD"}
PAIRS = {"student": "teacher vs LM-only student", "teacher_self": "teacher vs teacher (true ~0)"}
DISTRIBUTION_KINDS = ("critic", "critic-free")  # the families that match distributions, not token pairs


def layers(values: Sequence[float] | None) -> str:
    """Per-layer values joined by ' / ' (MISSING when absent)."""
    return " / ".join(sig(v, 3) for v in values) if values else MISSING


def calibration_table(cal: dict[str, Any]) -> list[str]:
    """Judges and every critic variant's readings (per update count) on both pairs, trained-on and held-out."""
    pairs = cal.get("pairs") or {}
    rows = []
    for judge, title in JUDGES.items():
        rows.append([title, "–", *(cell for p in PAIRS for cell in
                                   (layers((pairs.get(p) or {}).get("judges", {}).get(judge)), "–"))])
    variants = sorted({v for p in pairs.values() for v in (p.get("critics") or {})},
                      key=lambda v: list((pairs.get("student") or {}).get("critics", {})).index(v)
                      if v in (pairs.get("student") or {}).get("critics", {}) else 99)
    for v in variants:
        readings = {p: {r["updates"]: r for r in ((pairs.get(p) or {}).get("critics", {}).get(v) or {})
                        .get("readings", [])} for p in PAIRS}
        for n in sorted({u for by in readings.values() for u in by}):
            cells = []
            for p in PAIRS:
                r = readings[p].get(n) or {}
                cells += [layers(r.get("train")), layers(r.get("heldout"))]
            rows.append([f"critic `{v}`", str(n), *cells])
    head = [f"{title}: {where}" for title in PAIRS.values() for where in ("trained on", "held out")]
    return table(["estimator", "updates", *head], rows)


def gradient_table(cal: dict[str, Any]) -> list[str]:
    """The push (|d loss / d state| x N, raw units, per token, per layer) at zero distance beside MSE's."""
    critics = ((cal.get("pairs") or {}).get("teacher_self") or {}).get("critics") or {}
    mse = cal.get("mse_grad_student")
    rows = []
    for v, data in critics.items():
        grad = data.get("grad_at_zero")
        ratio = mean(grad) / mean(mse) if grad and mse and mean(mse) else None
        rows.append([f"critic `{v}` at zero distance", layers(grad), num(ratio) if ratio is not None else MISSING])
    rows.append(["MSE for the LM-only student (its real distance)", layers(mse), "1.00" if mse else MISSING])
    return table(["gradient into the student", "per token, per layer (x N)", "mean over layers / MSE's"], rows)


def sinkhorn_table(cal: dict[str, Any]) -> list[str]:
    s = cal.get("sinkhorn_vs_mse") or {}
    if not s:
        return []
    return table(["Sinkhorn beside normalised MSE (LM-only student)", "per layer"],
                 [[k.replace("_", " "), layers(v)] for k, v in s.items()])


def calibration_lines(cal: dict[str, Any]) -> list[str]:
    """What the readings show, in numbers: each variant's last held-out reading on the teacher's own states
    (true distance ~0) against its reading on the student, and the exact W1 of both."""
    pairs = cal.get("pairs") or {}
    lines = []
    exact = {p: (pairs.get(p) or {}).get("judges", {}).get("exact_w1") for p in PAIRS}
    if exact["student"] and exact["teacher_self"]:
        lines.append(f"- Exact W1 between the point clouds: {layers(exact['student'])} for the student, "
                     f"{layers(exact['teacher_self'])} between two samples of the teacher (its finite-sample "
                     "floor, per layer).")
    for v in (pairs.get("student") or {}).get("critics", {}):
        last = {p: (((pairs.get(p) or {}).get("critics", {}).get(v) or {}).get("readings") or [None])[-1]
                for p in PAIRS}
        if not all(last.values()):
            continue
        own, stu = mean(last["teacher_self"]["heldout"]), mean(last["student"]["heldout"])
        growth = [mean(r["train"]) for r in pairs["teacher_self"]["critics"][v]["readings"]]
        lines.append(f"- Critic `{v}` after {last['student']['updates']} updates, held out, mean over layers: "
                     f"{sig(own, 3)} on the teacher's own samples vs {sig(stu, 3)} on the student"
                     + (f" ({100 * own / stu:.0f}% of it)" if stu else "")
                     + "; its reading on the teacher's own training samples went "
                     + " -> ".join(sig(g, 3) for g in growth) + " with updates.")
    return lines


def _vs(tests: list[Comparison], m: str | None, ref: str | None) -> str:
    """The test PPL difference m − ref with its Holm p, as a table cell."""
    if m is not None and m == ref:
        return "(reference)"
    c = find(tests, m, ref) if m and ref else None
    return MISSING if c is None else f"{sig(c.result.mean_diff, 3)} (Holm p = {pvalue(c.p_holm)})"


def family_table(study: StudyData, tests: list[Comparison]) -> list[str]:
    """Every tuned family but the logit one: kind, chosen weight, test PPL, its difference to `mse_lm` and to
    LM-only (Holm p), and the distillation term's share of the squared gradient."""
    mse, lm = study.method_of(MSE_FAMILY), study.lm
    rows = []
    for f in tuning(study).values():
        if f.kind == "logit":
            continue
        m = study.method_of(f.name)
        runs = study.of(m) if m else []
        shares = [s for s in (distill_share(r) for r in runs) if s is not None]
        rows.append([f"`{f.name}`", f.kind, f.chosen or "not chosen", pm([r.test_ppl for r in runs]) if runs
                     else MISSING, _vs(tests, m, mse), _vs(tests, m, lm), pm(shares, 3) if shares else MISSING])
    return table(["family", "kind", "weight", "test PPL", f"− `{MSE_FAMILY}` (PPL)", "− `lm` (PPL)",
                  "distillation share of the squared gradient"], rows)


def sinkhorn_mse_lines(study: StudyData, tests: list[Comparison], cal: dict[str, Any] | None) -> list[str]:
    """The paired Sinkhorn family beside MSE: chosen weights, the test, and the calibration's value ratio."""
    grid = tuning(study)
    sk, mse = grid.get("sinkhorn_lm"), grid.get(MSE_FAMILY)
    if not sk or not mse or not sk.chosen or not mse.chosen:
        return []
    line = (f"- Sinkhorn on the same positions (`sinkhorn_lm`) chose weight {sk.chosen}, `{MSE_FAMILY}` chose "
            f"{mse.chosen} (ratio {float(sk.chosen) / float(mse.chosen):.2f})")
    c = find(tests, study.method_of("sinkhorn_lm") or "", study.method_of(MSE_FAMILY) or "")
    if c is not None:
        line += (f"; test PPL difference {sig(c.result.mean_diff, 3)} over {c.result.n} seeds (Holm p = "
                 f"{pvalue(c.p_holm)}, {'significant' if c.significant else 'not significant'})")
    ratio = ((cal or {}).get("sinkhorn_vs_mse") or {})
    if ratio.get("paired_over_mse"):
        line += (f"; in the calibration its value is {layers(ratio['paired_over_mse'])} x the normalised MSE with "
                 f"gradient cosine {layers(ratio.get('paired_grad_cosine'))} per layer")
    return [line + "."]


def estimator_section(study: StudyData, tests: list[Comparison]) -> list[str]:
    cal = study.calibration
    lines = ["### Calibration: is the critic an estimator?", ""]
    if cal:
        lines += [f"On fixed states at the {cal.get('layers', '?')} matched layers ({cal.get('samples', '?')} "
                  "positions per set, in the critic's standardised coordinates), each critic variant trained from "
                  "scratch and read on the sets it trained on and on held-out sets, beside three judges computed on "
                  "the trained-on sets; values per layer (layer 1 / layer 2 / ...).", ""]
        lines += calibration_table(cal) + [""] + gradient_table(cal) + [""] + sinkhorn_table(cal)
        lines += [""] + calibration_lines(cal)
    else:
        lines += ["No calibration yet (`calibration/calibration.json` is written by the study's calibration "
                  "stage once the LM-only run of the first seed has finished)."]
    lines += ["", "### Every estimator at its chosen weight", "",
              "Test PPL mean ± sd over seeds; the differences are the mean paired differences (method − reference) "
              "with the Holm-adjusted p of the tests below.", ""]
    lines += family_table(study, tests)
    lines += [""] + sinkhorn_mse_lines(study, tests, cal)
    return lines
