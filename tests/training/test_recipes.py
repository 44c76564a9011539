"""Every recipe launcher under scripts/: the command it builds is valid and means the recipe; run for 20
steps on the tiny CPU setup (10, then resumed to 20), its best/ and final/ load with from_pretrained, and
evaluate_.py scores it (perplexity, or ROUGE-L for instruction data). Plus a real 2-rank torchrun run.

The recipes run in-process from the launcher's recorded command (see recipe_helpers.py: a new Python
process costs ~8 s of imports here); the torchrun test spawns real processes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from transformers import GPT2LMHeadModel

from Code.arguments import parse_args
from Code.training.metrics_log import read_metrics
from tests.support.dolly_fixture import make_dolly_data
from tests.support.recipe_helpers import InProcess, fake_bin, launch_command
from tests.support.tiny_setup import REPO, free_port, make_teacher, quiet_env, run_ok

pytestmark = pytest.mark.integration  # launchers, ranks, end to end: `pytest -m integration`

SCRIPTS = REPO / "scripts"
FAST = ["--seq-len", "32", "--micro-batch-size", "4", "--log-interval", "1", "--eval-interval", "10",
        "--eval-iters", "2", "--save-interval", "10", "--warmup-steps", "2", "--lr", "1e-3", "--num-workers", "0",
        "--no-progress", "--no-tensorboard", "--critic-hidden", "16", "--swd-projections", "16"]
GEN = ["--max-new-tokens", "6", "--max-prompt-len", "48"]
TINY_CONFIG = "n_layer=2,n_embd=32,n_head=2,n_positions=128"


class Setup:
    """Data, teachers and a cache of finished recipe runs shared by this module's tests."""

    def __init__(self, root: Path, corpus: Path) -> None:
        self.root = root
        self.data = make_dolly_data(corpus, root / "data")
        vocab = json.loads((self.data / "meta.json").read_text())["vocab_size"]
        self.teacher = make_teacher(root / "teacher", vocab_size=vocab, n_layer=4, n_embd=32)
        self.teacher12 = make_teacher(root / "teacher12", vocab_size=vocab, n_layer=12, n_embd=32)
        self.bin = fake_bin(root / "fakebin")
        self.inproc = InProcess()
        self.runs: dict[str, Path] = {}
        self.seqkd_data: Path | None = None

    def command(self, script: str, env: dict[str, str], extra: list[str]) -> tuple[str, Path, list[str]]:
        return launch_command(SCRIPTS / script, quiet_env(**env), extra, self.bin,
                              self.root / f"{script.replace('/', '_')}.argv")


RECIPES: dict[str, dict] = {
    # script: env beyond TEACHER/DATA_DIR/OUT_DIR, extra flags, what the resolved flags must say, eval task
    "distilgpt2/train.sh": {"env": {"TEACHER": "teacher12"}, "extra": [],
                            "want": {"loss": "kd+lm+cos", "weights": "5.0,2.0,1.0", "temperature": 2.0,
                                     "student_layers": "distilgpt2"}},
    "logit_kd/kd.sh": {"want": {"loss": "kd"}},
    "logit_kd/rkl.sh": {"want": {"loss": "rkl"}},
    "logit_kd/jsd.sh": {"want": {"loss": "jsd"}},
    "logit_kd/skl.sh": {"want": {"loss": "skl"}},
    "logit_kd/tvd.sh": {"want": {"loss": "tvd"}},
    "logit_kd/topk.sh": {"want": {"loss": "kd", "kd_topk": 64}},
    "hidden/swd.sh": {"want": {"loss": "swd"}},
    "hidden/cos.sh": {"want": {"loss": "cos"}},
    # CONFIG=run.yaml: the file sets what no flag sets; the script's LOSS and the SEED flag win over it
    "baseline_lm.sh": {"config": {"temperature": 3.0, "seed": 5, "loss": "kd"}, "env": {"SEED": "7"},
                       "want": {"loss": "lm", "temperature": 3.0, "seed": 7}},
    "finetune.sh": {"env": {"STUDENT": "teacher"}, "want": {"loss": "lm", "no_teacher": True}},
    "pretrain_teacher.sh": {"env": {"STUDENT_CONFIG": TINY_CONFIG},
                            "want": {"loss": "lm", "no_teacher": True, "student_config": TINY_CONFIG}},
    "dolly/sft_teacher.sh": {"env": {"STUDENT": "teacher"}, "want": {"task": "dolly", "loss": "lm",
                                                                     "no_teacher": True}},
    "dolly/sft_student.sh": {"extra": ["--select-by", "rougeL", "--val-prompts", "4", *GEN],
                             "want": {"task": "dolly", "loss": "lm", "select_by": "rougeL"}},
    "dolly/word_kd.sh": {"env": {"TEACHER": "sft_teacher"}, "want": {"task": "dolly", "loss": "kd+lm",
                                                                    "weights": "0.5,0.5"}},
    "dolly/seqkd_train.sh": {"env": {"TEACHER": "sft_teacher", "DATA_DIR": "seqkd"},
                             "want": {"task": "dolly", "loss": "lm"}},
    "dolly/minillm.sh": {"env": {"TEACHER": "sft_teacher", "STUDENT": "sft_student"},
                         "extra": [*GEN, "--micro-batch-size", "2"], "entry": "train_minillm.py",
                         "want": {"task": "dolly", "mix_alpha": 0.2, "pt_weight": 1.0}},
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, corpus_dir):
    s = Setup(tmp_path_factory.mktemp("recipes"), corpus_dir)
    yield s
    s.inproc.close()


