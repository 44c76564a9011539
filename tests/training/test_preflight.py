"""Bad input fails fast, in one line, before any rank starts: the launcher's `--check` and `check_run`."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from Code import hub
from Code.arguments import ConfigError, parse_config
from Code.training.preflight import check_run, check_run_dir, run_check
from Code.training.setup import train_loader
from tests.support.tiny_setup import CODE, REPO, data_and_teacher, make_teacher, quiet_env

LIMIT_S = 20.0  # generous: ~4 s through the launcher here, 12 s seen with 3 jobs sharing the 2 cores


@pytest.fixture(scope="module")
def setup(tmp_path_factory, corpus_dir):
    return data_and_teacher(corpus_dir, tmp_path_factory.mktemp("preflight"))


def listing(folder: Path) -> dict[str, tuple[int, int]] | None:
    """Every path under `folder` with its size and mtime (None: the folder does not exist)."""
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def launch(setup, name: str, prepare=None, cwd: Path = REPO, **env: str) -> tuple[str, Path]:
    """`bash Code/wd_stu_base.sh` with `env`: asserts one `error:` line, exit 2, fast, nothing written."""
    data, teacher, root = setup
    out = root / f"out_{name}"
    if prepare is not None:
        prepare(out)
    before = listing(out)
    base = {"TEACHER": str(teacher), "DATA_DIR": str(data), "OUT_DIR": str(out), "SEQ_LEN": "32",
            "STUDENT_LAYERS": "0,2", "NUM_GPUS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(["bash", str(CODE / "wd_stu_base.sh")], env=quiet_env(**{**base, **env}), cwd=cwd,
                          capture_output=True, text=True, timeout=120)
    wall = time.perf_counter() - t0
    text = proc.stdout + proc.stderr
    print(f"{name}: exit {proc.returncode} in {wall:.1f} s: {proc.stderr.strip()}")
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2, text[-3000:]
    assert len(errors) == 1, text[-3000:]
    assert "Traceback" not in text and "sigkill_handler" not in text, text[-3000:]
    assert "deepspeed.launcher" not in text and "torchrun" not in text, text[-3000:]  # no rank was started
    assert wall < LIMIT_S, f"{name}: the check took {wall:.1f} s\n{text[-2000:]}"
    assert listing(out) == before, f"{name}: the check wrote into {out}"
    return errors[0], out


# ------------------------------------------------------------------------------- through the launcher
@pytest.mark.integration
def test_seq_len_longer_than_the_context(setup):
    line, _ = launch(setup, "seq_len", SEQ_LEN="4096", NUM_GPUS="")  # the command, GPUs detected
    assert "4096" in line and "128" in line and "SEQ_LEN" in line


@pytest.mark.integration
def test_the_launcher_runs_its_own_checkouts_code(setup, tmp_path):
    # A `Code` of another clone first on the path (an editable install pointing elsewhere, or a stale
    # PYTHONPATH), started from outside the repository: the launcher still imports its own checkout.
    other = tmp_path / "other_clone" / "Code"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("raise SystemExit('imported the other clone')\n")
    line, _ = launch(setup, "own_code", cwd=tmp_path, PYTHONPATH=str(other.parent), LOSS="wdd")
    assert "unknown loss 'wdd'" in line


@pytest.mark.integration
def test_missing_data_folder(setup):
    missing = setup[2] / "no_such_data"
    line, _ = launch(setup, "no_data", DATA_DIR=str(missing))
    assert str(missing) in line and "data_download.py" in line
    assert not missing.exists()


@pytest.mark.integration
def test_unknown_loss(setup):
    line, _ = launch(setup, "unknown_loss", LOSS="wdd")
    assert "unknown loss 'wdd'" in line and "wd" in line


@pytest.mark.integration
def test_weights_count_mismatch(setup):
    line, _ = launch(setup, "weights", LOSS="wd+kd", WEIGHTS="1,2,3")
    assert "--weights" in line and "3" in line and "2" in line


@pytest.mark.integration
def test_student_layers_out_of_range(setup):
    line, _ = launch(setup, "layers", STUDENT_LAYERS="0,9")
    assert "0,9" in line and "[9]" in line and "0..3" in line


@pytest.mark.integration
def test_bad_yaml_config(setup):
    bad = setup[2] / "bad.yaml"
    bad.write_text("loss: [wd, kd\nseq_len: 32\n")
    line, _ = launch(setup, "bad_yaml", CONFIG=str(bad))
    assert str(bad) in line and "YAML" in line


@pytest.mark.integration
def test_out_dir_holding_a_run_needs_resume_or_overwrite(setup):
    def started(out: Path) -> None:
        (out / "checkpoints" / "step10").mkdir(parents=True)
        (out / "checkpoints" / "latest").write_text("step10\n")
        (out / "metrics.jsonl").write_text('{"kind": "train", "step": 1}\n')
        (out / "args.json").write_text("{}\n")

    line, out = launch(setup, "started", prepare=started)
    assert str(out) in line and "--resume" in line and "--overwrite" in line
    assert (out / "metrics.jsonl").read_text() == '{"kind": "train", "step": 1}\n'


# ----------------------------------------------------------------------------------------- check_run
def _cfg(setup, *extra: str, out: str = "out_unit"):
    data, teacher, root = setup
    return parse_config(["--teacher", str(teacher), "--data-dir", str(data), "--out-dir", str(root / out),
                         "--seq-len", "32", "--student-layers", "0,2", "--loss", "wd+kd+lm", *extra])


def test_valid_config_returns_a_summary(setup):
    t0 = time.perf_counter()
    summary = check_run(_cfg(setup), world_size=2)
    print(f"check_run: {time.perf_counter() - t0:.3f} s: {summary}")
    assert summary.startswith("check ok:") and "\n" not in summary
    assert "teacher blocks 0,2" in summary and "wd+kd+lm" in summary and "x 2" in summary
    assert not (setup[2] / "out_unit").exists()


def test_vocabulary_mismatch(setup):
    small = make_teacher(setup[2] / "teacher_vocab1000", vocab_size=1000)
    with pytest.raises(ConfigError, match=r"2048 tokens .* teacher .* has 1000"):
        check_run(_cfg(setup, "--teacher", str(small)))


def test_student_config_vocabulary_and_shape(setup):
    with pytest.raises(ConfigError, match="not divisible by n_head=3"):
        check_run(_cfg(setup, "--student-config", "n_layer=2,n_head=3"))
    summary = check_run(_cfg(setup, "--student-config", "n_layer=2,n_embd=32"))
    assert "2x32" in summary


def test_too_little_data_for_the_ranks(setup):
    with pytest.raises(ConfigError, match=r"fewer than one batch per rank \(8 x 100000\)") as checked:
        check_run(_cfg(setup), world_size=100_000)
    with pytest.raises(ConfigError) as loaded:  # the ranks' own loader states the same rule, in the same words
        train_loader(setup[0], 32, 8, rank=0, world=100_000, seed=0, num_workers=0, pin=False)
    assert str(loaded.value) == str(checked.value)


def test_no_teacher_with_a_teacher_loss(setup):
    with pytest.raises(ConfigError, match="--no-teacher but loss 'wd' needs a teacher"):
        check_run(_cfg(setup, "--no-teacher", "--loss", "wd"))
    # LM alone with a random student needs no teacher at all.
    assert "teacher none" in check_run(_cfg(setup, "--no-teacher", "--loss", "lm", "--student-config", "n_layer=1"))


def test_layer_map_out_of_range(setup):
    with pytest.raises(ConfigError, match="teacher index 9 outside 0..4"):
        check_run(_cfg(setup, "--layer-map", "1:1,2:9"))


def test_prompt_task_needs_prompt_lengths(setup):
    with pytest.raises(ConfigError, match="prompt lengths"):
        check_run(_cfg(setup, "--task", "prompt"))


def test_minillm_needs_prompt_data(setup):
    with pytest.raises(ConfigError, match="--task prompt"):
        check_run(_cfg(setup), minillm=True)


def test_offline_hub_name_is_one_line(setup, monkeypatch):
    monkeypatch.setitem(hub._HUB_STATE, "reachable", False)
    with pytest.raises(ConfigError, match="unreachable .*save_pretrained folder"):
        check_run(_cfg(setup, "--teacher", "no-such-model-for-preflight"))


def test_run_check_prints_one_line(setup, capsys, monkeypatch):
    data, teacher, root = setup
    monkeypatch.setenv("CHECK_WORLD_SIZE", "3")
    args = ["--teacher", str(teacher), "--data-dir", str(data), "--out-dir", str(root / "out_run_check"),
            "--seq-len", "32", "--student-layers", "0,2"]
    assert run_check(args) == 0
    out, err = capsys.readouterr()
    assert out.startswith("check ok:") and "x 3" in out and err == ""
    for bad in (["--zero-stage", "7"], ["--seq-len", "4096"], ["--weights", "1,2"]):
        assert run_check([*args, *bad]) == 2
        out, err = capsys.readouterr()
        assert out == "" and len(err.splitlines()) == 1 and err.startswith("error: "), err


@pytest.mark.parametrize("value,ranks", [("auto", None), ("2*3", 6), ("auto*2", None), ("lots", 0)])
def test_check_world_size_from_the_launcher(setup, capsys, monkeypatch, value, ranks):
    import torch

    data, teacher, root = setup
    monkeypatch.setenv("CHECK_WORLD_SIZE", value)
    code = run_check(["--teacher", str(teacher), "--data-dir", str(data), "--out-dir", str(root / "out_world"),
                      "--seq-len", "32", "--student-layers", "0,2"])
    out, err = capsys.readouterr()
    if ranks == 0:
        assert code == 2 and err.startswith("error: CHECK_WORLD_SIZE='lots'") and len(err.splitlines()) == 1
        return
    expected = ranks or (torch.cuda.device_count() or 1) * (2 if value.endswith("*2") else 1)
    assert code == 0 and out.rstrip().endswith(f"x {expected}); out {root / 'out_world'} (new)"), out


def test_check_run_dir_keeps_todays_semantics(tmp_path):
    out = tmp_path / "run"
    check_run_dir(out, resume=False, overwrite=False)              # new
    out.mkdir()
    (out / "args.json").write_text("{}")
    check_run_dir(out, resume=False, overwrite=False)              # failed before its first log line: retry
    check_run_dir(out, resume=True, overwrite=False)               # --resume, no checkpoint: starts fresh
    for name in ("metrics.jsonl", "checkpoints", "best", "final"):
        target = out / name
        if name == "metrics.jsonl":
            target.write_text("")
        else:
            target.mkdir()
        with pytest.raises(ConfigError, match="already holds a run"):
            check_run_dir(out, resume=False, overwrite=False)
        check_run_dir(out, resume=True, overwrite=False)
        check_run_dir(out, resume=False, overwrite=True)
        if name == "metrics.jsonl":
            target.unlink()
        else:
            target.rmdir()
    assert sorted(p.name for p in out.iterdir()) == ["args.json"]


def test_student_config_validates_like_the_builder():
    from transformers import GPT2Config

    from Code.modeling.truncation import StudentConfigError, build_student_from_config, student_config_from_spec

    teacher = GPT2Config(vocab_size=128, n_positions=64, n_embd=32, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0)
    for bad in ("n_layer=2,n_head=3", "n_layer=0", "vocab_size=7", "nope=1", "n_layer"):
        with pytest.raises(StudentConfigError) as from_config:
            student_config_from_spec(bad, teacher)
        with pytest.raises(StudentConfigError) as from_builder:
            build_student_from_config(bad, teacher)
        assert str(from_config.value) == str(from_builder.value)
    config = student_config_from_spec("n_layer=1,n_embd=16", teacher)
    model = build_student_from_config("n_layer=1,n_embd=16", teacher, seed=0)
    for key in ("n_layer", "n_embd", "n_head", "n_positions", "vocab_size", "eos_token_id"):
        assert getattr(model.config, key) == getattr(config, key), key


def test_the_check_path_imports_no_heavy_libraries():
    code = ("import sys, Code.training.preflight; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'deepspeed', 'datasets', 'matplotlib'}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=quiet_env(), cwd=REPO,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr
