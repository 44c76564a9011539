"""Llama- and Qwen-family teachers through the README's launchers: `wd+kd+lm` and `mse+kd+lm` students cut
from a save_pretrained teacher, then `evaluate_.py` scores them; a student of another family is refused by
the pre-flight check in one line."""

from __future__ import annotations

import json
import sys

import pytest
from transformers import AutoModelForCausalLM

from Code.modeling import families
from tests.modeling.family_setup import save_teacher
from tests.support.tiny_setup import CODE, free_port, make_data, quiet_env, run_ok

pytestmark = pytest.mark.integration  # launchers, DeepSpeed, end to end: `pytest -m integration`

COMMON = ["--seq-len", "32", "--micro-batch-size", "4", "--log-interval", "1", "--eval-interval", "5",
          "--eval-iters", "1", "--save-interval", "5", "--warmup-steps", "1", "--lr", "1e-3",
          "--critic-hidden", "16", "--critic-samples", "64", "--student-layers", "0,2",
          "--no-progress", "--no-tensorboard"]
EVAL = ["--max-tokens", "1000", "--hidden-tokens", "256", "--tsne-points", "40", "--gen-tokens", "4",
        "--projections", "16", "--no-progress", "--threads", "1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory, corpus_dir):
    return make_data(corpus_dir, tmp_path_factory.mktemp("family_launchers") / "data", vocab=512)


def _teacher(kind: str, data, root):
    meta = json.loads((data / "meta.json").read_text())
    return save_teacher(kind, root / f"teacher_{kind}", vocab=int(meta["vocab_size"]), eos=int(meta["eos_id"]))


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
@pytest.mark.parametrize("launcher,loss", [("wd_stu_base.sh", "wd+kd+lm"), ("mse_stu_base.sh", "mse+kd+lm")])
def test_launcher_distils_family_and_evaluate_scores_it(kind, launcher, loss, data, tmp_path):
    teacher = _teacher(kind, data, tmp_path)
    out = tmp_path / "run"
    env = quiet_env(TEACHER=str(teacher), DATA_DIR=str(data), OUT_DIR=str(out), MASTER_PORT=free_port(),
                    LOSS=loss, MAX_STEPS="5")
    run_ok(["bash", str(CODE / launcher), *COMMON], env)
    student = AutoModelForCausalLM.from_pretrained(out / "final")
    assert student.config.model_type == kind and families.num_layers(student.config) == 2
    info = json.loads((out / "final" / "distill_info.json").read_text())
    assert info["loss"] == loss
    # wd_stu_base.sh keeps the truncation's own blocks (1->1, 2->4); mse_stu_base.sh maps uniformly (1->2, 2->4)
    assert info["layer_map"] == ([[1, 1], [2, 4]] if loss.startswith("wd") else [[1, 2], [2, 4]])

    run_ok([sys.executable, str(CODE / "evaluate_.py"), "--ckpt", str(out), *EVAL], quiet_env())
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert 1 < metrics["student"]["ppl"] < float("inf") and 1 < metrics["teacher"]["ppl"] < float("inf")
    assert [[r["student_layer"], r["teacher_layer"]] for r in metrics["layers"]] == info["layer_map"]
    assert (out / "eval" / "tsne_grid.png").stat().st_size > 1000


def test_check_refuses_a_student_of_another_family(data, tmp_path):
    teacher, student = _teacher("llama", data, tmp_path), _teacher("gpt2", data, tmp_path)
    cmd = [sys.executable, str(CODE / "train_related.py"), "--check", "--teacher", str(teacher), "--student",
           str(student), "--data-dir", str(data), "--out-dir", str(tmp_path / "run"), "--loss", "kd+lm"]
    import subprocess

    res = subprocess.run(cmd, env=quiet_env(), capture_output=True, text=True, timeout=300)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert lines[0].startswith("error:") and "keeps the teacher's family" in lines[0]
