"""make_report.py on fake-but-realistic study folders: numbers equal the files', paired tests, missing runs."""

from __future__ import annotations

import json
import math
import re
import statistics
from pathlib import Path

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from Code import make_report  # noqa: E402
from Code.report import tables  # noqa: E402  (module import: pytest would collect tests_table)
from Code.report.stats import holm, min_wilcoxon_p, paired, paired_t, wilcoxon_exact  # noqa: E402

LOSSES = {"lm": ("lm", None), "kd": ("kd", None), "wd": ("wd", None), "mse": ("mse", None)}
# test PPL per method and seed: kd is consistently ~50 below lm; wd and mse are the same up to noise
PPL = {"lm": [300.0, 310.0, 305.0], "kd": [250.5, 259.0, 255.2], "wd": [100.0, 102.0, 101.0],
       "mse": [101.0, 100.5, 101.5]}
# out-of-domain PPL (evaluate_.py --ood-text): higher everywhere; kd again clearly below lm, wd and mse alike
OOD_PPL = {"lm": [900.0, 930.0, 915.0], "kd": [700.0, 722.0, 711.0], "wd": [400.0, 396.0, 405.0],
           "mse": [401.0, 399.5, 402.5]}
OOD_FILES = ["/corpus/gutenberg/austen-emma.txt", "/corpus/gutenberg/melville-moby_dick.txt"]


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2))


def eval_metrics(ppl: float, seed: int, method: str, ood_ppl: float | None = None) -> dict:
    """The schema evaluate_.py writes (Code/evaluate_.py: evaluate()); with `ood_ppl`, as --ood-text adds it."""
    layers = [{"student_layer": s, "teacher_layer": t, "sliced_wd": 0.5 * s + 0.01 * seed + (0.3 if method == "lm"
                                                                                            else 0.0),
               "cka": 0.9 - 0.1 * s + 0.001 * seed, "mse": 1.5 * s, "mse_normalized": 2.0 * s}
              for s, t in ((1, 1), (2, 4))]
    cost = {"student": {"params": 937472, "size_bytes": 3752592, "dtype": "float32", "latency_ms": 48.0,
                        "tokens_per_s": 10000.0 + seed, "batch_size": 4, "seq_len": 128, "iters": 5},
            "teacher": {"params": 1334016, "size_bytes": 5341104, "dtype": "float32", "latency_ms": 83.0,
                        "tokens_per_s": 6000.0, "batch_size": 4, "seq_len": 128, "iters": 5}}
    cost["speedup"] = cost["student"]["tokens_per_s"] / cost["teacher"]["tokens_per_s"]
    cost["param_ratio"] = 937472 / 1334016
    metrics = {"checkpoint": "x/final", "teacher_path": "/t/final", "seed": 0, "device": "cpu", "dtype": "float32",
               "notes": [], "teacher": {"nll": math.log(90.0), "ppl": 90.0, "tokens": 32767},
               "student": {"nll": math.log(ppl), "ppl": ppl, "tokens": 32767},
               "data": {"source": "d split test", "tokens_scored": 32767, "window": 128, "stride": None,
                        "max_tokens": 32768},
               "layer_map_source": "run", "hidden_tokens": 2048, "layers": layers, "cost": cost,
               "generations": {"prompts": ["The"], "max_new_tokens": 16, "teacher": [], "student": []}}
    if ood_ppl is not None:
        metrics["teacher"].update(ood_ppl=250.0, ood_nll=math.log(250.0))
        metrics["student"].update(ood_ppl=ood_ppl, ood_nll=math.log(ood_ppl))
        metrics["ood"] = {"files": OOD_FILES, "tokens_per_file": [16383, 16384], "gutenberg_stripped": [],
                          "max_tokens": 32768, "tokens": 32767, "window": 128, "stride": None}
    return metrics


