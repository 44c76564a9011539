"""bench/gpu_check.sh on a machine without a GPU: the refusal (exit 2, one line, nothing written), its
argument handling, the printed plan, and the CPU-side parts of bench/gpu_check.py (runner, metrics and
resume checks, kd_step parsing, the JSON/Markdown summary) on small fake inputs."""

import importlib.util
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.integration  # launchers, ranks, end to end: `pytest -m integration`

REPO = Path(__file__).resolve().parents[2]
SCRIPT = ["bash", str(REPO / "bench" / "gpu_check.sh")]


def _load(name: str):
    """bench/<name>.py as the script sees it (bench/ is its sys.path[0]): its siblings import by bare name."""
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


gc = [_load(name) for name in ("gpu_check_plan", "gpu_check_results", "gpu_check")][-1]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*SCRIPT, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    for split in ("train", "valid", "test"):
        (folder / f"{split}.txt").write_text(f" = {split} = \n\nsome text\n")
    return folder


# ------------------------------------------------------------------------------------ the command line
@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without a CUDA GPU")
def test_refuses_without_gpu_fast_one_line_exit_2_nothing_written(tmp_path):
    out = tmp_path / "out"
    default_out = REPO / "bench" / "gpu_check_out"
    existed = default_out.exists()
    for extra in ([], ["--out", str(out)], ["--out", str(out), "--steps", "4", "--corpus", str(tmp_path / "none")]):
        start = time.perf_counter()
        proc = run(*extra)
        assert time.perf_counter() - start < 30
        assert proc.returncode == 2
        assert proc.stdout == ""
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "needs a CUDA GPU" in lines[0]
    assert not out.exists()
    assert default_out.exists() == existed


def test_help_exits_0_and_names_the_flags():
    proc = run("--help")
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.startswith("usage: bash bench/gpu_check.sh")
    for flag in ("--teacher", "--corpus", "--data-dir", "--out", "--steps", "--budget", "--skip", "--dry-run"):
        assert flag in proc.stdout


