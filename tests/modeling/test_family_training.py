"""Each supported family end to end, in process: a tiny random teacher saved with save_pretrained is cut into
a 2-block student, trained a few steps with every loss family (logit KD, MSE, WD critics, sliced WD) plus LM,
saved, loaded back with from_pretrained and evaluated; the saved student generates through the
text-generation pipeline's defaults."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from Code.modeling import families
from Code.modeling.export import write_context_length
from Code.training.metrics_log import read_metrics
from tests.modeling.family_setup import KINDS, save_teacher, tiny_model
from tests.support.recipe_helpers import InProcess
from tests.support.tiny_setup import CODE, make_data

FLAGS = ["--seq-len", "32", "--micro-batch-size", "2", "--log-interval", "1", "--eval-interval", "2",
         "--eval-iters", "1", "--save-interval", "2", "--warmup-steps", "1", "--lr", "1e-3", "--max-steps", "2",
         "--student-layers", "0,2", "--critic-hidden", "16", "--no-progress", "--no-tensorboard",
         "--launcher", "torchrun", "--precision", "fp32", "--num-workers", "0"]
EVAL = ["--max-tokens", "600", "--hidden-tokens", "128", "--tsne-points", "0", "--gen-tokens", "4",
        "--projections", "16", "--no-progress", "--threads", "1", "--overwrite"]
LOSS = "kd+mse+wd+swd+lm"


@pytest.fixture(scope="module")
def data(tmp_path_factory, corpus_dir):
    return make_data(corpus_dir, tmp_path_factory.mktemp("families") / "data", vocab=512)


def _run(entry: str, flags: list[str]) -> None:
    """An entry point in this process; its exit code (returned or raised) must be 0."""
    runner = InProcess()
    try:
        runner.run(CODE / entry, flags)
    except SystemExit as exc:
        assert exc.code in (0, None), f"{entry} exited {exc.code}"
    finally:
        runner.close()


@pytest.mark.parametrize("kind", KINDS)
def test_family_distils_saves_loads_and_evaluates(kind, data, tmp_path):
    meta = json.loads((data / "meta.json").read_text())
    teacher = save_teacher(kind, tmp_path / "teacher", vocab=int(meta["vocab_size"]), eos=int(meta["eos_id"]))
    out = tmp_path / "run"
    _run("train_related.py", ["--teacher", str(teacher), "--data-dir", str(data), "--out-dir", str(out),
                              "--loss", LOSS, *FLAGS])
    train = [r for r in read_metrics(out) if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2]
    for term in ("kd", "mse", "wd", "swd", "lm"):
        assert all(torch.isfinite(torch.tensor(r[f"loss/{term}"])) for r in train), term
    assert any(k.startswith("loss/wd/layer") for k in train[-1])  # the critics ran per matched layer

    student = AutoModelForCausalLM.from_pretrained(out / "final")
    assert families.family_of(student).name == families.family_of(tiny_model(kind)).name
    assert families.num_layers(student.config) == 2
    gen = json.loads((out / "final" / "generation_config.json").read_text())
    assert gen["max_length"] == 64
    assert json.loads((out / "final" / "tokenizer_config.json").read_text())["model_max_length"] == 64

    _run("evaluate_.py", ["--ckpt", str(out), *EVAL])
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert 1 < metrics["student"]["ppl"] < float("inf") and 1 < metrics["teacher"]["ppl"] < float("inf")
    assert [(r["student_layer"], r["teacher_layer"]) for r in metrics["layers"]] == [(1, 1), (2, 4)]
    assert metrics["layers"][0]["mse"] < metrics["layers"][1]["mse"]  # block 0 is still close to the teacher's


def test_saved_student_generates_through_pipeline_defaults(data, tmp_path):
    """A 64-position GPT-2: the pipeline's default 256 new tokens overrun its position table unless the folder
    records the context length."""
    from transformers import AutoTokenizer, pipeline

    meta = json.loads((data / "meta.json").read_text())
    folder = tmp_path / "student"
    tiny_model("gpt2", vocab=int(meta["vocab_size"]), eos=int(meta["eos_id"])).save_pretrained(folder)
    AutoTokenizer.from_pretrained(data / "tokenizer").save_pretrained(folder)
    prompt = "The history of the city"
    with pytest.raises(IndexError):  # what a user hit before: nothing in the folder bounds the length
        pipeline("text-generation", model=str(folder), device="cpu")(prompt)
    assert write_context_length(folder) == 64
    assert json.loads((folder / "tokenizer_config.json").read_text())["model_max_length"] == 64
    text = pipeline("text-generation", model=str(folder), device="cpu")(prompt)[0]["generated_text"]
    assert text.startswith(prompt) and len(text) > len(prompt)


def test_narrower_random_student_of_a_rope_family_trains_through_projections(data, tmp_path):
    """`--student-config` over a Llama teacher's config: half the width, so the hidden-state terms and the
    critics compare through the student's projections into the teacher's width."""
    meta = json.loads((data / "meta.json").read_text())
    teacher = save_teacher("llama", tmp_path / "teacher", vocab=int(meta["vocab_size"]), eos=int(meta["eos_id"]))
    out = tmp_path / "run"
    spec = "num_hidden_layers=2,hidden_size=16,num_attention_heads=2,num_key_value_heads=1,intermediate_size=32"
    _run("train_related.py", ["--teacher", str(teacher), "--data-dir", str(data), "--out-dir", str(out),
                              "--loss", "mse+wd+kd", "--student-config", spec, "--layer-map", "uniform", *FLAGS])
    train = [r for r in read_metrics(out) if r["kind"] == "train"]
    assert all(torch.isfinite(torch.tensor(r[f"loss/{t}"])) for r in train for t in ("mse", "wd", "kd"))
    student = AutoModelForCausalLM.from_pretrained(out / "final")
    assert (student.config.model_type, families.hidden_size(student.config)) == ("llama", 16)
    assert json.loads((out / "final" / "distill_info.json").read_text())["layer_map"] == [[1, 2], [2, 4]]
