"""The run folder's checkpoint files (Code.run_folder): digests written last, the newest whole checkpoint
chosen on resume with every skipped one named, loads that run no code, metrics cut back on resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from Code import run_folder as rf


class Payload:
    """Any class outside torch's allow-list: unpickling it would call code."""

    def __reduce__(self):
        return (print, ("code ran while loading",))


def _checkpoint(root: Path, step: int, whole: bool = True) -> Path:
    folder = root / f"step{step}"
    folder.mkdir(parents=True)
    torch.save({"module": {"w": torch.full((64,), float(step))}}, folder / "mp_rank_00_model_states.pt")
    torch.save({"torch_rng": torch.get_rng_state(), "critics": {}}, folder / "rank0_state.pt")
    if whole:
        rf.finish_checkpoint(root, f"step{step}", keep=0)
    return folder


def _flip(path: Path, at: int = -20) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def test_the_newest_whole_checkpoint_is_chosen_and_each_skipped_one_is_named(tmp_path):
    root = tmp_path / "checkpoints"
    for step in (5, 10, 15):
        _checkpoint(root, step)
    assert (root / "latest").read_text() == "step15"
    assert rf.choose_checkpoint(root, say=lambda _: None) == "step15"

    _flip(root / "step15" / "mp_rank_00_model_states.pt")  # one flipped byte: same size, other digest
    (root / "step10" / "rank0_state.pt").write_bytes((root / "step10" / "rank0_state.pt").read_bytes()[:100])
    said: list[str] = []
    assert rf.choose_checkpoint(root, say=said.append) == "step5"
    assert len(said) == 2
    assert "step15" in said[0] and "mp_rank_00_model_states.pt" in said[0] and "sha256" in said[0]
    assert "step10" in said[1] and "rank0_state.pt" in said[1] and "bytes" in said[1]


def test_a_partial_save_and_a_dangling_or_garbled_latest_fall_back(tmp_path):
    root = tmp_path / "checkpoints"
    _checkpoint(root, 5)
    _checkpoint(root, 10)
    _checkpoint(root, 15, whole=False)  # killed mid-save: files, no manifest
    said: list[str] = []
    assert rf.choose_checkpoint(root, say=said.append) == "step10"
    assert said == [f"note: skipping checkpoint {root / 'step15'}: no readable manifest.json (a save cut short, "
                    "or written before digests)"]

    (root / "latest").write_text("step99")  # dangling
    said.clear()
    assert rf.choose_checkpoint(root, say=said.append) == "step10"
    assert "names no checkpoint folder" in said[0]
    (root / "latest").write_bytes(b"\x00\xffgarbage")
    assert rf.choose_checkpoint(root, say=lambda _: None) == "step10"


def test_no_whole_checkpoint_is_one_error_never_a_restart_at_step_0(tmp_path):
    root = tmp_path / "checkpoints"
    assert rf.choose_checkpoint(root, say=lambda _: None) is None  # nothing saved yet: a fresh start
    _checkpoint(root, 5)
    _flip(root / "step5" / "rank0_state.pt")
    with pytest.raises(rf.CheckpointError) as info:
        rf.choose_checkpoint(root, say=lambda _: None)
    message = str(info.value)
    assert "\n" not in message and "step5" in message and "--overwrite" in message


def test_keep_prunes_old_checkpoints_after_the_new_one_is_whole(tmp_path):
    root = tmp_path / "checkpoints"
    for step in (1, 2, 3):
        _checkpoint(root, step, whole=False)
        rf.finish_checkpoint(root, f"step{step}", keep=2)
    assert rf.checkpoint_tags(root) == ["step2", "step3"]


def test_loading_a_pickled_object_is_refused_in_one_line(tmp_path, capsys):
    path = tmp_path / "rank0_state.pt"
    torch.save({"torch_rng": torch.get_rng_state(), "evil": Payload()}, path)
    with pytest.raises(rf.CheckpointError) as info:
        rf.load_tensors(path)
    message = str(info.value)
    assert "\n" not in message and "holds print," in message and str(path) in message
    assert "code ran" not in capsys.readouterr().out
    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.ones(3), "step": 4, "names": ["a"]}, plain)
    assert rf.load_tensors(plain)["step"] == 4