def _resolve(setup: Setup, value: str) -> str:
    """Names in RECIPES' env -> paths: tiny teachers, or an earlier recipe's best/ (run first if needed)."""
    if value in ("teacher", "teacher12"):
        return str(getattr(setup, value))
    if value == "sft_teacher":
        return str(run_recipe(setup, "dolly/sft_teacher.sh") / "best")
    if value == "sft_student":
        return str(run_recipe(setup, "dolly/sft_student.sh") / "best")
    if value == "seqkd":
        return str(seqkd_data(setup))
    return value


def recipe_env(setup: Setup, script: str, out: Path, **extra: str) -> dict[str, str]:
    spec = RECIPES[script]
    env = {"TEACHER": str(setup.teacher), "DATA_DIR": str(setup.data), "OUT_DIR": str(out),
           "MASTER_PORT": free_port()}
    env.update({k: _resolve(setup, v) for k, v in spec.get("env", {}).items()})
    if "config" in spec:
        config = setup.root / f"{out.name}.yaml"
        config.write_text(yaml.safe_dump(spec["config"]))
        env["CONFIG"] = str(config)
    env.update(extra)
    return env


def run_recipe(setup: Setup, script: str) -> Path:
    """Train 10 steps through the launcher's command, resume to 20; cached per module."""
    if script in setup.runs:
        return setup.runs[script]
    spec = RECIPES[script]
    out = setup.root / "runs" / script.replace("/", "_").removesuffix(".sh")
    extra = FAST + ([] if script.startswith("distilgpt2") else ["--student-layers", "0,2"]) + spec.get("extra", [])
    for steps, resume in (("10", "0"), ("20", "1")):
        env = recipe_env(setup, script, out, MAX_STEPS=steps, RESUME=resume)
        program, entry, flags = setup.command(script, env, extra)
        assert program == "deepspeed" and entry.name == spec.get("entry", "train_related.py"), (program, entry)
        setup.inproc.run(entry, flags)
    setup.runs[script] = out
    return out


def seqkd_data(setup: Setup) -> Path:
    """Sequence-level KD, step 1, through scripts/dolly/seqkd_generate.sh with the SFT teacher."""
    if setup.seqkd_data is None:
        out = setup.root / "data" / "seqkd"
        env = {"TEACHER": str(run_recipe(setup, "dolly/sft_teacher.sh") / "best"), "DATA_DIR": str(setup.data),
               "SEQKD_DIR": str(out)}
        program, entry, flags = setup.command("dolly/seqkd_generate.sh", env, ["--max-new-tokens", "12",
                                                                              "--max-examples", "64"])
        assert program == "python3" and entry.name == "seqkd_generate.py"
        setup.inproc.run(entry, flags)
        setup.seqkd_data = out
    return setup.seqkd_data


@pytest.fixture(scope="module")
def fakes(tmp_path_factory) -> Path:
    return fake_bin(tmp_path_factory.mktemp("fakebin"))


@pytest.mark.parametrize("script", list(RECIPES))
def test_launcher_command_means_the_recipe(fakes, script, tmp_path):
    """Cheap for every launcher: the flags it passes resolve (arguments.py) to the recipe's settings."""
    spec = RECIPES[script]
    env = {"TEACHER": "t", "DATA_DIR": "d", "OUT_DIR": str(tmp_path / "o"), "MAX_STEPS": "3",
           **{k: v for k, v in spec.get("env", {}).items()}}
    if "config" in spec:
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(spec["config"]))
        env["CONFIG"] = str(tmp_path / "c.yaml")
    extra = spec.get("extra", []) + (["--seed", "3"] if script == "logit_kd/kd.sh" else [])
    program, entry, flags = launch_command(SCRIPTS / script, quiet_env(**env), extra, fakes, tmp_path / "argv")
    assert program == "deepspeed"
    assert entry == (REPO / "Code" / spec.get("entry", "train_related.py")).resolve()
    args = parse_args(flags)
    for key, value in spec["want"].items():
        assert getattr(args, key) == value, (key, getattr(args, key))
    assert args.max_steps == 3 and args.launcher == "deepspeed"
    if script == "logit_kd/kd.sh":
        assert args.seed == 3  # "$@" passes through