def make_run(root: Path, method: str, seed: int, ppl: float, stage: str = "done",
             ood_ppl: float | None = None) -> Path:
    run = root / "runs" / method / f"seed{seed}"
    loss, weights = LOSSES[method]
    write_json(run / "args.json", {"loss": loss, "weights": weights, "seed": seed, "max_steps": 20,
                                   "micro_batch_size": 4, "seq_len": 32, "grad_accum": 1, "lr": 1e-3,
                                   "warmup_steps": 2, "precision": "fp32", "teacher": "/t/final", "temperature": 1.0,
                                   "critic_optimizer": "adam", "critic_lr": 1e-4, "n_critic": 5, "critic_hidden": 64})
    if stage == "started":
        return run
    lines = []
    for step in range(1, 21):
        rec = {"kind": "train", "step": step, "tokens": step * 128, "lr": 1e-3, "tokens_per_s": 1000.0 + seed,
               "loss": 5.0 - 0.1 * step, f"loss/{loss}": 5.0 - 0.1 * step}
        if method == "wd":
            rec.update({"loss/wd/layer1": 1.0 / step, "loss/wd/layer2": 2.0 / step})
        lines.append(rec)
        if step % 10 == 0:
            lines.append({"kind": "val", "step": step, "val/loss": math.log(ppl) + 0.01 * (20 - step),
                          "val/ppl": ppl})
    lines.append({"kind": "done", "step": 20, "train_time_s": 30.0 + seed, "best_val_loss": math.log(ppl),
                  "world_size": 1, "device": "cpu"})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    write_json(run / "final" / "config.json", {"n_layer": 2, "n_embd": 64, "n_head": 4, "n_positions": 128,
                                                "vocab_size": 2048})
    write_json(run / "final" / "distill_info.json", {"teacher": "/t/final", "student_layers": [0, 2],
                                                      "layer_map": [[1, 1], [2, 4]], "loss": loss})
    if stage == "done":
        write_json(run / "eval" / "metrics.json", eval_metrics(ppl, seed, method, ood_ppl))
        plt.imsave(run / "eval" / "tsne_grid.png", np.random.default_rng(seed).random((20, 40, 3)))
    return run


def make_study(root: Path, methods=("lm", "kd", "wd", "mse"), seeds=(1, 2, 3), ood: bool = False) -> Path:
    write_json(root / "study.json", {
        "preset": "cpu", "seeds": list(seeds),
        "methods": {m: {"label": m.upper(), "launcher": "Code/launch_common.sh"} for m in methods},
        "hardware": {"cpu": "Test CPU", "cpu_cores": 2, "memory_gb": 8.0, "gpus": []},
        "git": {"commit": "0123456789abcdef", "dirty": False}, "jobs": 2, "threads_per_job": 1,
        "teacher": {"source": "pretrained here", "path": str(root / "teacher" / "final")},
        "runs": {f"{m}/seed{s}": {"train_wall_s": 40.0 + s} for m in methods for s in seeds},
        "invocations": [{"started": "2026-01-01T00:00:00+00:00", "wall_s": 600.0, "stages": {"data_s": 20.0}}]})
    for m in methods:
        for i, s in enumerate(seeds):
            make_run(root, m, s, PPL[m][i], ood_ppl=OOD_PPL[m][i] if ood else None)
    return root


def report(tmp_path: Path, study: Path, pdf: bool = False) -> str:
    md = make_report.build_report(study, tmp_path / "report", pdf=pdf)
    return md.read_text()


def row(text: str, first_cell: str, after: str) -> str:
    """The table row starting with `first_cell` in the section after the heading `after`."""
    section = text.split(after, 1)[1]
    for line in section.splitlines():
        if line.startswith(f"| {first_cell} |"):
            return line
    raise AssertionError(f"no row {first_cell!r} after {after!r}")


def test_report_numbers_equal_the_files(tmp_path):
    study = make_study(tmp_path / "study")
    text = report(tmp_path, study)
    for m in ("lm", "kd", "wd", "mse"):
        values = [json.loads((study / "runs" / m / f"seed{s}" / "eval" / "metrics.json").read_text())["student"]["ppl"]
                  for s in (1, 2, 3)]
        line = row(text, m, "## Test perplexity")
        assert f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}" in line
        assert f"{min(values):.2f}" in line and f"{max(values):.2f}" in line
        swd = [json.loads((study / "runs" / m / f"seed{s}" / "eval" / "metrics.json").read_text())["layers"][1]
               ["sliced_wd"] for s in (1, 2, 3)]
        assert f"{statistics.mean(swd):.4g} ± {statistics.stdev(swd):.2g}" in row(text, m, "Sliced WD:")
        train_time = [30.0 + s for s in (1, 2, 3)]
        assert f"{statistics.mean(train_time):.1f} ± {statistics.stdev(train_time):.1f}" in row(text, m, "## Cost")
    assert "0.94M" in row(text, "lm", "## Cost")  # params from the eval's cost pass
    assert "Test CPU" in text and "0123456789ab" in text
    figures = sorted(p.name for p in (tmp_path / "report" / "figures").glob("*.png"))
    assert {"ppl.png", "layers_sliced_wd.png", "layers_cka.png", "val_loss.png", "loss_terms.png", "critic_wd.png",
            "tsne.png"} <= set(figures)
    for name in figures:
        assert f"figures/{name}" in text


