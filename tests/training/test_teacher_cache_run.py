"""Training from a teacher cache (--teacher-cache): the pre-flight check refuses what a cache cannot serve in
one line; a run reading the cache ends with the student of a run with the live teacher at the same top-k
(integration); two DeepSpeed CPU ranks read their own blocks' targets and resume (integration)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from Code.run_folder import read_metrics
from Code.training.preflight import run_check
from tests.support.cache_setup import SEQ_LEN, TOP_K, cache_world, peaked_teacher
from tests.support.tiny_setup import CODE, free_port, quiet_env, run_ok

FLAGS = ["--seq-len", str(SEQ_LEN), "--micro-batch-size", "4", "--log-interval", "1", "--eval-interval", "100",
         "--eval-iters", "1", "--save-interval", "100", "--warmup-steps", "1", "--lr", "3e-3", "--student-layers",
         "0,2", "--no-progress", "--no-tensorboard", "--num-workers", "0", "--loss", "kd", "--kd-topk", str(TOP_K)]
# Stated tolerance of a cached run against the live teacher at the same top-k (float16 log-probabilities):
# every step's kd within LOSS_RTOL, and the two final students apart by at most WEIGHT_RTOL of how far the
# live run moved its student (measured: 4e-3 and ~1e-4 after 8 steps).
LOSS_RTOL, WEIGHT_RTOL = 1e-3, 0.02


@pytest.fixture(scope="module")
def world(tmp_path_factory, corpus_dir):
    root = tmp_path_factory.mktemp("cache_run")
    return (*cache_world(root, corpus_dir), root)


def _argv(world, out: Path, *extra: str) -> list[str]:
    data, teacher, _, _ = world
    return ["--teacher", str(teacher), "--data-dir", str(data), "--out-dir", str(out), *FLAGS, *extra]


def _check_error(world, capsys, *extra: str) -> str:
    assert run_check(_argv(world, world[3] / "check", *extra)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_preflight_accepts_a_matching_cache_and_refuses_the_rest_in_one_line(world, capsys, tmp_path):
    _, _, cache, root = world
    assert run_check(_argv(world, root / "check", "--teacher-cache", str(cache))) == 0
    assert "check ok" in capsys.readouterr().out
    line = _check_error(world, capsys, "--teacher-cache", str(cache), "--loss", "mse+kd")
    assert "loss 'mse' needs the live teacher" in line and "drop --teacher-cache" in line
    line = _check_error(world, capsys, "--teacher-cache", str(cache), "--loss", "lm")
    assert "no term of loss 'lm' reads it" in line
    line = _check_error(world, capsys, "--teacher-cache", str(cache), "--seq-len", str(SEQ_LEN * 2))
    assert f"seq_len {SEQ_LEN * 2}" in line and "cache_teacher.py" in line
    line = _check_error(world, capsys, "--teacher-cache", str(cache), "--kd-topk", str(TOP_K * 2))
    assert f"k >= {TOP_K * 2}" in line
    line = _check_error(world, capsys, "--teacher-cache", str(cache), "--temperature", "2")
    assert "temperature 2.0" in line and "--temperature 1.0" in line
    other = peaked_teacher(tmp_path / "other_teacher", seed=1)
    line = _check_error(world, capsys, "--teacher-cache", str(cache), "--teacher", str(other))
    assert "computed by teacher" in line and "--overwrite" in line
    moved = tmp_path / "moved"
    shutil.copytree(cache, moved)
    header = next(moved.glob("*.json"))
    meta = json.loads(header.read_text())
    meta["data"]["split_sha256"] = "0" * 64
    header.write_text(json.dumps(meta))
    line = _check_error(world, capsys, "--teacher-cache", str(moved))
    assert "other token data" in line


def _student(out: Path) -> dict[str, torch.Tensor]:
    return {k: v.float() for k, v in load_file(out / "final" / "model.safetensors").items()}


def _kd(out: Path) -> list[float]:
    return [r["loss/kd"] for r in read_metrics(out) if r["kind"] == "train"]


@pytest.mark.integration
def test_a_cached_run_ends_with_the_student_of_the_live_teacher_at_the_same_top_k(world):
    data, teacher, cache, root = world
    base = [sys.executable, str(CODE / "train_related.py"), "--launcher", "torchrun", "--precision", "fp32",
            "--max-steps", "8"]
    run_ok([*base, *_argv(world, root / "live")], quiet_env())
    run_ok([*base, *_argv(world, root / "cached", "--teacher-cache", str(cache))], quiet_env())
    live, cached = _kd(root / "live"), _kd(root / "cached")
    assert len(live) == len(cached) == 8
    for a, b in zip(live, cached, strict=True):
        assert b == pytest.approx(a, rel=LOSS_RTOL)
    assert live[-1] < 0.8 * live[0]  # the student learned from the teacher
    s_live, s_cached = _student(root / "live"), _student(root / "cached")
    from transformers import GPT2LMHeadModel

    from Code.modeling.truncation import truncate_teacher
    start = {k: v.float() for k, v in truncate_teacher(GPT2LMHeadModel.from_pretrained(teacher), [0, 2])
             .state_dict().items()}
    apart = sum(((s_live[k] - s_cached[k]) ** 2).sum() for k in s_live) ** 0.5
    moved = sum(((s_live[k] - start[k]) ** 2).sum() for k in s_live if k in start) ** 0.5
    assert float(moved) > 0.1 and float(apart) <= WEIGHT_RTOL * float(moved), (float(apart), float(moved))
    info = json.loads((root / "cached" / "final" / "distill_info.json").read_text())
    assert info.get("teacher_cache", "").endswith(f"train.seq{SEQ_LEN}.topk{TOP_K}.json")


@pytest.mark.integration
def test_two_deepspeed_ranks_read_their_blocks_from_the_cache_and_resume(world):
    """Each rank's kd from the cache equals the live teacher's on the same blocks (so each rank reads the rows
    of the blocks its sampler gave it), through a stop at step 2 and a resume."""
    data, teacher, cache, root = world

    def launch(out: Path, steps: int, **env: str) -> str:
        port = free_port()
        # a constant learning rate after warm-up (min-lr-ratio 1): the run stopped at 2 of 2 steps took the
        # same steps as the first 2 of the live run's 4
        flags = [f for f in FLAGS if f not in ("--loss", "kd")] + ["--save-interval", "2", "--min-lr-ratio", "1"]
        proc = run_ok(["bash", str(CODE / "launch_common.sh"), *flags],  # the launcher body, no preset
                      quiet_env(TEACHER=str(teacher), DATA_DIR=str(data), OUT_DIR=str(out), NUM_GPUS="2",
                                LOSS="kd", MAX_STEPS=str(steps), MASTER_PORT=port, PRECISION="fp32", **env))
        return proc.stdout + proc.stderr

    launch(root / "ds_live", 4)
    launch(root / "ds_cached", 2, TEACHER_CACHE=str(cache))
    log = launch(root / "ds_cached", 4, TEACHER_CACHE=str(cache), RESUME="1")
    assert "resumed from step 2 of 4" in log
    live, cached = _kd(root / "ds_live"), _kd(root / "ds_cached")
    assert len(live) == len(cached) == 4
    for a, b in zip(live, cached, strict=True):
        assert b == pytest.approx(a, rel=LOSS_RTOL)
