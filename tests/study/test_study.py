"""The study driver: its plan (dry run), what it reuses or resumes, and one tiny study end to end."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from Code.study import command as study
from Code.study.plan import (
    StudyError,
    best_of_kind,
    check_settings,
    choose_weight,
    extended_grid,
    launcher_vars,
    run_state,
)
from Code.study.presets import FAMILIES, PRESETS
from tests.support.tiny_setup import REPO, make_data, make_teacher, quiet_env, run_ok

pytestmark = pytest.mark.integration  # launchers, ranks, end to end: `pytest -m integration`


def dry_run(capsys, *args: str) -> str:
    assert study.main(["--dry-run", "--no-report", *args]) == 0
    return capsys.readouterr().out


def test_cpu_plan_tunes_each_family_on_validation_then_tests_the_chosen_weight(tmp_path, capsys):
    root = tmp_path / "s"
    out = dry_run(capsys, "--preset", "cpu", "--study-dir", str(root), "--seeds", "2", "--stages", "tune,test,budget")
    cpu = PRESETS["cpu"]
    assert set(cpu.families) >= {"kd_lm", "mse_lm", "wd_lm", "sinkhorn_unpaired_lm", "gauss_w2_lm", "swd_lm"}
    assert len(cpu.seeds) >= 8 and cpu.tune_seed not in cpu.seeds  # tuned on a seed the test never uses
    tune = [ln for ln in out.splitlines() if "OUT_DIR=" in ln and "/tune/" in ln]
    assert len(tune) == sum(len(FAMILIES[f].weights) for f in cpu.families) + 1  # + LM-only: the reference
    assert any(f"/tune/lm/seed{cpu.tune_seed} " in ln and "LOSS=lm" in ln for ln in tune)
    for name in cpu.families:
        for weight in FAMILIES[name].weights:
            line = next(ln for ln in tune if f"/tune/{name}_w{weight}/seed{cpu.tune_seed} " in ln)
            assert f"SEED={cpu.tune_seed}" in line and f"WEIGHTS={weight},0.5" in line and "STUDENT_LAYERS=0,3" in line
            assert f"LOSS={FAMILIES[name].term}+lm" in line
    assert all("--split valid" in ln for ln in eval_lines(out) if "/tune/" in ln)
    # untuned families are not tested yet: only LM-only runs at the test seeds
    tested = [ln for ln in out.splitlines() if "OUT_DIR=" in ln and "/runs/" in ln]
    assert len(tested) == 2 and all("/runs/lm/" in ln for ln in tested)
    assert "skipping kd_lm" in out

    # tuning results on validation: every family's lowest grid point is chosen, then tested at every seed
    best = {}
    for name in cpu.families:
        weights = FAMILIES[name].weights
        best[name] = weights[1 + len(name) % 2]  # inside the grid: no extension
        for w in weights:
            ppl = 50.0 if w == best[name] else 60.0 + len(w)
            fake_run(root / "tune" / f"{name}_w{w}" / f"seed{cpu.tune_seed}", {"student": {"ppl": ppl}})
    fake_run(root / "tune" / "lm" / f"seed{cpu.tune_seed}", {"student": {"ppl": 55.0}})
    (root / "tune" / f"wd_unpaired_lm_w{best['wd_unpaired_lm']}" / "seed100" / "eval" / "metrics.json").write_text(
        json.dumps({"student": {"ppl": 49.0}}))  # the best critic variant by validation
    out = dry_run(capsys, "--preset", "cpu", "--study-dir", str(root), "--seeds", "2", "--stages", "tune,test,budget")
    assert "/tune/" not in "".join(ln for ln in out.splitlines() if "OUT_DIR=" in ln)  # tuned: nothing retrained
    for name in cpu.families:
        assert f"tune: {name} -> weight {best[name]}" in out
        for seed in (1, 2):
            line = next(ln for ln in out.splitlines() if f"/runs/{name}_w{best[name]}/seed{seed} " in ln)
            assert f"WEIGHTS={best[name]},0.5" in line and "MAX_STEPS=100" in line
    budget = [ln for ln in out.splitlines() if "OUT_DIR=" in ln and "/budget/" in ln]
    assert len(budget) == len(cpu.budget_methods) * len(cpu.budget_seeds)
    assert all("MAX_STEPS=1000" in ln for ln in budget)
    assert any(f"/budget/wd_unpaired_lm_w{best['wd_unpaired_lm']}/seed3 " in ln for ln in budget)
    manifest = json.loads((root / "study.json").read_text()) if (root / "study.json").is_file() else None
    assert manifest is None  # a dry run writes nothing


def test_a_best_weight_at_a_grid_edge_extends_the_grid_past_it():
    base = ("0.25", "0.5", "1", "2")
    # best at the largest weight: the next one at the same ratio (2^2 / 1), then again, at most MAX_EXTEND more
    assert extended_grid(base, {"0.25": 72.0, "0.5": 71.0, "1": 70.0, "2": 69.0}.get) == [*base, "4"]
    assert extended_grid(base, {"0.25": 72.0, "0.5": 71.0, "1": 70.0, "2": 69.0, "4": 68.0, "8": 67.0}.get) == \
        [*base, "4", "8"]
    # best at the smallest: one below it (0.25^2 / 0.5); inside the grid: nothing added; unscored: nothing yet
    assert extended_grid(base, {"0.25": 60.0, "0.5": 71.0, "1": 70.0, "2": 69.0}.get) == ["0.125", *base]
    assert extended_grid(base, {"0.25": 72.0, "0.5": 60.0, "1": 70.0, "2": 69.0}.get) == list(base)
    assert extended_grid(base, {"0.25": 72.0}.get) == list(base)
    # an extension that did not help stops there: the best is inside again
    assert extended_grid(base, {"0.25": 72.0, "0.5": 71.0, "1": 70.0, "2": 69.0, "4": 69.5}.get) == [*base, "4"]


def test_choose_weight_and_best_of_kind():
    assert choose_weight({"0.1": 80.0, "0.3": 75.5, "1": 75.5, "3": 90.0}) == "0.3"  # the first on a tie
    assert choose_weight({"0.1": 80.0, "0.3": None}) is None                        # unfinished grid
    tuned = {"wd_lm": {"0.05": 70.0}, "wd_unpaired_lm": {"0.12": 69.0}, "gauss_w2_lm": {"1": 60.0}}
    chosen = {"wd_lm": "0.05", "wd_unpaired_lm": "0.12", "gauss_w2_lm": "1"}
    assert best_of_kind("critic", list(tuned), tuned, chosen) == "wd_unpaired_lm"
    assert best_of_kind("critic-free", list(tuned), tuned, chosen) == "gauss_w2_lm"
    assert best_of_kind("logit", list(tuned), tuned, chosen) is None


def test_gpu_plan_uses_gpt2_and_wikitext103(tmp_path, capsys):
    out = dry_run(capsys, "--preset", "gpu", "--study-dir", str(tmp_path / "g"), "--methods", "wd,distilgpt2",
                  "--seeds", "1", "--max-steps", "7")
    assert "--dataset wikitext-103" in out and "TEACHER=gpt2" in out
    assert re.search(r"PRESET=distilgpt2 .*STUDENT_LAYERS=0,2,4,6,8,10 .*distilgpt2/train.sh", out)
    assert "MAX_STEPS=7" in out and "MAX_STEPS=2000" not in out


def test_a_stage_cut_short_keeps_its_time(tmp_path):
    # the study is saved after every run: a kill mid-stage must not lose the stage's wall time so far
    from Code.study.driver import Study

    study = Study(PRESETS["cpu"], tmp_path, dry_run=False, jobs=1, extra_env={})
    study.running_stage = ("test_s", study.t0 - 30.0)
    study.save()
    saved = json.loads((tmp_path / "study.json").read_text())["invocations"][-1]["stages"]
    assert 30.0 <= saved["test_s"] < 40.0


def test_every_command_imports_this_checkouts_code(tmp_path, monkeypatch):
    # another clone's Code first on the path (or pip-installed): the study's commands still run this one's
    other = tmp_path / "other_clone" / "Code"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("raise SystemExit('imported the other clone')\n")
    monkeypatch.setenv("PYTHONPATH", str(other.parent))
    monkeypatch.chdir(tmp_path)
    from Code.study.driver import Study

    study = Study(PRESETS["cpu"], tmp_path / "study", dry_run=False, jobs=1, extra_env={})
    log = tmp_path / "which.log"
    script = tmp_path / "which.py"  # like Code/evaluate_.py: started by path, so its folder leads sys.path
    script.write_text("import Code\nprint(Code.__file__)\n")
    ok, _ = study.execute([sys.executable, str(script)], {}, log, "which Code")
    assert ok, log.read_text()
    assert str(REPO / "Code" / "__init__.py") in log.read_text()


def test_run_state_says_what_to_do(tmp_path):
    run = tmp_path / "r"
    assert run_state(run) == "train"
    (run / "final").mkdir(parents=True)
    (run / "args.json").write_text("{}")
    assert run_state(run) == "resume"
    (run / "final" / "config.json").write_text("{}")
    assert run_state(run) == "eval"
    (run / "eval").mkdir()
    (run / "eval" / "metrics.json").write_text("{}")
    assert run_state(run) == "done"


def test_a_run_made_with_other_settings_is_refused(tmp_path):
    (tmp_path / "args.json").write_text(json.dumps({"max_steps": 50, "seed": 1, "loss": "wd", "lr": 0.001}))
    check_settings(tmp_path, {"MAX_STEPS": "50", "SEED": "1", "LOSS": "wd", "LR": "1e-3"})
    with pytest.raises(StudyError, match="max_steps=50"):
        check_settings(tmp_path, {"MAX_STEPS": "100", "SEED": "1"})


def test_inputs_are_checked_in_one_line(tmp_path, capsys):
    assert study.main(["--methods", "wd,nope", "--dry-run"]) == 2
    assert "error: unknown method 'nope'" in capsys.readouterr().err
    assert study.main(["--stages", "tune,nope", "--dry-run"]) == 2
    assert study.main(["--seeds", "a,b", "--dry-run"]) == 2
    assert study.main(["--corpus", str(tmp_path), "--dry-run", "--study-dir", str(tmp_path / "s")]) == 2
    assert "has no train.txt" in capsys.readouterr().err
    assert study.parse_seeds("3", (1,)) == [1, 2, 3] and study.parse_seeds("4,7", (1,)) == [4, 7]
    assert {"LOSS", "MAX_STEPS", "PRESET", "TEACHER"} <= launcher_vars()
    assert "NUM_GPUS" not in launcher_vars()


def test_tiny_study_end_to_end_then_reused(tmp_path, corpus_dir):
    """LM-only and one family (4 weights tuned on validation, then tested at the chosen one), one seed, 4 steps,
    through run_study.sh; the second call trains nothing."""
    data = make_data(corpus_dir, tmp_path / "data")
    teacher = make_teacher(tmp_path / "teacher")
    root, report = tmp_path / "study", tmp_path / "report"
    env = quiet_env(STUDY_DIR=str(root), METHODS="lm,mse_lm", SEEDS="1", MAX_STEPS="4", DATA_DIR=str(data),
                    STAGES="tune,test", BUDGET_STEPS="0", TEACHER=str(teacher), REPORT_DIR=str(report),
                    LOSS="kd")  # a stray LOSS must not leak
    cmd = ["bash", str(REPO / "scripts" / "run_study.sh"), "cpu"]
    first = run_ok(cmd, env, timeout=1800)
    manifest = json.loads((root / "study.json").read_text())
    tuning = manifest["tuning"]["families"]["mse_lm"]
    grid = list(tuning["valid_ppl"])  # the preset's weights, and any added past an edge
    assert set(FAMILIES["mse_lm"].weights) <= set(grid) and len(grid) <= len(FAMILIES["mse_lm"].weights) + 2
    # every grid point and LM-only at the tuning seed, then LM-only and the chosen weight at the test seed
    assert f"{len(grid) + 3} trained" in first.stdout and "0 failed" in first.stdout
    assert manifest["tuning"]["lm_valid_ppl"] > 1
    valid = {w: json.loads((root / "tune" / f"mse_lm_w{w}" / "seed100" / "eval" / "metrics.json").read_text())
             for w in grid}
    assert all("valid" in json.dumps(m["data"]["source"]) for m in valid.values())  # scored on validation
    assert tuning["valid_ppl"] == {w: m["student"]["ppl"] for w, m in valid.items()}
    chosen = min(grid, key=lambda w: valid[w]["student"]["ppl"])
    assert tuning["chosen"] == chosen and list(manifest["methods"]) == ["lm", f"mse_lm_w{chosen}"]
    tested = root / "runs" / f"mse_lm_w{chosen}" / "seed1"
    args = json.loads((tested / "args.json").read_text())
    assert args["loss"] == "mse+lm" and args["weights"] == f"{chosen},0.5" and args["seed"] == 1
    assert json.loads((root / "runs" / "lm" / "seed1" / "args.json").read_text())["loss"] == "lm"
    assert (report / "report.md").is_file() and (report / "report.pdf").is_file()
    gutenberg = REPO.parent / "shared" / "corpus" / "gutenberg"
    metrics_file = tested / "eval" / "metrics.json"
    if gutenberg.is_dir():  # the cpu preset scores every test run on the books too, in WikiText's conventions
        metrics = json.loads(metrics_file.read_text())
        assert metrics["student"]["ood_ppl"] > 1 and len(metrics["ood"]["files"]) == len(list(gutenberg.glob("*.txt")))
        assert metrics["ood"]["conventions"] == "wikitext"
        # an evaluation from before out-of-domain PPL existed: evaluated again, not trained again
        del metrics["student"]["ood_ppl"], metrics["teacher"]["ood_ppl"], metrics["ood"]
        metrics_file.write_text(json.dumps(metrics))
    final_mtime = (tested / "final" / "model.safetensors").stat().st_mtime_ns
    # a run finished by an invocation killed before it recorded so: the next one records it as done
    del manifest["runs"]["lm/seed1"]["status"]
    (root / "study.json").write_text(json.dumps(manifest))
    second = run_ok(cmd, env, timeout=300)
    manifest = json.loads((root / "study.json").read_text())
    assert manifest["runs"]["lm/seed1"]["status"] == "done"
    assert len(manifest["invocations"]) == 2
    assert "0 trained" in second.stdout and "0 failed" in second.stdout
    if gutenberg.is_dir():
        assert "1 reused, 0 trained, 0 resumed, 1 evaluated" in second.stdout  # tuning is done: not revisited
        assert manifest["invocations"][1]["evaluated"] == [f"mse_lm_w{chosen}/seed1"]
        assert json.loads(metrics_file.read_text())["student"]["ood_ppl"] > 1
    else:
        assert "2 reused, 0 trained" in second.stdout
    assert (tested / "final" / "model.safetensors").stat().st_mtime_ns == final_mtime


def eval_lines(out: str) -> list[str]:
    return [ln for ln in out.splitlines() if "evaluate_.py --ckpt" in ln]


def test_every_run_is_evaluated_on_the_ood_corpus(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OOD_TEXT", raising=False)
    gutenberg = REPO.parent / "shared" / "corpus" / "gutenberg"
    out = dry_run(capsys, "--preset", "cpu", "--study-dir", str(tmp_path / "s"), "--seeds", "1", "--methods", "lm,wd",
                  "--stages", "test")
    lines = eval_lines(out)
    assert len(lines) == 2
    if gutenberg.is_dir():
        assert all(ln.endswith(f"--ood-text {gutenberg.resolve()}") for ln in lines), lines
        assert f"out-of-domain text: {len(list(gutenberg.glob('*.txt')))} file(s)" in out
    else:
        assert not any("--ood-text" in ln for ln in lines)
    # the user's own text, by flag or by OOD_TEXT (files or folders, ':'-separated); none turns it off
    books = tmp_path / "books"
    books.mkdir()
    (books / "a.txt").write_text("Call me Ishmael.\n")
    (tmp_path / "b.txt").write_text("It was the best of times.\n")
    out = dry_run(capsys, "--preset", "gpu", "--study-dir", str(tmp_path / "g"), "--seeds", "1", "--methods", "wd",
                  "--ood-text", f"{books}:{tmp_path / 'b.txt'}")
    assert eval_lines(out)[0].endswith(f"--ood-text {books} {tmp_path / 'b.txt'}")
    monkeypatch.setenv("OOD_TEXT", str(tmp_path / "b.txt"))
    out = dry_run(capsys, "--preset", "cpu", "--study-dir", str(tmp_path / "s"), "--seeds", "1", "--methods", "lm",
                  "--stages", "test")
    assert eval_lines(out)[0].endswith(f"--ood-text {tmp_path / 'b.txt'}")
    monkeypatch.setenv("OOD_TEXT", "none")
    out = dry_run(capsys, "--preset", "cpu", "--study-dir", str(tmp_path / "s"), "--seeds", "1", "--methods", "lm",
                  "--stages", "test")
    assert not any("--ood-text" in ln for ln in eval_lines(out)) and "out-of-domain text: none" in out
    monkeypatch.delenv("OOD_TEXT")
    assert study.main(["--dry-run", "--ood-text", str(tmp_path / "nope"), "--study-dir", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "error: out-of-domain text" in err and "nope" in err


def fake_run(run: Path, metrics: dict | None) -> None:
    (run / "final").mkdir(parents=True)
    (run / "final" / "config.json").write_text("{}")
    if metrics is not None:
        (run / "eval").mkdir()
        (run / "eval" / "metrics.json").write_text(json.dumps(metrics))


def test_a_run_evaluated_without_ood_is_evaluated_again_not_retrained(tmp_path, capsys):
    text = tmp_path / "ood.txt"
    text.write_text("Call me Ishmael.\n")
    files = [str(text.resolve())]
    root = tmp_path / "s"
    old = {"student": {"ppl": 100.0}, "teacher": {"ppl": 90.0}}                    # before --ood-text existed
    new = {"student": {"ppl": 100.0, "ood_ppl": 300.0}, "teacher": {"ppl": 90.0, "ood_ppl": 200.0},
           "ood": {"files": files, "tokens": 5, "conventions": "wikitext"}}
    fake_run(root / "runs" / "lm" / "seed1", old)
    fake_run(root / "runs" / "wd" / "seed1", new)
    fake_run(root / "runs" / "kd" / "seed1", {**new, "ood": {"files": ["/other/book.txt"], "tokens": 5,
                                                            "conventions": "wikitext"}})
    fake_run(root / "runs" / "mse" / "seed1", {**new, "ood": {"files": files, "tokens": 5, "conventions": "raw"}})
    assert run_state(root / "runs" / "lm" / "seed1") == "done"               # no OOD text asked for
    assert run_state(root / "runs" / "lm" / "seed1", files) == "eval"
    assert run_state(root / "runs" / "wd" / "seed1", files) == "done"
    assert run_state(root / "runs" / "kd" / "seed1", files) == "eval"        # scored on other text
    assert run_state(root / "runs" / "mse" / "seed1", files) == "eval"       # in other conventions
    out = dry_run(capsys, "--preset", "cpu", "--study-dir", str(root), "--seeds", "1", "--methods", "lm,wd,kd",
                  "--stages", "test", "--data-dir", str(tmp_path / "data"), "--teacher", str(tmp_path / "teacher"),
                  "--ood-text", str(text))
    assert not [ln for ln in out.splitlines() if "OUT_DIR=" in ln]                 # nothing is trained
    evaluated = eval_lines(out)
    assert len(evaluated) == 2 and all(ln.endswith(f"--ood-text {text}") for ln in evaluated)
    assert any("/runs/lm/seed1/final" in ln for ln in evaluated)
    assert any("/runs/kd/seed1/final" in ln for ln in evaluated)
    assert "lm/seed1: trained and evaluated before, without the out-of-domain PPL" in out
    assert "wd/seed1: finished before, reused" in out
