"""The one Trainer with a Step per method: a term registered here trains end to end; per-term options
reach the run; a NaN names the one step it happened at."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from Code.objectives import registry
from Code.objectives.registry import LossSpec, layer_parts
from Code.training.metrics_log import read_metrics
from tests.support.recipe_helpers import InProcess
from tests.support.tiny_setup import CODE, data_and_teacher

FLAGS = ["--seq-len", "32", "--micro-batch-size", "2", "--log-interval", "1", "--eval-interval", "3",
         "--eval-iters", "1", "--save-interval", "3", "--warmup-steps", "1", "--lr", "1e-3",
         "--student-layers", "0,2", "--no-progress", "--no-tensorboard", "--launcher", "torchrun",
         "--precision", "fp32", "--num-workers", "0"]


@dataclasses.dataclass(frozen=True)
class HuberOptions:
    huber_delta: float = 1.0

    def __post_init__(self) -> None:
        if self.huber_delta <= 0:
            raise registry.LossSpecError(f"huber_delta must be > 0, got {self.huber_delta}")


def _huber(inputs: registry.LossInputs, options: HuberOptions):
    mask = inputs.mask.reshape(-1)
    per = torch.stack([
        torch.nn.functional.huber_loss(s.reshape(-1, s.shape[-1])[mask].float(),
                                       t.reshape(-1, t.shape[-1])[mask].float(), delta=options.huber_delta)
        for s, t in zip(inputs.student_hidden, inputs.teacher_hidden, strict=True)])
    return per.mean(), {**layer_parts(per, inputs.layer_ids), "delta": torch.tensor(options.huber_delta)}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, corpus_dir):
    return data_and_teacher(corpus_dir, tmp_path_factory.mktemp("trainer"))


@pytest.fixture
def inproc():
    runner = InProcess()
    yield runner
    runner.close()


def _train(inproc: InProcess, tiny, name: str, *extra: str):
    data, teacher, root = tiny
    out = root / name
    inproc.run(CODE / "train_related.py", ["--teacher", str(teacher), "--data-dir", str(data), "--out-dir",
                                          str(out), *FLAGS, *extra])
    return out


def test_a_term_registered_in_the_test_trains_with_its_own_option(inproc, tiny, monkeypatch):
    spec = LossSpec("huber", _huber, needs_teacher=True, needs_logits=False, needs_hidden=True,
                    needs_critic=False, doc="Huber distance of matched hidden states", options=HuberOptions)
    monkeypatch.setitem(registry.REGISTRY, "huber", spec)
    out = _train(inproc, tiny, "huber", "--loss", "huber[huber_delta=0.25]+lm", "--weights", "1,1",
                 "--max-steps", "3")
    train = [r for r in read_metrics(out) if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3]
    assert all(r["loss/huber/delta"] == pytest.approx(0.25) for r in train)
    assert {"loss/huber/layer1", "loss/huber/layer2"} <= set(train[-1])
    assert train[-1]["loss"] == pytest.approx(train[-1]["loss/huber"] + train[-1]["loss/lm"], rel=1e-4)
    assert json.loads((out / "final" / "distill_info.json").read_text())["loss"] == "huber+lm"


def test_per_term_temperature_from_a_config_list(inproc, tiny, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("loss:\n  - {name: kd, weight: 0.5, temperature: 4}\n  - {name: lm, weight: 0.5}\n")
    out = _train(inproc, tiny, "kd_list", "--config", str(config), "--max-steps", "2")
    train = [r for r in read_metrics(out) if r["kind"] == "train"]
    assert train[-1]["loss"] == pytest.approx(0.5 * train[-1]["loss/kd"] + 0.5 * train[-1]["loss/lm"], rel=1e-4)
    assert json.loads((out / "args.json").read_text())["loss"][0]["temperature"] == 4


def test_nan_names_one_step(inproc, tiny):
    with pytest.raises(ValueError) as err:
        _train(inproc, tiny, "nan", "--loss", "lm", "--lr", "1e30", "--max-steps", "6", "--clip-grad", "0")
    message = str(err.value)
    assert message.startswith("step ") and message.count("step") == 1, message
