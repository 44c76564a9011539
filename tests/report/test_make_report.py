"""make_report.py on fake-but-realistic staged study folders (tests/report/study_setup.py): the numbers equal
the files', statistics against known values, missing runs and stages listed, files only, paths, the PDF."""

from __future__ import annotations

import json
import math
import shutil
import statistics
from pathlib import Path

import pytest

from Code import make_report
from Code.report.comparisons import effect
from Code.report.fmt import MISSING
from Code.report.stats import holm, min_wilcoxon_p, paired, paired_t, swapped, wilcoxon_exact
from tests.report.study_setup import METHODS, OOD_PPL, PPL, bpb, make_run, make_study, row, section


def report(tmp_path: Path, study: Path, pdf: bool = False) -> str:
    return make_report.build_report(study, tmp_path / "report", pdf=pdf).read_text()


def evals(study: Path, m: str, seeds=(1, 2, 3)) -> list[dict]:
    return [json.loads((study / "runs" / m / f"seed{s}" / "eval" / "metrics.json").read_text()) for s in seeds]


def test_report_numbers_equal_the_files(tmp_path):
    study = make_study(tmp_path / "study")
    text = report(tmp_path, study)
    assert "Partial study" not in text  # every planned run finished
    for m in METHODS:
        got = evals(study, m)
        line = row(text, m, "## Test results")
        cells = [c.strip() for c in line.split("|")[1:-1]]
        for cell, key, digits in ((cells[2], "ppl", 2), (cells[3], "bpb", 3), (cells[4], "ood_ppl", 2),
                                  (cells[5], "ood_bpb", 3)):
            values = [e["student"][key] for e in got]
            assert cell == f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"
        swd = [e["layers"][1]["sliced_wd"] for e in got]
        assert f"{statistics.mean(swd):.4g} ± {statistics.stdev(swd):.2g}" in row(text, m, "Sliced WD:")
        exact = [e["layers"][0]["exact_w1"] for e in got]
        assert f"{statistics.mean(exact):.4g} ± {statistics.stdev(exact):.2g}" in row(text, m, "Exact W1:")
        train_time = [30.0 + s for s in (1, 2, 3)]
        assert f"{statistics.mean(train_time):.1f} ± {statistics.stdev(train_time):.1f}" in row(text, m, "## Cost")
    teacher = row(text, "teacher", "## Test results")
    assert f"{bpb(90.0):.3f}" in teacher and "250.00" in teacher
    assert "0.94M" in row(text, "lm", "## Cost")
    assert "Test CPU" in text and "0123456789ab" in text
    figures = sorted(p.name for p in (tmp_path / "report" / "figures").glob("*.png"))
    assert {"ppl.png", "layers_sliced_wd.png", "layers_cka.png", "val_loss.png", "loss_terms.png", "critic_wd.png",
            "tsne.png"} <= set(figures)
    for name in figures:
        assert f"figures/{name}" in text


def test_setup_states_the_protocol_and_the_wall_time_per_stage(tmp_path):
    text = report(tmp_path, make_study(tmp_path / "study"))
    protocol = row(text, "protocol", "## Setup")
    assert "tuning seed 100 (not a test seed)" in protocol and "validation split" in protocol
    assert "`mse_lm` 0.25, 0.5, 1.25, 3" in protocol
    assert "1, 2, 3 (3 seeds" in row(text, "test seeds", "## Setup")
    wall = row(text, "study wall time", "## Setup")
    # two invocations: 600 + 1200 s; tune 240 + 60 s; CPU 1000 + 2000 s
    assert "30.0 min (0.50 h) over 2 invocations" in wall and "0.83 CPU-hours" in wall
    assert "tune 5.0 min" in wall and "test 15.0 min" in wall and "budget 3.3 min" in wall
    # the runs' own times, which a kill cannot lose: 3 seeds of every method at 40 + seed seconds each
    per_stage = row(text, "run time per stage", "## Setup")
    hours = len(METHODS) * sum(40.0 + s for s in (1, 2, 3)) / 3600
    assert f"test {len(METHODS) * 3} runs timed, {hours:.2f} h of run wall time (median 42 s a run)" in per_stage
    assert "1000 steps, seeds 1, 2, 3" in row(text, "budget point", "## Setup")
    code = row(text, "code of the runs", "## Setup")
    assert "trained at 2 commits, the first at aaaaaaaaaaaa, the last at bbbbbbbbbbbb" in code
    assert "with uncommitted changes in the checkout" in code