def test_paired_tests_find_the_real_difference_only(tmp_path):
    text = report(tmp_path, make_study(tmp_path / "study"))
    kd = row(text, "kd − lm", "## Paired tests")
    assert "test perplexity" in kd and "kd lower (better)" in kd
    same = row(text, "wd − mse", "## Paired tests")
    assert "test perplexity" in same and "no significant difference" in same
    conclusion = text.split("## Conclusion", 1)[1]
    assert re.search(r"significantly lower test perplexity: kd", conclusion)
    assert "no significant difference" in conclusion


def test_missing_and_unfinished_runs_are_reported(tmp_path):
    study = make_study(tmp_path / "study", methods=("lm", "wd"))
    import shutil

    shutil.rmtree(study / "runs" / "wd" / "seed3")                      # never started
    shutil.rmtree(study / "runs" / "wd" / "seed2" / "eval")             # trained, not evaluated
    shutil.rmtree(study / "runs" / "lm" / "seed3")
    make_run(study, "lm", 3, 305.0, stage="started")                    # killed before final/
    text = report(tmp_path, study)
    runs = text.split("## Runs", 1)[1]
    assert "3 of 6 planned runs" in runs
    assert "`wd` seed 3: missing" in runs and "`wd` seed 2: not evaluated" in runs
    assert "`lm` seed 3: not finished" in runs
    assert "180.00 (1 seed)" not in text and "100.00 (1 seed)" in row(text, "wd", "## Test perplexity")
    assert "| wd − lm | test perplexity | 1 |" in text  # one shared seed: reported, no verdict
    assert "too few paired seeds" in text