def test_torchrun_two_ranks_dolly_resume(setup):
    """LAUNCHER=torchrun: PyTorch DDP on 2 CPU ranks, 10 steps, best/ and final/, then resumed to 14."""
    out = setup.root / "torchrun_word_kd"
    for steps, resume in (("10", "0"), ("14", "1")):
        env = recipe_env(setup, "dolly/word_kd.sh", out, LAUNCHER="torchrun", NUM_GPUS="2", MAX_STEPS=steps,
                         RESUME=resume)
        proc = run_ok(["bash", str(SCRIPTS / "dolly/word_kd.sh"), *FAST, "--student-layers", "0,2"],
                      quiet_env(**env), timeout=300)
        assert "2 rank(s)" in proc.stdout
    assert "resumed from step 10" in proc.stdout
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if r["kind"] == "train"] == list(range(1, 15))
    for folder in ("best", "final"):
        model = GPT2LMHeadModel.from_pretrained(out / folder)
        assert model.config.n_layer == 2
    assert json.loads((out / "final" / "distill_info.json").read_text())["task"] == "prompt"


@pytest.mark.parametrize("script", list(RECIPES))
def test_recipe_trains_resumes_and_evaluates(setup, script):
    out = run_recipe(setup, script)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in lines if r["kind"] == "train"]
    # resumed, not restarted: each step logged once, 20 in all, finite
    assert [r["step"] for r in train] == list(range(1, 21))
    assert all(r["loss"] is not None for r in train)
    assert (out / "checkpoints" / "latest").read_text().strip() == "step20"
    for folder in ("best", "final"):
        GPT2LMHeadModel.from_pretrained(out / folder)
    info = json.loads((out / "final" / "distill_info.json").read_text())
    spec = RECIPES[script]
    saved = json.loads((out / "args.json").read_text())
    for key, value in spec["want"].items():
        assert saved[key] == value, key  # the run keeps its resolved configuration

    teacher = ["--teacher", str(setup.teacher)]  # runs without a teacher (--no-teacher) name none
    if spec["want"].get("task") == "dolly":
        setup.inproc.run(REPO / "Code" / "evaluate_.py", ["--task", "dolly", "--ckpt", str(out), *teacher,
                                                          "--max-examples", "4", "--max-new-tokens", "6",
                                                          "--no-progress"])
        metrics = json.loads((out / "eval" / "dolly_metrics.json").read_text())
        assert metrics["examples"] == 4 and 0 <= metrics["student"]["rougeL"] <= 100
        assert 0 <= metrics["teacher"]["rougeL"] <= 100
        assert info["task"] == "prompt"  # --task dolly is the alias of prompt
    else:
        if script.startswith("distilgpt2"):
            teacher = []  # from distill_info.json
        setup.inproc.run(REPO / "Code" / "evaluate_.py", ["--ckpt", str(out), *teacher, "--max-tokens", "1024",
                                                          "--window", "32", "--hidden-tokens", "128",
                                                          "--tsne-points", "0", "--gen-tokens", "0",
                                                          "--no-progress"])
        metrics = json.loads((out / "eval" / "metrics.json").read_text())
        assert metrics["student"]["ppl"] > 1
    if script == "dolly/sft_student.sh":
        vals = [r for r in lines if r["kind"] == "val"]
        assert all(0 <= r["val/rougeL"] <= 100 for r in vals)
        assert "val/rougeL" in json.loads((out / "best" / "distill_info.json").read_text())
    if script == "dolly/minillm.sh":
        assert {"loss/single", "loss/long", "loss/pt", "minillm/w_mean"} <= set(train[-1])
        assert all(r["minillm/w_mean"] <= 1 / (1 - 0.2) + 1e-6 for r in train)
    if script == "distilgpt2/train.sh":
        assert info["student_layers"] == [0, 2, 4, 7, 9, 11]
    if script == "dolly/seqkd_train.sh":
        assert json.loads((setup.seqkd_data / "meta.json").read_text())["seqkd"]["split"] == "train"


def test_minillm_resume_logs_the_same_losses(setup):
    """A MiniLLM run stopped at step 3 and resumed logs the same steps 4-6 as an uninterrupted run: the
    rollouts' sampling generator, the prompt and LM batches and dropout all pick up where they were."""
    student = str(run_recipe(setup, "dolly/sft_student.sh") / "best")
    entry = REPO / "Code" / "train_minillm.py"

    def flags(out: Path, steps: str, *extra: str) -> list[str]:
        return ["--task", "dolly", "--data-dir", str(setup.data), "--teacher", str(setup.teacher), "--student",
                student, "--out-dir", str(out), "--max-steps", steps, *FAST, *GEN, "--micro-batch-size", "2",
                "--eval-interval", "3", "--save-interval", "3", "--warmup-steps", "0", "--min-lr-ratio", "1.0",
                *extra]

    full, parts = setup.root / "minillm_full", setup.root / "minillm_parts"
    setup.inproc.run(entry, flags(full, "6"))
    setup.inproc.run(entry, flags(parts, "3"))
    setup.inproc.run(entry, flags(parts, "6", "--resume"))
    want = {r["step"]: r for r in read_metrics(full) if r["kind"] == "train"}
    got = {r["step"]: r for r in read_metrics(parts) if r["kind"] == "train"}
    for step in (4, 5, 6):
        for key in ("loss", "loss/single", "loss/long", "loss/pt", "minillm/response_len"):
            assert got[step][key] == pytest.approx(want[step][key], rel=1e-5, abs=1e-6), (step, key)
