"""The sections issue 21 asks of the report, on a staged study folder (tests/report/study_setup.py): the
tuning table with the chosen weight marked, paired tests Holm-adjusted against `mse_lm` and `lm`, the
calibration and estimator tables, the out-of-domain self-checks (PASS and FAIL), the budget point and the
conclusion; each number recomputed from the fixture's own values."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

from Code import make_report
from Code.report.fmt import pvalue, sig
from Code.report.stats import holm, paired
from tests.report import study_setup as fx
from tests.report.study_setup import make_study, row, rows, section

MSE, LM, WD, GAUSS, KD = "mse_lm_w1.25", "lm", "wd_lm_w0.05", "gauss_w2_lm_w1", "kd_lm_w0.5"


def report(tmp_path: Path, study: Path, name: str = "report") -> str:
    return make_report.build_report(study, tmp_path / name, pdf=False).read_text()


def expected_holm(*metrics: dict[str, list[float]]) -> dict[tuple[str, str], float]:
    """The Holm-adjusted p (one family over all `metrics`) of the tests on the first metric (method -> per-seed
    values): each method against mse_lm's and against lm's, mse_lm against lm once."""
    pairs = [(m, MSE) for m in metrics[0] if m not in (MSE, LM)] + [(m, LM) for m in metrics[0] if m != LM]
    raw = [paired(values[a], values[b]).p_t for values in metrics for a, b in pairs]
    return dict(zip(pairs, holm(raw)[:len(pairs)], strict=True))


def test_tuning_table_marks_the_chosen_weight_and_shows_each_kind(tmp_path):
    study = make_study(tmp_path / "study")
    text = report(tmp_path, study)
    mse = row(text, "`mse_lm`", "## Tuning on validation")
    assert "| paired |" in mse and "**1.25: 102.00** ✓" in mse and "| 0.25: 110.00 |" in mse
    assert mse.count("✓") == 1 and mse.endswith("| 1.25 |")
    assert "| critic-free |" in row(text, "`gauss_w2_lm`", "## Tuning on validation")
    assert "**1: 97.50** ✓" in row(text, "`gauss_w2_lm`", "## Tuning on validation")
    assert "Chosen at an end of its grid" not in text                     # every choice is inside its grid
    # a tuning stage still running: the point not scored yet is a dash, none is chosen
    manifest = json.loads((study / "study.json").read_text())
    manifest["tuning"]["families"]["wd_lm"].update(chosen=None)
    manifest["tuning"]["families"]["wd_lm"]["valid_ppl"]["0.3"] = None
    (study / "study.json").write_text(json.dumps(manifest))
    shutil.rmtree(study / "tune" / "wd_lm_w0.3" / "seed100" / "eval")
    wd = row(report(tmp_path, study, "r2"), "`wd_lm`", "## Tuning on validation")
    assert "| 0.3: – |" in wd and "✓" not in wd and wd.endswith("| not chosen yet |")
    # a choice at the grid's end is said: the best weight may lie beyond it
    manifest["tuning"]["families"]["mse_lm"]["chosen"] = "3"
    (study / "study.json").write_text(json.dumps(manifest))
    text = report(tmp_path, study, "r3")
    assert "Chosen at an end of its grid (the best weight may lie beyond it): `mse_lm` (largest, 3)." in text


def test_paired_tests_are_holm_adjusted_against_mse_lm_and_lm(tmp_path):
    text = report(tmp_path, make_study(tmp_path / "study"))
    tests = section(text, "Paired tests across seeds")
    holm_p = expected_holm(fx.PPL, fx.OOD_PPL)
    assert len([ln for ln in tests.splitlines() if ln.startswith("| ") and " − " in ln]) == 2 * len(holm_p)
    for (a, b), p in holm_p.items():
        line = next(ln for ln in rows(text, f"{a} − {b}", "## Paired tests") if "| test perplexity |" in ln)
        assert f"| {pvalue(p)} |" in line
    assert not rows(text, f"{LM} − {MSE}", "## Paired tests")           # mse vs lm is tested once
    assert "gauss_w2_lm_w1 lower (better)" in row(text, f"{GAUSS} − {MSE}", "## Paired tests")
    assert "no significant difference" in row(text, f"{WD} − {MSE}", "## Paired tests")
    assert "kd_lm_w0.5 higher (worse)" in row(text, f"{KD} − {MSE}", "## Paired tests")
    assert "With 3 seeds the smallest two-sided p the exact Wilcoxon test can give is 0.25" in tests


def test_estimator_section_calibration_and_families(tmp_path):
    text = report(tmp_path, make_study(tmp_path / "study"))
    est = section(text, "Does the estimator matter?")
    cal = fx.calibration_result()
    exact = row(est, "exact W1 (POT)", "### Calibration")
    assert "| 2.15 / 5.68 |" in exact and "| 0.61 / 1.02 |" in exact
    lp = [ln for ln in rows(est, "critic `lp`", "### Calibration") if "| 500 |" in ln][0]
    reading = cal["pairs"]["teacher_self"]["critics"]["lp"]["readings"][1]
    assert f"| {' / '.join(f'{v:.3g}' for v in reading['heldout'])} |" in lp
    # the push at zero distance against MSE's for the real student, mean over layers
    grad = row(est, "critic `gp` at zero distance", "### Calibration")
    assert f"| {statistics.mean([0.3, 0.4]) / statistics.mean([0.037, 0.074]):.2f} |" in grad
    assert "| 0.501 / 0.499 |" in row(est, "paired over mse", "### Calibration")
    # per family: kind, weight, test PPL, differences with the Holm p of the main tests, gradient share
    holm_p = expected_holm(fx.PPL, fx.OOD_PPL)
    g = row(est, "`gauss_w2_lm`", "### Every estimator")
    diff = statistics.mean(fx.PPL[GAUSS]) - statistics.mean(fx.PPL[MSE])
    assert "| critic-free | 1 |" in g and f"{diff:.3g} (Holm p = {pvalue(holm_p[(GAUSS, MSE)])})" in g
    assert f"(Holm p = {pvalue(holm_p[(GAUSS, LM)])})" in g
    shares = [fx.SHARE[GAUSS] + 0.01 * s for s in fx.SEEDS]
    assert f"{statistics.mean(shares):.3f} ± {statistics.stdev(shares):.3f}" in g
    assert "(reference)" in row(est, "`mse_lm`", "### Every estimator")
    assert not rows(est, "`kd_lm`", "### Every estimator")                 # logit KD is no estimator


def test_sinkhorn_beside_mse_when_both_were_tuned(tmp_path, monkeypatch):
    monkeypatch.setitem(fx.METHODS, "sinkhorn_lm_w2.5", ("sinkhorn_lm", "paired", "sinkhorn+lm"))
    monkeypatch.setitem(fx.GRIDS, "sinkhorn_lm", ("0.5", "1", "2.5", "6"))
    monkeypatch.setitem(fx.VALID, "sinkhorn_lm", (108.0, 104.0, 101.5, 107.0))
    monkeypatch.setitem(fx.PPL, "sinkhorn_lm_w2.5", [101.1, 100.4, 101.6])
    monkeypatch.setitem(fx.OOD_PPL, "sinkhorn_lm_w2.5", [401.0, 399.0, 402.0])
    text = report(tmp_path, make_study(tmp_path / "study", budget=False))
    line = next(ln for ln in section(text, "Does the estimator matter?").splitlines()
                if ln.startswith("- Sinkhorn on the same positions"))
    assert "chose weight 2.5, `mse_lm` chose 1.25 (ratio 2.00)" in line and "not significant" in line
    assert "0.501 / 0.499 x the normalised MSE" in line


def test_out_of_domain_self_checks_pass(tmp_path):
    text = report(tmp_path, make_study(tmp_path / "study"))
    ood = section(text, "Out-of-domain")
    assert "`wikitext` conventions" in ood
    assert "(a) teacher out-of-domain PPL well below the vocabulary size: **PASS**: teacher out-of-domain PPL " \
           "250.00 against a vocabulary of 2,048" in ood
    assert "(b) the out-of-domain path reproduces the in-domain test PPL: **PASS**" in ood and "+1.67%" in ood
    assert "(c) out-of-domain ranking vs in-domain ranking: **PASS**: Spearman rho = 1.000" in ood
    assert "the out-of-domain order is the same" in ood


def test_out_of_domain_self_checks_fail_and_name_the_swaps(tmp_path, monkeypatch):
    monkeypatch.setitem(fx.TEACHER, "ood_ppl", 4516.0)                    # worse than a uniform guess
    monkeypatch.setitem(fx.OOD_PPL, WD, [420.0, 421.0, 422.0])            # wd falls behind mse out of domain
    text = report(tmp_path, make_study(tmp_path / "study", selfcheck_ppl=1111.0))
    ood = section(text, "Out-of-domain")
    assert "(a) teacher out-of-domain PPL well below the vocabulary size: **FAIL**: teacher out-of-domain PPL " \
           "4516.00 against a vocabulary of 2,048" in ood
    assert "(b) the out-of-domain path reproduces the in-domain test PPL: **FAIL**" in ood
    assert f"{100 * (1111.0 / 90.0 - 1):+.2f}%" in ood
    from scipy.stats import spearmanr

    means = {m: (statistics.mean(fx.PPL[m]), statistics.mean(fx.OOD_PPL[m])) for m in fx.METHODS}
    rho = spearmanr([v[0] for v in means.values()], [v[1] for v in means.values()]).statistic
    assert f"Spearman rho = {rho:.3f}" in ood and "**PASS**: Spearman" in ood    # not reversed: passes
    assert f"the orders differ: {WD} ahead of {MSE} in domain, behind out of domain" in ood
    # the reverse order fails
    monkeypatch.setitem(fx.OOD_PPL, LM, [100.0, 100.0, 100.0])
    for m, base in ((KD, 150.0), (MSE, 300.0), (WD, 350.0), (GAUSS, 400.0)):
        monkeypatch.setitem(fx.OOD_PPL, m, [base, base + 1, base + 2])
    text = report(tmp_path, make_study(tmp_path / "reversed"), "r2")
    assert "(c) out-of-domain ranking vs in-domain ranking: **FAIL**: Spearman rho = -1.000" in text


def test_budget_point_table_ranking_and_paired_tests(tmp_path):
    text = report(tmp_path, make_study(tmp_path / "study"))
    budget = section(text, "Budget point")
    line = row(budget, "best:critic", "| role")
    long, short = fx.BUDGET[WD], fx.PPL[WD]
    assert f"`{WD}`" in line and f"{statistics.mean(long):.2f} ± {statistics.stdev(long):.2f}" in line
    assert f"{statistics.mean(short):.2f} ± {statistics.stdev(short):.2f}" in line
    assert f"{statistics.mean(long) - statistics.mean(short):.3g} over 3 seed(s)" in line
    assert f"the order changes: {WD} ahead of {MSE} at the test steps, behind at the budget steps" in budget
    holm_p = expected_holm(fx.BUDGET)
    tested = row(budget, f"{WD} − {MSE}", "Paired tests at 1000 steps")
    assert f"| {pvalue(holm_p[(WD, MSE)])} |" in tested and "wd_lm_w0.05 higher (worse)" in tested
    assert "Holm over these 7 tests" in budget


def test_conclusion_says_whether_a_distribution_loss_beat_mse_or_lm(tmp_path, monkeypatch):
    text = report(tmp_path, make_study(tmp_path / "study"))
    para = section(text, "Conclusion").strip().splitlines()[0]
    holm_p = expected_holm(fx.PPL, fx.OOD_PPL)
    assert (f"beat `{MSE}` on test PPL with Holm-adjusted p < 0.05 (paired t-tests over seeds, Holm over all 14 "
            f"comparisons)? **yes**: {GAUSS} (-5 PPL, Holm p = {pvalue(holm_p[(GAUSS, MSE)])})") in para
    assert f"no significant difference: {WD})" in para
    assert f"the ranking by mean test PPL changes: {MSE} overtakes {WD}" in para
    budget = para.split("At 1000 steps")[1]
    assert f"Did one beat `{LM}` there? **yes**" in budget and "Wilcoxon test cannot go below p = 0.25 there" in budget
    # how large, beside mse_lm's gain over LM-only (means of the fixture's paired differences)
    gain = {m: statistics.mean(fx.PPL["lm"]) - statistics.mean(fx.PPL[m]) for m in (MSE, WD, GAUSS)}
    lo, hi = sorted((gain[WD] / gain[MSE], gain[GAUSS] / gain[MSE]))
    assert (f"How large: those gains over `lm` are {sig(gain[WD], 3)}-{sig(gain[GAUSS], 3)} PPL, {lo:.0%}-{hi:.0%} "
            f"of the {sig(gain[MSE], 3)} PPL that `{MSE}` gains.") in para
    # no distribution loss better than mse_lm: the answer is no
    monkeypatch.setitem(fx.PPL, GAUSS, [101.2, 100.3, 101.4])
    text = report(tmp_path, make_study(tmp_path / "tie"), "r2")
    para = section(text, "Conclusion").strip().splitlines()[0]
    assert f"beat `{MSE}` on test PPL" in para and f"? **no** (2 methods tested; significantly worse: none; " \
                                                  f"no significant difference: {WD}, {GAUSS})" in para


def test_the_calibration_module_s_own_output_reads_into_the_report(tmp_path):
    """The JSON `python -m Code.evaluation.calibration` writes (run here on small random states), not a copy
    of its format: the report's calibration tables show its numbers."""
    import torch

    from Code.evaluation.calibration import main as calibrate_main

    gen = torch.Generator().manual_seed(0)
    teacher = torch.randn(2, 64, 8, generator=gen)
    states = tmp_path / "states.pt"
    torch.save({"teacher": teacher, "student": teacher + 0.5 * torch.randn(2, 64, 8, generator=gen)}, states)
    study = make_study(tmp_path / "study")
    out = study / "calibration" / "calibration.json"
    assert calibrate_main(["--states", str(states), "--samples", "16", "--updates", "2,4", "--variants", "gp,lp",
                           "--out", str(out)]) == 0
    cal = json.loads(out.read_text())
    est = section(report(tmp_path, study), "Does the estimator matter?")
    exact = row(est, "exact W1 (POT)", "### Calibration")
    for pair in ("student", "teacher_self"):
        assert f"| {' / '.join(f'{v:.3g}' for v in cal['pairs'][pair]['judges']['exact_w1'])} |" in exact
    lp = [ln for ln in rows(est, "critic `lp`", "### Calibration") if "| 4 |" in ln][0]
    held = cal["pairs"]["student"]["critics"]["lp"]["readings"][1]["heldout"]
    assert f"| {' / '.join(f'{v:.3g}' for v in held)} |" in lp
    grad = cal["pairs"]["teacher_self"]["critics"]["gp"]["grad_at_zero"]
    assert f"| {' / '.join(f'{v:.3g}' for v in grad)} |" in row(est, "critic `gp` at zero distance", "### Calib")