def test_missing_runs_and_unreached_stages_are_listed_not_fatal(tmp_path):
    study = make_study(tmp_path / "study", budget=False, calibration=False, selfcheck_ppl=None)
    shutil.rmtree(study / "runs" / "wd_lm_w0.05" / "seed3")                 # never started
    shutil.rmtree(study / "runs" / "wd_lm_w0.05" / "seed2" / "eval")        # trained, not evaluated
    shutil.rmtree(study / "runs" / "lm" / "seed3")
    make_run(study / "runs" / "lm" / "seed3", "lm", 3, 305.0, state="started")  # killed before final/
    shutil.rmtree(study / "tune" / "gauss_w2_lm_w3" / "seed100" / "eval")   # a tuning point not scored yet
    manifest = json.loads((study / "study.json").read_text())
    manifest["runs"]["lm/seed3"]["status"] = "failed training"
    (study / "study.json").write_text(json.dumps(manifest))
    text = report(tmp_path, study)
    runs = section(text, "Runs")
    assert "4 of 31 planned runs" in runs  # 16 tuning points + 5 methods x 3 test seeds; no budget stage
    assert "**Partial study: 4 of 31 planned runs are not finished**" in text.split("## Setup")[0]  # said first
    assert "- `runs/wd_lm_w0.05` seed 3: missing" in runs and "- `runs/wd_lm_w0.05` seed 2: not evaluated" in runs
    assert "- `runs/lm` seed 3: not finished; study.json: failed training" in runs
    assert "- `tune/gauss_w2_lm_w3` seed 100: not evaluated" in runs
    shutil.rmtree(study / "runs" / "gauss_w2_lm_w1")                           # a method not started at all
    runs = section(report(tmp_path, study), "Runs")
    assert "- `runs/gauss_w2_lm_w1` seeds 1, 2, 3: missing" in runs
    assert "Not in this study (yet): budget point, calibration, out-of-domain self-check." in runs
    assert "100.00 (1 seed)" in row(text, "wd_lm_w0.05", "## Test results")
    assert "has not been planned yet" in section(text, "Budget point")
    assert "No calibration yet" in section(text, "Does the estimator matter?")
    assert "(b) the out-of-domain path reproduces the in-domain test PPL: n/a" in section(text, "Out-of-domain")
    assert "too few paired seeds" in text                                     # wd shares one seed with lm


def test_a_study_with_only_a_baseline_run_builds(tmp_path):
    root = tmp_path / "study"
    make_run(root / "runs" / "lm" / "seed1", "lm", 1, 300.0)
    text = report(tmp_path, root)
    assert "No tuning run is on disk" in section(text, "Tuning on validation")
    assert "No distribution-matching family has a finished test run yet" in section(text, "Conclusion")


def test_pdf_is_written_and_cli_reports_errors(tmp_path, capsys):
    study = make_study(tmp_path / "study", seeds=(1, 2))
    report(tmp_path, study, pdf=True)
    pdf = tmp_path / "report" / "report.pdf"
    assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 20_000
    assert make_report.main(["--study-dir", str(tmp_path / "nope"), "--out-dir", str(tmp_path / "r2")]) == 2
    assert "error: study folder" in capsys.readouterr().err