def test_ddp_engine_state_loads_without_running_code(tmp_path):
    engine = _ddp_engine()
    engine.save_checkpoint(str(tmp_path), "step1", {"step": 1, "best_val": 2.5})
    assert engine.load_checkpoint(str(tmp_path), "step1")[1] == {"step": 1, "best_val": 2.5}
    state = torch.load(tmp_path / "step1" / "ddp_state.pt", weights_only=True)
    state["client_state"]["evil"] = Payload()
    with open(tmp_path / "step1" / "ddp_state.pt", "wb") as handle:
        torch.save(state, handle)
    with pytest.raises(rf.CheckpointError, match="refused"):
        engine.load_checkpoint(str(tmp_path), "step1")


def test_model_folders_carry_digests(tmp_path):
    folder = tmp_path / "final"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"0" * 1000)
    (folder / "config.json").write_text("{}")
    assert rf.check_model_folder(folder) is False  # no manifest: written before digests
    rf.write_manifest(folder)
    assert rf.check_model_folder(folder) is True
    _flip(folder / "model.safetensors", at=10)
    with pytest.raises(rf.CheckpointError, match="model.safetensors does not match"):
        rf.check_model_folder(folder)


def test_metrics_are_cut_back_to_the_resume_step(tmp_path):
    lines = [{"kind": "train", "step": s, "loss": 1.0 / s} for s in range(1, 9)]
    lines += [{"kind": "val", "step": 5, "val/loss": 0.5}, {"kind": "done", "step": 8, "train_time_s": 3.0}]
    text = "".join(rf.metrics_line(r) for r in lines) + '{"kind": "train", "st'  # a line cut by a kill
    (tmp_path / "metrics.jsonl").write_text(text)
    assert rf.cut_metrics(tmp_path, 5) == 4
    kept = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["step"]) for r in kept] == [("train", s) for s in range(1, 6)] + [("val", 5)]
    assert rf.metrics_line({"x": float("nan")}) == '{"x": null}\n'


def _ddp_engine():
    from Code.config import OptimConfig
    from Code.training.engines import DDPEngine, warmup_cosine

    fields = {f: None for f in OptimConfig.__dataclass_fields__}
    fields.update(grad_accum=1, clip_grad=1.0, precision="fp32", lr=1e-3, weight_decay=0.0)
    torch.manual_seed(0)
    return DDPEngine(torch.nn.Linear(4, 4), OptimConfig(**fields), warmup_cosine(1, 10, 0.1), torch.device("cpu"))


def test_resume_restores_the_newest_whole_state_and_the_run_records(tmp_path, capsys):
    from Code.training.checkpointing import Resumed, resume_training, save_training_state

    run, engine = tmp_path / "run", _ddp_engine()
    ckpts = run / "checkpoints"
    (run / "metrics.jsonl").parent.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(rf.metrics_line({"kind": "train", "step": s}) for s in (1, 2, 3)))
    assert resume_training(engine, ckpts, 10) == Resumed(0, float("inf"), 0.0)  # killed before its first save
    assert (run / "metrics.jsonl").read_text() == ""

    for step, seconds in ((2, 5.0), (4, 9.5)):
        with torch.no_grad():
            engine.module.weight.fill_(float(step))
        save_training_state(engine, ckpts, step, {"step": step, "best_val": 1.0 / step, "train_time_s": seconds},
                            {"torch_rng": torch.get_rng_state()}, keep=3)
    (run / "metrics.jsonl").write_text("".join(rf.metrics_line({"kind": "train", "step": s}) for s in range(1, 7)))
    _flip(ckpts / "step4" / "ddp_state.pt")
    fresh = _ddp_engine()
    assert resume_training(fresh, ckpts, 10) == Resumed(2, 0.5, 5.0)
    assert torch.all(fresh.module.weight == 2.0)
    assert [r["step"] for r in rf.read_metrics(run)] == [1, 2]
    out = capsys.readouterr().out
    assert "skipping checkpoint" in out and "step4" in out and "resumed from step 2 of 10" in out
