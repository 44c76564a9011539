"""Faults caught before training: one run per folder (the lock), a resume with other settings, vocabulary and
data checked both ways (padding rule, largest id, meta.json's digest), the code of another checkout."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from Code.data_pipeline.indexed_dataset import IndexedDatasetBuilder
from Code.data_pipeline.lm_datasets import DataNotFoundError, VocabMismatchError, check_data, check_vocab
from Code.knobs import ConfigError
from Code.training.run_guard import LOCK, RESUMES, check_same_run, record_start, refuse_if_locked, take_lock
from tests.support.tiny_setup import REPO, quiet_env

CODE = {"commit": "abc", "dirty": False, "path": "/x/Code"}


def _lock(folder: Path, pid: int) -> None:
    (folder / LOCK).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": "earlier"}))


def test_a_live_run_holds_the_folder_and_a_dead_ones_lock_is_taken_over(tmp_path):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _lock(tmp_path, live.pid)
        with pytest.raises(ConfigError, match=rf"in use by run PID {live.pid} on .*kill -TERM {live.pid}"):
            refuse_if_locked(tmp_path)
        with pytest.raises(ConfigError, match="in use"):
            take_lock(tmp_path, say=lambda _: None)
    finally:
        live.kill()
        live.wait()
    notes: list[str] = []
    take_lock(tmp_path, say=notes.append)  # its process is gone: taken over, with a note
    assert notes == [f"note: taking over the lock of a run that is gone (PID {live.pid} on {socket.gethostname()})"]
    refuse_if_locked(tmp_path)  # our own lock passes


FLAGS = {"data_dir": "/d", "seq_len": 32, "loss": "mse+lm", "weights": None, "max_steps": 10, "save_interval": 5,
         "lr": 1e-3}


def test_resume_with_a_run_defining_setting_changed_is_one_line_naming_it(tmp_path):
    record_start(tmp_path, FLAGS, 2, resume=False, code=CODE)
    saved = json.loads((tmp_path / "args.json").read_text())
    assert saved["run"]["world_size"] == 2 and saved["run"]["code"] == CODE
    with pytest.raises(ConfigError, match=r"seq_len: 32 -> 64; .*another --out-dir"):
        check_same_run(tmp_path, {**FLAGS, "seq_len": 64}, 2, resume=True)
    with pytest.raises(ConfigError, match=r"loss: 'mse\+lm' -> 'wd'"):
        check_same_run(tmp_path, {**FLAGS, "loss": "wd"}, 2, resume=True)
    with pytest.raises(ConfigError, match=r"world size: 2 -> 1 .*NUM_GPUS=2"):
        check_same_run(tmp_path, FLAGS, 1, resume=True)
    check_same_run(tmp_path, {**FLAGS, "seq_len": 64}, 2, resume=False)  # not a resume: not compared here


def test_allowed_changes_are_recorded_and_args_json_keeps_the_start(tmp_path):
    record_start(tmp_path, FLAGS, 1, resume=False, code=CODE)
    longer = {**FLAGS, "max_steps": 20, "save_interval": 2}
    check_same_run(tmp_path, longer, 1, resume=True)
    record_start(tmp_path, longer, 1, resume=True, code=CODE)
    assert json.loads((tmp_path / "args.json").read_text())["max_steps"] == 10
    resumes = [json.loads(line) for line in (tmp_path / RESUMES).read_text().splitlines()]
    assert resumes[0]["changed"] == {"max_steps": [10, 20], "save_interval": [5, 2]}


def test_vocabulary_is_checked_both_ways_with_the_padding_rule():
    gpt2 = {"vocab_size": 50257, "eos_id": 50256, "tokenizer": "gpt2"}
    check_vocab(gpt2, 50257)
    check_vocab(gpt2, 50304)  # padded to a multiple of 128
    with pytest.raises(VocabMismatchError, match="has 4096 tokens .* the teacher has 50257"):
        check_vocab({"vocab_size": 4096, "eos_id": 0}, 50257, "teacher")  # a model of another tokenizer
    with pytest.raises(VocabMismatchError):
        check_vocab(gpt2, 50305 + 128)


def _data(folder: Path, top: int) -> Path:
    b = IndexedDatasetBuilder(folder / "train", np.uint16)
    b.add_document(np.arange(top + 1))
    info = b.finalize()
    meta = {"vocab_size": 256, "eos_id": 0, "dtype": "uint16", "splits": {"train": info}}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def test_data_ids_beyond_the_vocabulary_and_changed_files_are_refused(tmp_path):
    data = _data(tmp_path, top=300)  # ids up to 300 in a folder that says 256
    with pytest.raises(VocabMismatchError, match=r"train.bin holds token id 300, beyond the vocabulary of 256"):
        check_data(data, [256])
    check_data(data, [512])
    cached = json.loads((data / ".verified.json").read_text())["train"]
    assert cached["max_id"] == 300 and len(cached["sha256"]) == 64
    raw = bytearray((data / "train.bin").read_bytes())
    raw[4] ^= 0x01
    (data / "train.bin").write_bytes(bytes(raw))  # same size, new mtime: hashed again
    with pytest.raises(DataNotFoundError, match="does not match the sha256"):
        check_data(data, [512])


def test_an_entry_file_of_another_checkout_stops_with_one_line(tmp_path):
    other = tmp_path / "clone" / "Code"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("")
    (other / "entry.py").write_text("import Code\nprint('ran', Code.__file__)\n")
    proc = subprocess.run([sys.executable, str(other / "entry.py")], capture_output=True, text=True, cwd=tmp_path,
                          env=quiet_env(), timeout=60)
    assert proc.returncode == 2 and "ran" not in proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {other / 'entry.py'} is in the checkout {other.parent}")
    assert f"loads {REPO / 'Code'}" in lines[0] and "pip install -e ." in lines[0]
    ours = subprocess.run([sys.executable, str(REPO / "Code" / "origin.py")], capture_output=True, text=True,
                          env=quiet_env(), timeout=60)
    assert ours.returncode == 0, ours.stderr  # this checkout's own entry runs