def test_pdf_is_written_and_cli_reports_errors(tmp_path, capsys):
    study = make_study(tmp_path / "study", methods=("lm", "wd"), seeds=(1, 2))
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
    assert lo == pytest.approx(1.5 - 3.182446 * 0.408248 / 2, rel=1e-5)
    assert paired_t([1.0, 2.0], [1.0, 2.0])[1] == 1.0            # identical: no difference
    assert paired_t([2.0, 3.0, 4.0], [1.0, 2.0, 3.0])[1] == 0.0  # the same shift every time
    assert all(math.isnan(v) for v in paired_t([1.0], [2.0]))    # one pair: nothing to test
    # exact signed-rank: all differences of one sign is the most extreme outcome, 2 / 2^n two-sided
    assert wilcoxon_exact([3.0, 4.0, 5.0], [1.0, 1.0, 1.0]) == pytest.approx(0.25) == min_wilcoxon_p(3)
    assert wilcoxon_exact([2.0, 3.0, 4.0, 5.0, 6.0], [1.0] * 5) == pytest.approx(0.0625) == min_wilcoxon_p(5)
    assert min_wilcoxon_p(3) == 0.25 and min_wilcoxon_p(5) == 0.0625 and min_wilcoxon_p(0) == 1.0
    # differences 1, -2, 3, 4, 5 -> W- = 2: exact two-sided p = 2 * 3/32 = 0.1875 (R: wilcox.test(..., exact=TRUE))
    assert wilcoxon_exact([2.0, 0.0, 4.0, 5.0, 6.0], [1.0, 2.0, 1.0, 1.0, 1.0]) == pytest.approx(0.1875)
    assert wilcoxon_exact([1.0, 2.0], [1.0, 2.0]) == 1.0
    assert paired([1.0, 2.0, 3.0], [1.5, 2.5, 3.5]).mean_diff == pytest.approx(-0.5)
    assert holm([0.01, 0.04, 0.03, math.nan])[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(holm([0.01, math.nan])[1])


def test_effect_sizes_in_unit_and_percent_of_baseline():
    a, b = [90.0, 96.0, 93.0], [100.0, 104.0, 102.0]  # differences -10, -8, -9; baseline mean 102
    r = paired(a, b)
    assert r.mean_diff == pytest.approx(-9.0) and r.baseline_mean == pytest.approx(102.0)
    half = 4.302653 * 1.0 / math.sqrt(3)  # t_0.975(2) * sd / sqrt(n)
    assert (r.ci_low, r.ci_high) == pytest.approx((-9.0 - half, -9.0 + half), rel=1e-6)
    assert r.pct_diff == pytest.approx(-900.0 / 102.0)
    assert r.pct_ci == pytest.approx((100 * (-9.0 - half) / 102.0, 100 * (-9.0 + half) / 102.0), rel=1e-6)
    text = tables.effect(r, " PPL")
    assert text.startswith("-9 PPL [") and "-8.82% [" in text and "of the baseline mean" in text
    single = paired([90.0], [100.0])
    assert math.isnan(single.ci_low) and single.pct_diff == pytest.approx(-10.0)


def test_report_tests_table_shows_effect_sizes(tmp_path):
    text = report(tmp_path, make_study(tmp_path / "study"))
    header = next(ln for ln in text.split("## Paired tests", 1)[1].splitlines() if ln.startswith("| difference"))
    assert "% of b" in header and "95% CI (% of b)" in header
    kd = row(text, "kd − lm", "## Paired tests")
    lm, kd_ppl = PPL["lm"], PPL["kd"]
    r = paired(kd_ppl, lm)
    assert f"{100 * (statistics.mean(kd_ppl) - statistics.mean(lm)) / statistics.mean(lm):+.2f}%" in kd
    assert f"[{r.pct_ci[0]:+.2f}%, {r.pct_ci[1]:+.2f}%]" in kd
    assert tables.tests_table([])[0].startswith("| difference |")
    conclusion = text.split("## Conclusion", 1)[1]
    assert f"{r.pct_diff:+.2f}%" in conclusion  # the significant kd effect is stated with its size


def rows(text: str, first_cell: str, after: str) -> list[str]:
    """Every table row starting with `first_cell` in the section after the heading `after`."""
    return [ln for ln in text.split(after, 1)[1].splitlines() if ln.startswith(f"| {first_cell} |")]


def test_out_of_domain_ppl_column_tests_and_conclusion(tmp_path):
    study = make_study(tmp_path / "study", ood=True)
    text = report(tmp_path, study)
    header = next(ln for ln in text.split("## Test perplexity", 1)[1].splitlines() if ln.startswith("| method"))
    assert header.split(" | ")[2:4] == ["test PPL mean ± std", "out-of-domain PPL mean ± std"]  # side by side
    for m in ("lm", "kd", "wd", "mse"):
        values = [json.loads((study / "runs" / m / f"seed{s}" / "eval" / "metrics.json").read_text())["student"]
                  ["ood_ppl"] for s in (1, 2, 3)]
        line = row(text, m, "## Test perplexity")
        assert line.split(" | ")[3] == f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"
    assert "out-of-domain PPL 250.00" in row(text, "teacher", "## Setup")          # the teacher's, in its line
    assert "austen-emma, melville-moby_dick" in row(text, "out-of-domain text", "## Setup")
    kd = [ln for ln in rows(text, "kd − lm", "## Paired tests") if "out-of-domain perplexity" in ln]
    assert len(kd) == 1 and "kd lower (better)" in kd[0]
    r = paired(OOD_PPL["kd"], OOD_PPL["lm"])
    assert f"{r.pct_diff:+.2f}%" in kd[0]
    same = [ln for ln in rows(text, "wd − mse", "## Paired tests") if "out-of-domain perplexity" in ln]
    assert len(same) == 1 and "no significant difference" in same[0]
    conclusion = text.split("## Conclusion", 1)[1]
    assert "Lowest mean out-of-domain perplexity: **wd**" in conclusion
    assert re.search(r"significantly lower out-of-domain perplexity: kd \(", conclusion)
    assert re.search(r"out-of-domain perplexity: no significant difference \(difference", conclusion)  # wd vs mse
    assert "10 tests are corrected together" in conclusion  # 3 + 3 against lm, 4 metrics for wd vs mse


def test_out_of_domain_ppl_missing_is_a_dash(tmp_path):
    text = report(tmp_path, make_study(tmp_path / "study"))              # runs evaluated before --ood-text
    for m in ("lm", "kd", "wd", "mse"):
        assert row(text, m, "## Test perplexity").split(" | ")[3] == tables.MISSING
    assert "out-of-domain PPL –" in row(text, "teacher", "## Setup")
    assert "–" in row(text, "out-of-domain text", "## Setup")
    assert not [ln for ln in text.split("## Paired tests", 1)[1].splitlines()
                if ln.startswith("|") and "out-of-domain" in ln]                  # no OOD tests without numbers
    assert "out-of-domain perplexity:" not in text.split("## Conclusion", 1)[1]
    # some runs old, some new: the column says how many seeds it has; the old runs are named, nothing fails
    study = make_study(tmp_path / "mixed", methods=("lm", "kd"), ood=True)
    metrics = study / "runs" / "lm" / "seed3" / "eval" / "metrics.json"
    old = json.loads(metrics.read_text())
    del old["student"]["ood_ppl"], old["teacher"]["ood_ppl"], old["ood"]
    metrics.write_text(json.dumps(old))
    text = make_report.build_report(study, tmp_path / "r2", pdf=False).read_text()
    values = OOD_PPL["lm"][:2]
    assert (f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} (2 of 3 seeds)"
            in row(text, "lm", "## Test perplexity"))
    ood_row = [ln for ln in rows(text, "kd − lm", "## Paired tests") if "out-of-domain" in ln]
    assert len(ood_row) == 1 and "| 2 |" in ood_row[0]                  # only the seeds both have
    assert "lm/seed3" in text.split("## Conclusion", 1)[1]


