"""The study driver: its plan (dry run), what it reuses or resumes, and one tiny study end to end."""

from __future__ import annotations

import json
import re

import pytest

from Code.study import driver as study
from Code.study.presets import METHODS
from tiny_setup import REPO, make_data, make_teacher, quiet_env, run_ok


def dry_run(capsys, *args: str) -> str:
    assert study.main(["--dry-run", "--no-report", *args]) == 0
    return capsys.readouterr().out


def test_cpu_plan_runs_every_method_and_seed_with_one_student_and_budget(tmp_path, capsys):
    out = dry_run(capsys, "--preset", "cpu", "--study-dir", str(tmp_path / "s"), "--seeds", "2")
    lines = [ln for ln in out.splitlines() if "OUT_DIR=" in ln and "/runs/" in ln]
    assert len(lines) == len(METHODS) * 2
    for name, method in METHODS.items():
        for seed in (1, 2):
            line = next(ln for ln in lines if f"/runs/{name}/seed{seed} " in ln)
            assert f"SEED={seed}" in line and "STUDENT_LAYERS=0,2" in line and "MAX_STEPS=100" in line
            assert all(f"{k}={v}" in line for k, v in method.env.items())
            assert method.launcher in line or "Code/launch_common.sh" in line
    assert "pretrain_teacher.sh" in out or "launch_common.sh --no-teacher" in out
    assert out.count("evaluate_.py --ckpt") == len(METHODS) * 2


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
    second = run_ok(cmd, env, timeout=300)
    assert "2 reused, 0 trained" in second.stdout
    manifest = json.loads((root / "study.json").read_text())
    assert len(manifest["invocations"]) == 2
    assert sorted(manifest["invocations"][1]["reused"]) == ["lm/seed1", "wd/seed1"]