@pytest.mark.parametrize("args,fragment", [
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--steps", "x"], "invalid int value"),
    (["--steps", "1"], "--steps must be >= 2"),
    (["--budget", "0"], "--budget must be > 0"),
    (["--skip", "wd,nope"], "unknown step 'nope'"),
    (["--compile", "maybe"], "invalid choice"),
    (["--kd-step-args", "'unclosed"], "cannot be parsed"),
])
def test_bad_arguments_are_one_error_line_exit_2(tmp_path, args, fragment):
    proc = run(*args, "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()


def test_dry_run_prints_every_command_and_writes_nothing(tmp_path, corpus):
    out = tmp_path / "out"
    proc = run("--dry-run", "--out", str(out), "--corpus", str(corpus), "--steps", "6")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert all(line.startswith("+ ") for line in lines)
    names = [line.rsplit("# ", 1)[1].split(",")[0] for line in lines]
    assert names == list(gc.STEP_NAMES)
    text = proc.stdout
    assert f"--dataset text --train {corpus}/train.txt --valid {corpus}/valid.txt --test {corpus}/test.txt" in text
    wd, wd_resume = lines[2], lines[3]
    for needle in ("ZERO_STAGE=2", "PRECISION=bf16", "MAX_STEPS=6", "SAVE_INTERVAL=6", "OVERWRITE=1",
                   f"TEACHER={out}/teacher", f"DATA_DIR={out}/data", "bash Code/wd_stu_base.sh"):
        assert needle in wd
    assert "RESUME=1" in wd_resume and "MAX_STEPS=12" in wd_resume and "OVERWRITE" not in wd_resume
    assert "bash Code/mse_stu_base.sh" in lines[4]
    assert "bench/kd_step.py" in lines[7] and "--seq-len 1024" in lines[7] and "--device cuda" in lines[7]
    assert "Code/evaluate_.py --ckpt" in lines[8]
    assert not out.exists()


def test_dry_run_with_own_teacher_and_data_skips_their_steps(tmp_path):
    teacher, data = tmp_path / "teacher", tmp_path / "data"
    teacher.mkdir()
    data.mkdir()
    (teacher / "config.json").write_text("{}")
    (data / "meta.json").write_text("{}")
    proc = run("--dry-run", "--out", str(tmp_path / "out"), "--teacher", str(teacher), "--data-dir", str(data),
               "--skip", "mse,logit_memory")
    assert proc.returncode == 0, proc.stderr
    names = [line.rsplit("# ", 1)[1].split(",")[0] for line in proc.stdout.strip().splitlines()]
    assert names == ["wd", "wd-resume", "load", "kd_step", "eval"]
    assert f"--teacher {teacher}" in proc.stdout and f"TEACHER={teacher}" in proc.stdout
    missing = run("--dry-run", "--teacher", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "no config.json" in missing.stderr
    (data / "meta.json").write_text('{"vocab_size": 4096}')
    other = run("--dry-run", "--data-dir", str(data))  # the random teacher has GPT-2's 50,257 tokens
    assert other.returncode == 2 and "vocabulary of 4096 tokens, the teacher 50257" in other.stderr
    (teacher / "config.json").write_text('{"n_layer": 4, "n_embd": 64, "n_head": 2, "vocab_size": 4096}')
    proc = run("--dry-run", "--teacher", str(teacher), "--data-dir", str(data))
    assert proc.returncode == 0, proc.stderr
    assert "--n-layer 4 --n-embd 64 --n-head 2 --vocab 4096 --student-layers 0,2 " in proc.stdout


# ------------------------------------------------------------------------------------ the plan, in-process
def args_for(tmp_path: Path, *extra: str):
    return gc.parse_args(["--out", str(tmp_path / "out"), *extra])


def test_corpus_files(tmp_path, corpus):
    assert gc.corpus_files(corpus) == {s: [str(corpus / f"{s}.txt")] for s in ("train", "valid", "test")}
    loose = tmp_path / "loose"
    loose.mkdir()
    (loose / "b.txt").write_text("b")
    (loose / "a.txt").write_text("a")
    assert gc.corpus_files(loose) == {"train": [str(loose / "a.txt"), str(loose / "b.txt")]}
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(gc.UsageError, match="no train.txt"):
        gc.corpus_files(empty)
    with pytest.raises(gc.UsageError, match="no such folder"):
        gc.corpus_files(tmp_path / "missing")


def test_plan_dependencies_and_budget_shares(tmp_path, corpus):
    steps = gc.plan(args_for(tmp_path, "--corpus", str(corpus)))
    by_name = {s.name: s for s in steps}
    assert by_name["wd-resume"].needs == ("wd",) and by_name["wd"].needs == ("teacher", "data")
    assert set(by_name["load"].needs) == {"wd", "mse"} and by_name["eval"].needs == ("wd",)
    assert math.isclose(sum(s.share for s in steps), 1.0)
    assert by_name["wd"].env["MASTER_PORT"] != by_name["mse"].env["MASTER_PORT"]
    env = gc.child_env(by_name["wd"])
    assert env["HF_HUB_OFFLINE"] == "1" and env["ZERO_STAGE"] == "2"


def test_child_env_drops_launcher_variables_of_the_callers_shell(monkeypatch, tmp_path, corpus):
    monkeypatch.setenv("LOSS", "kd")
    monkeypatch.setenv("LR", "1")
    step = gc.plan(args_for(tmp_path, "--corpus", str(corpus)))[2]
    env = gc.child_env(step)
    assert "LOSS" not in env and "LR" not in env and env["PRECISION"] == "bf16"


# ------------------------------------------------------------------------------------ runner
def test_run_step_timeout_kills_the_whole_process_group(tmp_path):
    marker = tmp_path / "alive"
    step = gc.Step("slow", ["bash", "-c", f"(sleep 3; touch {marker}) & echo started; sleep 30"])
    start = time.perf_counter()
    rec = gc.run_step(step, 1.0, tmp_path / "logs" / "slow.log", verbose=False)
    assert rec["status"] == "timeout" and time.perf_counter() - start < 20
    time.sleep(3.5)
    assert not marker.exists()  # the background child died with its group
    log = (tmp_path / "logs" / "slow.log").read_text()
    assert log.startswith("+ bash -c") and "started" in log


def test_run_step_reports_failures_with_their_exit_status(tmp_path):
    rec = gc.run_step(gc.Step("bad", ["bash", "-c", "echo oops; exit 3"]), 30, tmp_path / "bad.log", False)
    assert rec["status"] == "failed" and rec["rc"] == 3 and "oops" in gc.tail(tmp_path / "bad.log")
    rec = gc.run_step(gc.Step("good", ["bash", "-c", "true"], env={"X": "1"}), 30, tmp_path / "ok.log", False)
    assert rec["status"] == "ok" and rec["rc"] == 0 and rec["command"] == "X=1 bash -c true"


def test_execute_skips_what_depends_on_a_failure_and_fails_the_check(tmp_path):
    args = args_for(tmp_path, "--skip", "kd_step,eval,logit_memory,mse", "--steps", "2")
    steps = [gc.Step("wd", ["bash", "-c", "exit 1"], share=0.5),
             gc.Step("wd-resume", ["bash", "-c", "true"], share=0.5, needs=("wd",))]
    result = gc.execute(args, steps, env={"gpu": "Fake GPU", "gpu_count": 1, "gpus_used": 1})
    assert [s["status"] for s in result["steps"]] == ["failed", "skipped (needs wd)"]
    assert not result["ok"]
    names = {c["name"]: c["ok"] for c in result["checks"]}
    assert names == {"wd: trains 2 steps": False, "wd: every loss term finite": False,
                     "wd: RESUME=1 continues 2 -> 4": False}
    json_path, md_path = gc.write_summary(result, args.out)
    assert json.loads(json_path.read_text())["environment"]["gpu"] == "Fake GPU"
    assert "**Overall: FAIL**" in md_path.read_text()


# ------------------------------------------------------------------------------------ reading results
def _train(step: int, **values) -> dict:
    return {"kind": "train", "step": step, "loss": 1.0, "loss/kd": 0.5, "tokens_per_s": 10.0, **values}


def test_check_metrics_flags_null_nan_and_inf_loss_terms_only():
    good = [_train(1), _train(2, **{"loss/wd/layer1": -0.1}),
            {"kind": "val", "step": 2, "val/loss": 3.0, "val/ppl": None}]  # ppl overflow is not a loss
    res = gc.check_metrics(good)
    assert res["ok"] and res["train_records"] == 2 and res["last_val_loss"] == 3.0
    assert res["terms"] == ["loss", "loss/kd", "loss/wd/layer1", "val/loss"]
    for bad in (_train(3, **{"loss/kd": None}), _train(3, **{"loss/wd/layer2": float("nan")}),
                _train(3, loss=float("inf")), {"kind": "val", "step": 3, "val/loss": None}):
        res = gc.check_metrics(good + [bad])
        assert not res["ok"] and res["nonfinite"][0]["step"] == 3
    assert not gc.check_metrics([])["ok"]


def test_check_resume():
    new = [_train(6), _train(8), _train(10), {"kind": "done", "step": 10}]
    log = "no checkpoint...\nresumed from step 5 of 10\nstep 6/10"
    assert gc.check_resume(new, log, 5)["ok"]
    assert not gc.check_resume(new, "no checkpoint in x: starting from step 0", 5)["ok"]
    restarted = [_train(1), *new]
    res = gc.check_resume(restarted, log, 5)
    assert not res["ok"] and res["first_new_step"] == 1
    assert not gc.check_resume(new[:-1], log, 5)["ok"]                 # never finished
    assert not gc.check_resume(new, log.replace("5 of", "4 of"), 5)["ok"]


def test_kd_step_rows_parse_its_json_lines():
    text = "\n".join(["building bench data", "case  loss  tokens/s",
                      json.dumps({"case": "mse", "loss": "mse+lm", "tokens_per_s": 1e5, "mfu": 0.41,
                                  "overhead_ratio": 1.05, "speedup_vs_peer": 2.3, "step_ms_all": [1, 2]}),
                      json.dumps({"which": "ours", "peak_bytes": 1}), "{not json"])
    rows = gc.kd_step_rows(text)
    assert rows == [{"case": "mse", "loss": "mse+lm", "tokens_per_s": 1e5, "overhead_ratio": 1.05, "mfu": 0.41,
                     "speedup_vs_peer": 2.3}]


def test_summary_json_and_markdown_hold_every_figure_with_the_gpu_name(tmp_path):
    result = {
        "date": "2026-12-02", "budget_s": 470, "wall_s": 400.0, "ok": True, "steps_first": 20, "seq_len": 512,
        "micro_batch": 8, "zero_stage_effective": 0, "teacher": "random", "data": "wikitext-2",
        "environment": {"gpu": "NVIDIA H200", "gpu_count": 1, "torch": "2.13.0", "cuda": "12.8"},
        "checks": [{"name": "wd: every loss term finite", "ok": True, "detail": "40 train records"}],
        "steps": [{"name": "wd", "status": "ok", "seconds": 50.0, "timeout_s": 103.4, "command": "bash x"}],
        "runs": {"wd": {"metrics": gc.check_metrics([_train(40, **{"loss/wd/layer1": 0.1})]),
                        "resume": {"ok": True, "resumed_from": 20}}},
        "kd_step": [{"case": "wd", "loss": "wd+lm", "tokens_per_s": 123456.0, "step_ms": 66.4,
                     "overhead_ratio": 1.21, "mfu": 0.4123}],
        "eval": {"student_ppl": 1234.5, "teacher_ppl": 50000.0, "tokens_scored": 65535,
                 "layers": [{"student_layer": 1, "teacher_layer": 1, "sliced_wd": 0.01, "cka": 0.9, "mse": 0.1}]},
        "logit_memory": {"dtype": "bf16", "tokens": 16384, "vocab": 50257, "ratio_to_ce": {"ce": 1.0, "jsd": 1.12},
                         "peak_bytes": {"ce": 2 * 2**30, "jsd": 2.2 * 2**30}},
    }
    json_path, md_path = gc.write_summary(result, tmp_path / "out")
    assert json.loads(json_path.read_text()) == result
    md = md_path.read_text()
    assert md.startswith("# GPU check: NVIDIA H200 x1")
    for needle in ("**Overall: PASS** (1 of 1 checks pass", "| wd: every loss term finite | yes |",
                   "| wd | ok | 50.0 |", "41.2%", "123,456", "| jsd | 2253 | 1.120 |", "student 1234.5",
                   "teacher 50,000", "| wd | 40 |"):
        assert needle in md, needle
    assert "loss/wd/layer1" not in md  # per-layer parts are checked, not listed
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_load_helper_reports_each_folder(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, n_positions=32, vocab_size=128)).save_pretrained(
        tmp_path / "tiny")
    proc = subprocess.run([sys.executable, "bench/gpu_check.py", "--helper", "load", str(tmp_path / "tiny"),
                           str(tmp_path / "missing")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    recs = gc.load_results(proc.stdout)
    assert [r["ok"] for r in recs] == [True, False] and recs[0]["n_layer"] == 1 and "error" in recs[1]