def test_gradient_shares_and_the_wd_sensitivity_table(tmp_path, monkeypatch):
    """Each run's logged grad_share/<term> averaged per run, then mean ± std over seeds; the wd_lm sweep rows
    pair each setting with mse_lm on the same seeds."""
    shares = {"mse_lm": 0.2, "wd_lm": 0.9, "wd_lm_w002": 0.1}
    ppl = {"mse_lm": [100.0, 101.0, 102.0], "wd_lm": [110.0, 112.0, 111.0], "wd_lm_w002": [99.0, 100.5, 101.2]}
    for m in shares:
        monkeypatch.setitem(LOSSES, m, (m.split("_")[0] + "+lm", "0.5,0.5"))
        monkeypatch.setitem(PPL, m, ppl[m])
    study = make_study(tmp_path / "study", methods=tuple(shares))
    term = {"mse_lm": "mse", "wd_lm": "wd", "wd_lm_w002": "wd"}
    for m, share in shares.items():
        for s in (1, 2, 3):
            path = study / "runs" / m / f"seed{s}" / "metrics.jsonl"
            recs = [json.loads(line) for line in path.read_text().splitlines()]
            for r in recs:
                if r["kind"] == "train" and r["step"] % 5 == 0:  # probes at some log lines only
                    own = share + 0.01 * s + (0.02 if r["step"] == 20 else 0.0)
                    r.update({f"grad_share/{term[m]}": own, "grad_share/lm": 1 - own})
            path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    text = report(tmp_path, study)
    per_seed = [statistics.mean([0.1 + 0.01 * s, 0.1 + 0.01 * s, 0.1 + 0.01 * s, 0.12 + 0.01 * s]) for s in (1, 2, 3)]
    line = row(text, "`wd_lm_w002`", "## Which term drives the student")
    assert f"wd {statistics.mean(per_seed):.3f} ± {statistics.stdev(per_seed):.3f}" in line
    sweep = row(text, "`wd_lm_w002`", "## Wasserstein sensitivity")
    expected = paired(ppl["wd_lm_w002"], ppl["mse_lm"])
    assert tables.effect(expected, base="mse_lm") in sweep and f"t-test p = {tables.pvalue(expected.p_t)}" in sweep
    assert f"{statistics.mean(per_seed):.3f}" in sweep and "weights 0.5,0.5" in sweep
    sensitivity = text.split("## Wasserstein sensitivity", 1)[1].split("## Conclusion")[0]
    assert "| `wd_lm` |" in sensitivity and "| `mse_lm` |" not in sensitivity  # the reference is not a row


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
    study = make_study(tmp_path / "study", methods=("lm", "wd"), seeds=(1, 2), ood=True)
    text = report(tmp_path, study)
    assert str(tmp_path) not in text and "/tmp/" not in text
    assert "`study/teacher/final`" in text  # under the study folder's own name
    assert "--study-dir " in text


def test_the_pdf_holds_the_tables_and_the_figures(tmp_path):
    import pymupdf

    study = make_study(tmp_path / "study", methods=("lm", "wd"), seeds=(1, 2))
    text = report(tmp_path, study, pdf=True)
    doc = pymupdf.open(tmp_path / "report" / "report.pdf")
    pages = "".join(page.get_text() for page in doc)
    assert "Test perplexity" in pages and "Paired tests across seeds" in pages
    cell = row(text, "lm", "## Test perplexity").split("|")[2].strip()  # a number from the table, as printed
    assert cell in pages
    images = sum(len(page.get_images()) for page in doc)
    assert images == text.count("](figures/")  # every figure of the Markdown drawn in the PDF
