"""Resume end to end under both engines: a damaged, partial or missing newest checkpoint is named and
skipped for the newest whole one; none whole is one error line; a pickled object in a checkpoint is
refused; metrics.jsonl holds each step once and train_time_s sums every stretch of the run."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import pytest
import torch

from Code.run_folder import read_metrics
from tests.support.tiny_setup import CODE, REPO, data_and_teacher, free_port, quiet_env, run_ok

pytestmark = pytest.mark.integration  # several training processes: `pytest -m integration`

FLAGS = ["--seq-len", "32", "--micro-batch-size", "2", "--log-interval", "1", "--eval-interval", "5",
         "--eval-iters", "1", "--save-interval", "5", "--keep-checkpoints", "3", "--warmup-steps", "1",
         "--lr", "1e-3", "--student-layers", "0,2", "--no-progress", "--no-tensorboard", "--num-workers", "0",
         "--loss", "mse+lm"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, corpus_dir):
    return data_and_teacher(corpus_dir, tmp_path_factory.mktemp("ckpt"))


def _cmd(tiny, out: Path, *extra: str) -> list[str]:
    data, teacher, _ = tiny
    return [sys.executable, str(CODE / "train_related.py"), "--teacher", str(teacher), "--data-dir", str(data),
            "--out-dir", str(out), *FLAGS, *extra]


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _client_time(ckpt: Path) -> float:
    states = [p for p in ckpt.glob("*.pt") if p.name in ("mp_rank_00_model_states.pt", "ddp_state.pt")]
    state = torch.load(states[0], weights_only=False)  # test only: reading what the run itself wrote
    return float(state.get("client_state", state).get("train_time_s"))


def _fails(cmd: list[str]) -> str:
    import subprocess

    proc = subprocess.run(cmd, env=quiet_env(), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert "resumed from" not in proc.stdout and "starting from step 0" not in proc.stdout
    return errors[0]


@pytest.mark.parametrize("engine", ["deepspeed", "torchrun"])
def test_damaged_newest_checkpoint_is_skipped_and_records_stay_true(tiny, engine):
    out = tiny[2] / f"run_{engine}"
    extra = ["--launcher", engine, "--precision", "fp32"]
    run_ok(_cmd(tiny, out, "--max-steps", "10", *extra), quiet_env())
    ckpts = out / "checkpoints"
    assert (ckpts / "step10" / "manifest.json").is_file() and (out / "final" / "manifest.json").is_file()
    big = max((ckpts / "step10").glob("*.pt"), key=lambda p: p.stat().st_size)
    _flip(big)
    before = _client_time(ckpts / "step5")

    start = time.perf_counter()
    proc = run_ok(_cmd(tiny, out, "--max-steps", "15", "--resume", *extra), quiet_env())
    wall = time.perf_counter() - start
    assert f"skipping checkpoint {ckpts / 'step10'}: {big.name} does not match its sha256" in proc.stdout
    assert "resumed from step 5 of 15" in proc.stdout
    records = read_metrics(out)  # last record per (kind, step) ...
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(records)  # ... and no step logged twice in the file itself
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, 16))
    done = [r for r in records if r["kind"] == "done"]
    assert len(done) == 1 and before < done[0]["train_time_s"] < before + wall


def test_partial_newest_and_garbled_latest_resume_from_the_whole_one(tiny):
    out = tiny[2] / "partial"
    run_ok(_cmd(tiny, out, "--max-steps", "10", "--launcher", "torchrun", "--precision", "fp32"), quiet_env())
    ckpts = out / "checkpoints"
    (ckpts / "step10" / "manifest.json").unlink()  # as if killed between the files and the manifest
    (ckpts / "latest").write_text("step1\x00\x00")
    proc = run_ok(_cmd(tiny, out, "--max-steps", "12", "--resume", "--launcher", "torchrun", "--precision",
                       "fp32"), quiet_env())
    assert "names no checkpoint folder" in proc.stdout
    assert f"skipping checkpoint {ckpts / 'step10'}: no readable manifest.json" in proc.stdout
    assert "resumed from step 5 of 12" in proc.stdout


def test_no_whole_checkpoint_and_a_pickled_object_are_one_line_each(tiny):
    out = tiny[2] / "broken"
    extra = ["--launcher", "torchrun", "--precision", "fp32"]
    run_ok(_cmd(tiny, out, "--max-steps", "5", *extra), quiet_env())
    rank_file = out / "checkpoints" / "step5" / "rank0_state.pt"
    keep = tiny[2] / "rank0_state.pt"
    shutil.copy(rank_file, keep)

    _flip(rank_file)
    line = _fails(_cmd(tiny, out, "--max-steps", "8", "--resume", *extra))
    assert "no whole checkpoint" in line and "step5" in line and "--overwrite" in line

    # A run folder from someone else: whole by its own manifest, but a state that would run code when loaded.
    state = torch.load(keep, weights_only=True)
    state["note"] = Path("/tmp")  # any object outside torch's allow-list
    torch.save(state, rank_file)
    from Code.run_folder import write_manifest

    write_manifest(rank_file.parent)
    line = _fails(_cmd(tiny, out, "--max-steps", "8", "--resume", *extra))
    assert "rank0_state.pt holds pathlib" in line and "refused" in line


def test_evaluate_refuses_a_damaged_final_folder(tiny):
    out = tiny[2] / "damaged_final"
    run_ok(_cmd(tiny, out, "--max-steps", "2", "--launcher", "torchrun", "--precision", "fp32"), quiet_env())
    _flip(out / "final" / "model.safetensors")
    line = _fails([sys.executable, str(CODE / "evaluate_.py"), "--ckpt", str(out / "final"), "--out-dir",
                   str(tiny[2] / "damaged_eval")])
    assert "model.safetensors does not match its sha256" in line
    assert not (tiny[2] / "damaged_eval").exists()


def test_two_ranks_zero2_resume_loads_deepspeed_files_without_pickled_code(tiny):
    """ZeRO-2 optimizer partitions pickle DeepSpeed's loss scaler, stage enum and fragment addresses: the
    weights_only loader allows exactly those and nothing else."""
    data, teacher, root = tiny
    out = root / "zero2"
    env = quiet_env(TEACHER=str(teacher), DATA_DIR=str(data), OUT_DIR=str(out), NUM_GPUS="2", ZERO_STAGE="2",
                    LOSS="mse", MAX_STEPS="6", MASTER_PORT=free_port())
    flags = ["--seq-len", "32", "--micro-batch-size", "2", "--save-interval", "3", "--eval-interval", "3",
             "--eval-iters", "1", "--student-layers", "0,2", "--no-progress", "--no-tensorboard"]
    run_ok(["bash", str(CODE / "mse_stu_base.sh"), *flags], env)
    assert sorted(p.name for p in (out / "checkpoints" / "step6").glob("*optim_states.pt"))
    assert (out / "final" / "model.safetensors").is_file() and not (out / "final" / "pytorch_model.bin").exists()
    proc = run_ok(["bash", str(CODE / "mse_stu_base.sh"), *flags], {**env, "RESUME": "1", "MAX_STEPS": "8"})
    assert "resumed from step 6 of 8" in proc.stdout + proc.stderr
    assert [r["step"] for r in read_metrics(out) if r["kind"] == "train"][-1] == 8


def test_a_resumed_dropout_run_logs_the_losses_of_an_uninterrupted_one(tiny):
    """PRESET=seed_mse trains its student with dropout 0.1 on two ranks: each rank's checkpoint holds its own
    generators, and the validation at the stopping step draws nothing from them, so steps 3-4 after a stop at
    step 2 log what a run that never stopped logs."""
    data, teacher, root = tiny
    flags = ["--seq-len", "32", "--micro-batch-size", "2", "--log-interval", "1", "--eval-interval", "1000",
             "--eval-iters", "1", "--save-interval", "1000", "--warmup-steps", "1", "--lr", "1e-3",
             "--student-layers", "0,2", "--no-progress", "--no-tensorboard", "--num-workers", "0",
             "--precision", "fp32", "--min-lr-ratio", "1.0"]  # constant LR: the schedule ignores --max-steps

    def launch(out: Path, steps: str, **extra: str) -> None:
        env = quiet_env(TEACHER=str(teacher), DATA_DIR=str(data), OUT_DIR=str(out), NUM_GPUS="2",
                        MAX_STEPS=steps, MASTER_PORT=free_port(), **extra)
        run_ok(["bash", str(CODE / "mse_stu_base.sh"), *flags], env)  # PRESET=seed_mse: student dropout 0.1

    def losses(out: Path) -> list[dict[str, float]]:
        return [{k: v for k, v in r.items() if k.startswith("loss")} for r in read_metrics(out) if r["kind"] == "train"]

    launch(root / "dropout_full", "4")
    launch(root / "dropout_cut", "2")
    assert {p.name for p in (root / "dropout_cut" / "checkpoints" / "step2").glob("rank*_state.pt")} == {
        "rank0_state.pt", "rank1_state.pt"}
    launch(root / "dropout_cut", "4", RESUME="1")
    config = json.loads((root / "dropout_cut" / "final" / "config.json").read_text())
    assert config["resid_pdrop"] == 0.1  # the masks are really drawn: a run without dropout would match anyway
    full, resumed = losses(root / "dropout_full"), losses(root / "dropout_cut")
    assert len(full) == 4 and "loss/kd" in full[0]
    assert resumed == full
