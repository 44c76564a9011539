"""Clean stops and the launcher's one-liners, against the real launcher (bash Code/wd_stu_base.sh, CPU ranks):
SIGTERM to the launcher or to one rank saves, names the step and the resume command, exits 143 and leaves no
rank behind; the resume ends where an uninterrupted run ends; a second start, a changed setting and a busy port
are one error line each."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.support.tiny_setup import CODE, REPO, data_and_teacher, quiet_env, run_ok

pytestmark = pytest.mark.integration  # launchers and several processes: `pytest -m integration`

FLAGS = ["--seq-len", "32", "--micro-batch-size", "2", "--log-interval", "1", "--eval-interval", "1000",
         "--eval-iters", "1", "--save-interval", "1000", "--warmup-steps", "1", "--lr", "1e-3", "--student-layers",
         "0,2", "--no-progress", "--no-tensorboard", "--num-workers", "0", "--precision", "fp32",
         "--min-lr-ratio", "1.0"]  # a constant LR after warm-up: the schedule does not depend on --max-steps
LONG = "5000"  # a run still training when it is signalled (a tiny step takes ~0.1 s)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, corpus_dir):
    return data_and_teacher(corpus_dir, tmp_path_factory.mktemp("stops"))


def env_for(tiny, out: Path, **extra: str) -> dict[str, str]:
    data, teacher, _ = tiny
    return quiet_env(TEACHER=str(teacher), DATA_DIR=str(data), OUT_DIR=str(out), LOSS="mse+lm",
                     **{"MAX_STEPS": LONG, **extra})


def launch(tiny, out: Path, *extra: str, **env: str) -> subprocess.Popen:
    """The launcher in the background, its output to files (a pipe would fill up and block it)."""
    logs = out.parent / f"{out.name}.log"
    return subprocess.Popen(["bash", str(CODE / "wd_stu_base.sh"), *FLAGS, *extra], env=env_for(tiny, out, **env),
                            cwd=REPO, stdout=open(f"{logs}.out", "w"), stderr=open(f"{logs}.err", "w"),  # noqa: SIM115
                            start_new_session=True)


def finished(proc: subprocess.Popen, out: Path) -> tuple[str, str]:
    """Wait for the launcher alone; by the time it exits, no process of its run may be left."""
    proc.wait(timeout=300)
    assert processes_of(out) == []  # no rank outlives the launcher
    logs = out.parent / f"{out.name}.log"
    return Path(f"{logs}.out").read_text(), Path(f"{logs}.err").read_text()


def wait_for_step(out: Path, proc: subprocess.Popen, step: int) -> None:
    deadline = time.time() + 400
    metrics = out / "metrics.jsonl"
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= step:
            return
        time.sleep(0.1)
    raise AssertionError(f"no step {step} logged: {proc.poll()}")


def processes_of(out: Path) -> list[int]:
    """PIDs whose command line names the run folder (the launcher, DeepSpeed's launcher, the ranks)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(out).encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def stopped_line(stdout: str, out: Path) -> tuple[int, str]:
    lines = [ln for ln in stdout.splitlines() if ln.startswith("stopped by SIGTERM at step ")]
    assert len(lines) == 1, stdout[-3000:]
    step = int(lines[0].split("at step ")[1].split("/")[0])
    assert f"checkpoint {out / 'checkpoints' / f'step{step}'} saved; resume with: RESUME=1 bash " in lines[0]
    return step, lines[0]


def one_error(proc: subprocess.CompletedProcess | subprocess.Popen, stderr: str) -> str:
    assert proc.returncode == 2, stderr[-3000:]
    errors = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: "), stderr[-3000:]
    return errors[0]


@pytest.mark.parametrize("launcher", ["deepspeed", "torchrun"])
def test_sigterm_to_the_launcher_saves_stops_every_rank_and_the_resume_ends_as_an_uninterrupted_run(tiny, launcher):
    root = tiny[2]
    out = root / f"stopped_{launcher}"
    proc = launch(tiny, out, LAUNCHER=launcher)
    wait_for_step(out, proc, 3)
    second = subprocess.run(["bash", str(CODE / "wd_stu_base.sh"), *FLAGS, "--resume"], cwd=REPO, text=True,
                            env=env_for(tiny, out, LAUNCHER=launcher), capture_output=True, timeout=300)
    line = one_error(second, second.stderr)  # the folder is in use: one line naming the live run
    assert "is in use by run PID" in line and "kill -TERM" in line

    os.kill(proc.pid, signal.SIGTERM)  # the launcher's PID: what a scheduler signals
    stdout, stderr = finished(proc, out)
    assert proc.returncode == 143, stderr[-3000:]
    step, _ = stopped_line(stdout, out)
    assert 3 <= step < int(LONG) and (out / "checkpoints" / f"step{step}" / "manifest.json").is_file()
    assert "[ERROR]" not in stderr + stdout and "Traceback" not in stderr
    assert not (out / "run.lock").exists()

    end = str(step + 5)  # --max-steps may change on resume (recorded in resumes.jsonl)
    resumed = run_ok(["bash", str(CODE / "wd_stu_base.sh"), *FLAGS], env_for(tiny, out, RESUME="1", MAX_STEPS=end,
                                                                       LAUNCHER=launcher))
    assert f"resumed from step {step} of {end}" in resumed.stdout
    full = root / f"full_{launcher}"
    run_ok(["bash", str(CODE / "wd_stu_base.sh"), *FLAGS], env_for(tiny, full, MAX_STEPS=end, LAUNCHER=launcher))
    want, got = load_file(full / "final" / "model.safetensors"), load_file(out / "final" / "model.safetensors")
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


def test_sigterm_to_one_rank_stops_both_ranks_at_the_same_saved_step(tiny):
    out = tiny[2] / "two_ranks"
    proc = launch(tiny, out, NUM_GPUS="2")
    wait_for_step(out, proc, 3)
    ranks = [pid for pid in processes_of(out) if b"--local_rank=1" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(ranks) == 1
    os.kill(ranks[0], signal.SIGTERM)
    stdout, stderr = finished(proc, out)
    assert proc.returncode == 143, stderr[-3000:]
    step, _ = stopped_line(stdout, out)
    folder = out / "checkpoints" / f"step{step}"
    assert (folder / "manifest.json").is_file()
    assert {p.name for p in folder.glob("rank*_state.pt")} == {"rank0_state.pt", "rank1_state.pt"}
    assert "[ERROR]" not in stderr + stdout

    changed = subprocess.run(["bash", str(CODE / "wd_stu_base.sh"), *FLAGS], env=env_for(tiny, out, RESUME="1"),
                             cwd=REPO, capture_output=True, text=True, timeout=300)
    line = one_error(changed, changed.stderr)  # NUM_GPUS unset: 1 rank, the state holds 2
    assert "world size: 2 -> 1" in line and "NUM_GPUS=2" in line
    longer = subprocess.run(["bash", str(CODE / "wd_stu_base.sh"), *FLAGS, "--seq-len", "16"], cwd=REPO,
                            env=env_for(tiny, out, RESUME="1", NUM_GPUS="2"), capture_output=True, text=True,
                            timeout=300)
    assert "seq_len: 32 -> 16" in one_error(longer, longer.stderr)


def test_a_busy_master_port_is_one_line_before_any_rank_starts(tiny):
    out = tiny[2] / "busy_port"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(["bash", str(CODE / "wd_stu_base.sh"), *FLAGS], env=env_for(tiny, out,
                              MASTER_PORT=str(port)), cwd=REPO, capture_output=True, text=True, timeout=300)
    line = one_error(proc, proc.stderr)
    assert line.startswith(f"error: MASTER_PORT {port} is in use") and not (out / "metrics.jsonl").exists()
