"""The study driver: its plan (dry run), what it reuses or resumes, and one tiny study end to end."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from Code.study import driver as study
from Code.study.presets import METHODS, PRESETS
from tests.support.tiny_setup import REPO, make_data, make_teacher, quiet_env, run_ok

pytestmark = pytest.mark.integration  # launchers, ranks, end to end: `pytest -m integration`


def dry_run(capsys, *args: str) -> str:
    assert study.main(["--dry-run", "--no-report", *args]) == 0
    return capsys.readouterr().out


def test_cpu_plan_runs_every_method_and_seed_with_one_student_and_budget(tmp_path, capsys):
    out = dry_run(capsys, "--preset", "cpu", "--study-dir", str(tmp_path / "s"), "--seeds", "2")
    lines = [ln for ln in out.splitlines() if "OUT_DIR=" in ln and "/runs/" in ln]
    methods = PRESETS["cpu"].methods
    assert {"lm", "kd_lm", "mse_lm", "wd_lm"} <= set(methods)  # the pure comparison beside the recipes
    assert len(lines) == len(methods) * 2
    for name in methods:
        method = METHODS[name]
        for seed in (1, 2):
            line = next(ln for ln in lines if f"/runs/{name}/seed{seed} " in ln)
            assert f"SEED={seed}" in line and "STUDENT_LAYERS=0,3" in line and "MAX_STEPS=100" in line
            assert all(f"{k}={v}" in line for k, v in method.env.items())
            assert method.launcher in line or "Code/launch_common.sh" in line
    seed_mse = next(ln for ln in lines if "/runs/seed_mse/seed1 " in ln)
    assert "--layer-map 1:1,2:6" in seed_mse  # every hidden-state method on the truncation's own map
    assert "pretrain_teacher.sh" in out or "launch_common.sh --no-teacher" in out
    assert out.count("evaluate_.py --ckpt") == len(methods) * 2


def test_gpu_plan_uses_gpt2_and_wikitext103(tmp_path, capsys):
    out = dry_run(capsys, "--preset", "gpu", "--study-dir", str(tmp_path / "g"), "--methods", "wd,distilgpt2",
                  "--seeds", "1", "--max-steps", "7")
    assert "--dataset wikitext-103" in out and "TEACHER=gpt2" in out
    assert re.search(r"PRESET=distilgpt2 .*STUDENT_LAYERS=0,2,4,6,8,10 .*distilgpt2/train.sh", out)
    assert "MAX_STEPS=7" in out and "MAX_STEPS=2000" not in out


def test_run_state_says_what_to_do(tmp_path):
    run = tmp_path / "r"
    assert study.run_state(run) == "train"
    (run / "final").mkdir(parents=True)
    (run / "args.json").write_text("{}")
    assert study.run_state(run) == "resume"
    (run / "final" / "config.json").write_text("{}")
    assert study.run_state(run) == "eval"
    (run / "eval").mkdir()
    (run / "eval" / "metrics.json").write_text("{}")
    assert study.run_state(run) == "done"


def test_a_run_made_with_other_settings_is_refused(tmp_path):
    (tmp_path / "args.json").write_text(json.dumps({"max_steps": 50, "seed": 1, "loss": "wd", "lr": 0.001}))
    study.check_settings(tmp_path, {"MAX_STEPS": "50", "SEED": "1", "LOSS": "wd", "LR": "1e-3"})
    with pytest.raises(study.StudyError, match="max_steps=50"):
        study.check_settings(tmp_path, {"MAX_STEPS": "100", "SEED": "1"})


def test_inputs_are_checked_in_one_line(tmp_path, capsys):
    assert study.main(["--methods", "wd,nope", "--dry-run"]) == 2
    assert "error: unknown methods ['nope']" in capsys.readouterr().err
    assert study.main(["--seeds", "a,b", "--dry-run"]) == 2
    assert study.main(["--corpus", str(tmp_path), "--dry-run", "--study-dir", str(tmp_path / "s")]) == 2
    assert "has no train.txt" in capsys.readouterr().err
    assert study.parse_seeds("3", (1,)) == [1, 2, 3] and study.parse_seeds("4,7", (1,)) == [4, 7]
    assert {"LOSS", "MAX_STEPS", "PRESET", "TEACHER"} <= study.launcher_vars()
    assert "NUM_GPUS" not in study.launcher_vars()


def test_tiny_study_end_to_end_then_reused(tmp_path, corpus_dir):
    """Two methods, one seed, 4 steps, through run_study.sh; the second call trains nothing."""
    data = make_data(corpus_dir, tmp_path / "data")
    teacher = make_teacher(tmp_path / "teacher")
    root, report = tmp_path / "study", tmp_path / "report"
    env = quiet_env(STUDY_DIR=str(root), METHODS="lm,wd", SEEDS="1", MAX_STEPS="4", DATA_DIR=str(data),
                    TEACHER=str(teacher), REPORT_DIR=str(report), LOSS="kd")  # a stray LOSS must not leak
    cmd = ["bash", str(REPO / "scripts" / "run_study.sh"), "cpu"]
    first = run_ok(cmd, env, timeout=900)
    assert "2 trained" in first.stdout and "0 failed" in first.stdout
    for m in ("lm", "wd"):
        run = root / "runs" / m / "seed1"
        assert json.loads((run / "args.json").read_text())["loss"] == m
        assert (run / "eval" / "metrics.json").is_file()
    text = (report / "report.md").read_text()
    assert "All 2 planned runs finished" in text and (report / "report.pdf").is_file()
    gutenberg = REPO.parent / "shared" / "corpus" / "gutenberg"
    wd_metrics = root / "runs" / "wd" / "seed1" / "eval" / "metrics.json"
    if gutenberg.is_dir():  # the cpu preset scores every run on the books too
        metrics = json.loads(wd_metrics.read_text())
        assert metrics["student"]["ood_ppl"] > 1 and len(metrics["ood"]["files"]) == len(list(gutenberg.glob("*.txt")))
        assert "out-of-domain" in text
        # an evaluation from before out-of-domain PPL existed: evaluated again, not trained again
        del metrics["student"]["ood_ppl"], metrics["teacher"]["ood_ppl"], metrics["ood"]
        wd_metrics.write_text(json.dumps(metrics))
    final_mtime = (root / "runs" / "wd" / "seed1" / "final" / "model.safetensors").stat().st_mtime_ns
    second = run_ok(cmd, env, timeout=300)
    manifest = json.loads((root / "study.json").read_text())
    assert len(manifest["invocations"]) == 2
    assert "0 trained" in second.stdout and "0 failed" in second.stdout
    if gutenberg.is_dir():
        assert "1 reused, 0 trained, 0 resumed, 1 evaluated" in second.stdout
        assert manifest["invocations"][1]["reused"] == ["lm/seed1"]
        assert manifest["invocations"][1]["evaluated"] == ["wd/seed1"]
        assert json.loads(wd_metrics.read_text())["student"]["ood_ppl"] > 1
    else:
        assert "2 reused, 0 trained" in second.stdout
        assert sorted(manifest["invocations"][1]["reused"]) == ["lm/seed1", "wd/seed1"]
    assert (root / "runs" / "wd" / "seed1" / "final" / "model.safetensors").stat().st_mtime_ns == final_mtime


def eval_lines(out: str) -> list[str]:
    return [ln for ln in out.splitlines() if "evaluate_.py --ckpt" in ln]


def test_every_run_is_evaluated_on_the_ood_corpus(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OOD_TEXT", raising=False)
    gutenberg = REPO.parent / "shared" / "corpus" / "gutenberg"
    out = dry_run(capsys, "--preset", "cpu", "--study-dir", str(tmp_path / "s"), "--seeds", "1", "--methods", "lm,wd")
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
    out = dry_run(capsys, "--preset", "cpu", "--study-dir", str(tmp_path / "s"), "--seeds", "1", "--methods", "lm")
    assert eval_lines(out)[0].endswith(f"--ood-text {tmp_path / 'b.txt'}")
    monkeypatch.setenv("OOD_TEXT", "none")
    out = dry_run(capsys, "--preset", "cpu", "--study-dir", str(tmp_path / "s"), "--seeds", "1", "--methods", "lm")
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
           "ood": {"files": files, "tokens": 5}}
    fake_run(root / "runs" / "lm" / "seed1", old)
    fake_run(root / "runs" / "wd" / "seed1", new)
    fake_run(root / "runs" / "kd" / "seed1", {**new, "ood": {"files": ["/other/book.txt"], "tokens": 5}})
    assert study.run_state(root / "runs" / "lm" / "seed1") == "done"               # no OOD text asked for
    assert study.run_state(root / "runs" / "lm" / "seed1", files) == "eval"
    assert study.run_state(root / "runs" / "wd" / "seed1", files) == "done"
    assert study.run_state(root / "runs" / "kd" / "seed1", files) == "eval"        # scored on other text
    out = dry_run(capsys, "--preset", "cpu", "--study-dir", str(root), "--seeds", "1", "--methods", "lm,wd,kd",
                  "--data-dir", str(tmp_path / "data"), "--teacher", str(tmp_path / "teacher"),
                  "--ood-text", str(text))
    assert not [ln for ln in out.splitlines() if "OUT_DIR=" in ln]                 # nothing is trained
    evaluated = eval_lines(out)
    assert len(evaluated) == 2 and all(ln.endswith(f"--ood-text {text}") for ln in evaluated)
    assert any("/runs/lm/seed1/final" in ln for ln in evaluated)
    assert any("/runs/kd/seed1/final" in ln for ln in evaluated)
    assert "lm/seed1: trained and evaluated before, without the out-of-domain PPL" in out
    assert "wd/seed1: finished before, reused" in out
