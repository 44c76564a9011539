"""End-to-end training: the README's launchers on two CPU ranks, resume after a kill, two "nodes"."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import GPT2LMHeadModel

from Code.training.metrics_log import read_metrics
from tests.support.tiny_setup import CODE, REPO, data_and_teacher, free_port, quiet_env, run_ok

pytestmark = pytest.mark.integration  # launchers, ranks, end to end: `pytest -m integration`

COMMON = ["--seq-len", "32", "--micro-batch-size", "4", "--log-interval", "1", "--eval-interval", "10",
          "--eval-iters", "2", "--save-interval", "10", "--warmup-steps", "2", "--lr", "1e-3",
          "--critic-hidden", "32", "--critic-samples", "128", "--student-layers", "0,2",
          "--no-progress", "--no-tensorboard"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, corpus_dir):
    return data_and_teacher(corpus_dir, tmp_path_factory.mktemp("train"))


def launcher_env(data: Path, teacher: Path, out: Path, **extra: str) -> dict[str, str]:
    return quiet_env(TEACHER=str(teacher), DATA_DIR=str(data), OUT_DIR=str(out), MASTER_PORT=free_port(),
                     **extra)


@pytest.mark.parametrize("launcher,loss", [("wd_stu_base.sh", "wd"), ("mse_stu_base.sh", "mse")])
def test_two_cpu_ranks_through_launcher(setup, launcher, loss):
    data, teacher, root = setup
    out = root / f"two_ranks_{loss}"
    env = launcher_env(data, teacher, out, NUM_GPUS="2", LOSS=loss, MAX_STEPS="30", ZERO_STAGE="2")
    run_ok(["bash", str(CODE / launcher), *COMMON], env)
    # DeepSpeed's CPU ranks leave a 69 MB shared-memory buffer each; the launcher removes this run's
    assert not list(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{env['MASTER_PORT']}_*"))

    for folder in ("best", "final"):
        model = GPT2LMHeadModel.from_pretrained(out / folder)
        assert model.config.n_layer == 2
        info = json.loads((out / folder / "distill_info.json").read_text())
        assert info["loss"] == loss
    records = [r for r in read_metrics(out) if r.get("kind") == "train"]
    assert [r["step"] for r in records] == list(range(1, 31))
    assert all(r[f"loss/{loss}"] == r[f"loss/{loss}"] for r in records)  # logged, finite
    if loss == "wd":
        assert any(k.startswith("loss/wd/layer") for k in records[-1])

    # Both ranks must hold the same critics after training (DeepSpeed keeps the student replicated).
    ckpt = out / "checkpoints" / (out / "checkpoints" / "latest").read_text().strip()
    r0, r1 = (torch.load(ckpt / f"rank{r}_state.pt", weights_only=False) for r in (0, 1))
    if loss == "wd":
        c0, c1 = r0["critics"], r1["critics"]
        for key, value in c0["critic"].items():
            assert torch.equal(value, c1["critic"][key]), key


def _train_cmd(data: Path, teacher: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(CODE / "train_related.py"), "--teacher", str(teacher), "--data-dir", str(data),
            "--out-dir", str(out), "--loss", "wd+kd+lm", "--weights", "0.3,0.4,0.3", *COMMON,
            "--save-interval", "5", *extra]


def test_killed_run_resumes_with_the_same_losses(setup):
    data, teacher, root = setup
    steps = "40"
    full = root / "uninterrupted"
    run_ok(_train_cmd(data, teacher, full, "--max-steps", steps), quiet_env())

    killed = root / "killed"
    proc = subprocess.Popen(_train_cmd(data, teacher, killed, "--max-steps", steps), env=quiet_env(),
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    latest = killed / "checkpoints" / "latest"
    deadline = time.time() + 300
    while not latest.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "final").exists(), "the run finished before it could be killed"
    resumed_from = int(latest.read_text().strip()[4:])

    run_ok(_train_cmd(data, teacher, killed, "--max-steps", steps, "--resume"), quiet_env())
    want = {r["step"]: r for r in read_metrics(full) if r.get("kind") == "train"}
    got = {r["step"]: r for r in read_metrics(killed) if r.get("kind") == "train"}
    compared = 0
    for step in range(resumed_from + 1, int(steps) + 1):
        for key in ("loss/lm", "loss/kd", "loss/wd", "loss"):
            assert got[step][key] == pytest.approx(want[step][key], rel=1e-5, abs=1e-6), (step, key)
        compared += 1
    assert compared >= 5
    GPT2LMHeadModel.from_pretrained(killed / "final")


def test_existing_run_is_not_clobbered(setup):
    data, teacher, root = setup
    out = root / "uninterrupted"  # written by the resume test above, or made here
    if not (out / "args.json").exists():
        run_ok(_train_cmd(data, teacher, out, "--max-steps", "2"), quiet_env())
    proc = subprocess.run(_train_cmd(data, teacher, out, "--max-steps", "2"), env=quiet_env(), cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "--resume" in lines[0] and "--overwrite" in lines[0]


def test_bad_layer_map_fails_before_work(setup):
    data, teacher, root = setup
    proc = subprocess.run(_train_cmd(data, teacher, root / "badmap", "--max-steps", "2", "--layer-map", "1:9"),
                          env=quiet_env(), cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "layer map" in proc.stderr.strip().splitlines()[-1]
    assert not (root / "badmap" / "checkpoints").exists()
    # fixed and run again in the same folder: no --overwrite needed for a run that never started
    run_ok(_train_cmd(data, teacher, root / "badmap", "--max-steps", "1"), quiet_env())
    assert (root / "badmap" / "final" / "config.json").is_file()


def test_two_nodes_on_one_machine(setup, tmp_path):
    """DeepSpeed's multi-node path: a hostfile of two 'nodes', each started with its own --node_rank."""
    data, teacher, root = setup
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("localhost slots=1\n127.0.0.1 slots=1\n")
    out = root / "two_nodes"
    env = launcher_env(data, teacher, out, HOSTFILE=str(hostfile), NO_SSH="1", LOSS="wd", MAX_STEPS="10",
                       MASTER_ADDR="127.0.0.1")
    procs = [subprocess.Popen(["bash", str(CODE / "wd_stu_base.sh"), *COMMON], cwd=REPO,
                              env={**env, "NODE_RANK": str(r)}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r in (0, 1)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for p, text in zip(procs, outputs, strict=True):
        assert p.returncode == 0, text[-4000:]
    assert "2 rank(s)" in outputs[0]
    GPT2LMHeadModel.from_pretrained(out / "final")


def test_every_launcher_variable_maps_to_a_known_flag(tmp_path):
    """The launcher body's env -> flag lines name real flags, and the values arrive as given."""
    import re

    from Code.arguments import build_parser

    body = run_ok([sys.executable, "-m", "Code.knobs", "launcher-map"], quiet_env()).stdout  # what the launcher evals
    pairs = re.findall(r'^(?:flag|switch) (--[a-z-]+) "\$\{([A-Z_]+):-', body, flags=re.M)
    known = {s for a in build_parser()._actions for s in a.option_strings}
    assert len(pairs) > 30 and [f for f, _ in pairs if f not in known] == []
    echo = tmp_path / "argv.py"
    echo.write_text("import json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    env = quiet_env(TRAIN_SCRIPT=str(echo), LAUNCHER="torchrun", NUM_GPUS="1", MASTER_PORT=free_port(),
                    CRITIC_LR="1e-3", TEMPERATURE="2", NO_TEACHER="1", LOSS="lm")
    out = run_ok(["bash", str(CODE / "launch_common.sh"), "--seed", "7"], env, timeout=120)
    argv = json.loads(out.stdout.strip().splitlines()[-1])
    assert argv[argv.index("--critic-lr") + 1] == "1e-3" and argv[argv.index("--temperature") + 1] == "2"
    assert "--no-teacher" in argv and argv[-2:] == ["--seed", "7"]