def test_statistics_against_known_values():
    t, p, lo, hi = paired_t([1.0, 2.0, 3.0, 4.0], [0.0, 0.5, 1.0, 2.5])
    # differences 1, 1.5, 2, 1.5: mean 1.5, sd 0.408248 -> t = 7.348, df 3, p = 0.00521; t_0.975(3) = 3.182446
    # (R: t.test(c(1,2,3,4), c(0,.5,1,2.5), paired=TRUE) gives t = 7.3485, p = 0.005208, CI 0.8504 .. 2.1496)
    assert t == pytest.approx(7.348469, rel=1e-5) and p == pytest.approx(0.0052079, rel=1e-4)
    assert lo == pytest.approx(0.8503859, rel=1e-6) and hi == pytest.approx(2.1496141, rel=1e-6)
    assert paired_t([1.0, 2.0], [1.0, 2.0])[1] == 1.0            # identical: no difference
    assert paired_t([2.0, 3.0, 4.0], [1.0, 2.0, 3.0])[1] == 0.0  # the same shift every time
    assert all(math.isnan(v) for v in paired_t([1.0], [2.0]))    # one pair: nothing to test
    # exact signed-rank: all differences of one sign is the most extreme outcome, 2 / 2^n two-sided
    assert wilcoxon_exact([3.0, 4.0, 5.0], [1.0, 1.0, 1.0]) == pytest.approx(0.25) == min_wilcoxon_p(3)
    assert wilcoxon_exact([2.0, 3.0, 4.0, 5.0, 6.0], [1.0] * 5) == pytest.approx(0.0625) == min_wilcoxon_p(5)
    assert min_wilcoxon_p(8) == pytest.approx(0.0078125) and min_wilcoxon_p(0) == 1.0
    # differences 1, -2, 3, 4, 5 -> W- = 2: exact two-sided p = 2 * 3/32 = 0.1875 (R: wilcox.test(..., exact=TRUE))
    assert wilcoxon_exact([2.0, 0.0, 4.0, 5.0, 6.0], [1.0, 2.0, 1.0, 1.0, 1.0]) == pytest.approx(0.1875)
    assert holm([0.01, 0.04, 0.03, math.nan])[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(holm([0.01, math.nan])[1])
    assert swapped({"a": 1.0, "b": 2.0, "c": 3.0}, {"a": 1.0, "b": 4.0, "c": 3.0}) == [("b", "c")]
    assert swapped({"a": 1.0, "b": 1.0}, {"a": 2.0, "b": 1.0}) == []  # a tie is no swap


def test_effect_sizes_in_unit_and_percent_of_baseline():
    a, b = [90.0, 96.0, 93.0], [100.0, 104.0, 102.0]  # differences -10, -8, -9; baseline mean 102
    r = paired(a, b)
    assert r.mean_diff == pytest.approx(-9.0) and r.baseline_mean == pytest.approx(102.0)
    half = 4.302653 * 1.0 / math.sqrt(3)  # t_0.975(2) * sd / sqrt(n)
    assert (r.ci_low, r.ci_high) == pytest.approx((-9.0 - half, -9.0 + half), rel=1e-6)
    assert r.pct_ci == pytest.approx((100 * (-9.0 - half) / 102.0, 100 * (-9.0 + half) / 102.0), rel=1e-6)
    text = effect(r, " PPL")
    assert text.startswith("-9 PPL [") and "-8.82% [" in text and "of the baseline mean" in text
    single = paired([90.0], [100.0])
    assert math.isnan(single.ci_low) and single.pct_diff == pytest.approx(-10.0)


def test_missing_bits_per_byte_and_out_of_domain_are_a_dash(tmp_path):
    text = report(tmp_path, make_study(tmp_path / "study", ood=False, bits=False))
    cells = [c.strip() for c in row(text, "lm", "## Test results").split("|")[1:-1]]
    assert cells[3:] == [MISSING] * 3 and cells[2] == f"{statistics.mean(PPL['lm']):.2f} ± " \
                                                       f"{statistics.stdev(PPL['lm']):.2f}"
    assert "out-of-domain PPL –" in row(text, "teacher", "## Setup")
    assert not [ln for ln in section(text, "Paired tests across seeds").splitlines()
                if ln.startswith("|") and "out-of-domain" in ln]                  # no OOD tests without numbers
    # some runs without the out-of-domain number: the column says how many seeds have it
    study = make_study(tmp_path / "mixed")
    path = study / "runs" / "lm" / "seed3" / "eval" / "metrics.json"
    old = json.loads(path.read_text())
    del old["student"]["ood_ppl"], old["student"]["ood_bpb"]
    path.write_text(json.dumps(old))
    text = make_report.build_report(study, tmp_path / "r2", pdf=False).read_text()
    values = OOD_PPL["lm"][:2]
    assert (f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} (2 of 3 seeds)"
            in row(text, "lm", "## Test results"))


def test_the_report_reads_files_only_never_training_or_evaluation():
    """Neither directly (the source) nor through anything it imports (the modules a run loads)."""
    import ast
    import subprocess
    import sys

    from Code import REPO

    banned = ("Code.training", "Code.evaluation")
    for path in [REPO / "Code" / "make_report.py", *(REPO / "Code" / "report").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not [n for n in names if n.startswith(banned)], (path.name, names)
    loaded = subprocess.run([sys.executable, "-c", "import sys, Code.make_report, Code.report.pdf; print(sorted(m for "
                             "m in sys.modules if m.startswith(('Code.training', 'Code.evaluation'))))"],
                            capture_output=True, text=True, cwd=REPO, check=True).stdout.strip()
    assert loaded == "[]"


def test_paths_in_the_report_are_never_absolute(tmp_path):
    study = make_study(tmp_path / "study", seeds=(1, 2))
    shutil.rmtree(study / "runs" / "lm" / "seed2")                         # listed in Runs: relative too
    text = report(tmp_path, study)
    assert str(tmp_path) not in text and "/tmp/" not in text
    assert "`study/teacher/final`" in text  # under the study folder's own name
    assert "--study-dir " in text


def test_the_pdf_holds_the_tables_and_the_figures(tmp_path):
    import pymupdf

    study = make_study(tmp_path / "study", seeds=(1, 2))
    text = report(tmp_path, study, pdf=True)
    doc = pymupdf.open(tmp_path / "report" / "report.pdf")
    pages = "".join(page.get_text() for page in doc)
    assert "Test results" in pages and "Paired tests across seeds" in pages and "Tuning on validation" in pages
    cell = row(text, "lm", "## Test results").split("|")[3].strip()  # a number from the table, as printed
    assert cell in pages
    images = sum(len(page.get_images()) for page in doc)
    assert images == text.count("](figures/")  # every figure of the Markdown drawn in the PDF
