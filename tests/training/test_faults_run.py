"""Faults met during a run: a NaN names the checkpoint that really exists; a full disk (a file-size limit)
is one line naming the step folder, with nothing half-written left; args.json records where the code came
from and a resume with an allowed change is recorded beside it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.recipe_helpers import InProcess
from tests.support.tiny_setup import CODE, REPO, data_and_teacher, quiet_env

FLAGS = ["--seq-len", "32", "--micro-batch-size", "2", "--log-interval", "1", "--eval-interval", "100",
         "--eval-iters", "1", "--warmup-steps", "1", "--student-layers", "0,2", "--no-progress", "--no-tensorboard",
         "--precision", "fp32", "--num-workers", "0", "--loss", "lm"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, corpus_dir):
    return data_and_teacher(corpus_dir, tmp_path_factory.mktemp("faults_run"))


def _flags(tiny, name: str, *extra: str) -> list[str]:
    data, teacher, root = tiny
    return ["--teacher", str(teacher), "--data-dir", str(data), "--out-dir", str(root / name), *FLAGS, *extra]


def test_nan_names_the_newest_whole_checkpoint_and_args_record_the_code(tiny):
    runner = InProcess()
    try:
        with pytest.raises(ValueError) as err:  # step 1 is saved, then the LR blows the weights up
            runner.run(CODE / "train_related.py", _flags(tiny, "nan", "--lr", "1e30", "--clip-grad", "0",
                                                         "--save-interval", "1", "--max-steps", "6",
                                                         "--launcher", "torchrun"))
    finally:
        runner.close()
    out = tiny[2] / "nan"
    message = str(err.value)
    assert message.count(" checkpoint ") == 1 and "lower the learning rate" in message  # one hint: the loop's
    whole = sorted(p.name for p in (out / "checkpoints").glob("step*") if (p / "manifest.json").is_file())
    assert whole and message.endswith(f"the newest whole checkpoint is {out / 'checkpoints' / whole[-1]} "
                                      "(--resume goes back to it)"), message
    run = json.loads((out / "args.json").read_text())["run"]
    assert run["code"]["path"] == str(REPO / "Code") and len(run["code"]["commit"]) == 40
    assert isinstance(run["code"]["dirty"], bool) and run["world_size"] == 1
    assert not (out / "run.lock").exists()  # released when the run ended, even by an error


@pytest.mark.integration
def test_a_file_size_limit_is_one_line_and_leaves_no_partial_checkpoint(tiny):
    out = tiny[2] / "full_disk"
    cmd = [sys.executable, str(CODE / "train_related.py"), *_flags(tiny, "full_disk", "--save-interval", "3",
                                                                   "--max-steps", "6")]
    # 600 KiB per file: args.json and metrics fit, the model states (~2.8 MB) do not
    proc = subprocess.run(["bash", "-c", 'ulimit -f 600; exec "$@"', "limit", *cmd], env=quiet_env(), cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.strip() and "WARNING" not in ln]
    assert len(errors) == 1 and errors[0].startswith("error: the file-size limit (ulimit -f: 614400 bytes) was "
                                                     f"reached writing {out / 'checkpoints' / 'step3'}"), errors
    assert "MiB needed" in errors[0] and "--resume" in errors[0]
    assert list((out / "checkpoints").glob("step*")) == []  # the partial step folder is gone
