"""The Wasserstein critic done right: WD averaged over layers, critic inputs in units of the teacher's
running std, a critic warm-up that never touches the student and is not repeated on resume, the same
dropout regime on both sides (a student equal to the teacher is at distance 0), the gradient-share log, and
the seed_wd preset that keeps the seed study's settings."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

from Code.arguments import parse_config
from Code.config import ModelConfig
from Code.critic import CriticConfigError, CriticTrainer
from Code.modeling.student import DistillStudent
from Code.objectives.parsing import parse_losses
from Code.objectives.registry import LossInputs, compute_losses
from Code.training.metrics_log import read_metrics
from Code.training.setup import build_models
from Code.training.steps import DistillStep
from tests.support.recipe_helpers import InProcess
from tests.support.tiny_setup import CODE, data_and_teacher

D = 6


pytestmark = pytest.mark.usefixtures("one_thread")


def _layers(g: torch.Generator, n: int = 2, shape=(2, 20, D), shift: float = 0.0) -> list[torch.Tensor]:
    return [torch.randn(*shape, generator=g) * (1 + i) + shift for i in range(n)]


def _adam_steps(critics: CriticTrainer) -> int:
    first = next(iter(critics.critic.parameters()))
    return int(critics.optimizer.state[first]["step"])


# ------------------------------------------------------------------------------------- WD over layers
def test_wd_is_the_mean_over_layers_one_layer_equals_three_identical_ones():
    g = torch.Generator().manual_seed(0)
    t, s = _layers(g, 1), _layers(g, 1, shift=1.0)
    mask = torch.ones(2, 20, dtype=torch.bool)
    one = CriticTrainer(1, D, hidden=16, n_critic=3, seed=0)
    one.update(t, s, mask)
    three = CriticTrainer(3, D, hidden=16, n_critic=3, seed=5)
    with torch.no_grad():  # three copies of the one-layer critic, its moments and estimates
        for p3, p1 in zip(three.critic.parameters(), one.critic.parameters(), strict=True):
            p3.copy_(p1.expand_as(p3))
    moments = {k: v.expand(3, *v.shape[1:]) if v.dim() else v for k, v in one.moments.state_dict().items()}
    three.moments.load_state_dict(moments)
    three.last_estimates = one.last_estimates.repeat(3)

    def wd(critics: CriticTrainer, n: int, spec: str = "wd") -> torch.Tensor:
        inputs = LossInputs(labels=torch.zeros(2, 20, dtype=torch.long), mask=mask, student_hidden=s * n,
                            teacher_hidden=t * n, critic=critics)
        return compute_losses(parse_losses(spec), inputs)[0]

    assert wd(three, 3).item() == pytest.approx(wd(one, 1).item(), rel=1e-6)
    assert wd(three, 3, "wd[wd_reduce=sum]").item() == pytest.approx(3 * wd(one, 1).item(), rel=1e-6)


# ------------------------------------------------------------------------------------- standardised inputs
def _trained(t, s, mask, standardize: bool) -> CriticTrainer:
    critics = CriticTrainer(2, D, hidden=16, lr=1e-3, n_critic=2, max_samples=24, seed=3, standardize=standardize)
    for _ in range(10):
        critics.update(t, s, mask)
    return critics


def test_standardised_inputs_make_the_estimate_invariant_to_scaling_one_dimension():
    g = torch.Generator().manual_seed(1)
    t, s = _layers(g), _layers(g, shift=0.5)
    mask = torch.ones(2, 20, dtype=torch.bool)
    mask[1, 15:] = False

    def scaled(feats):
        out = [f.clone() for f in feats]
        for f in out:
            f[..., 2] *= 100.0  # one outlier dimension, as GPT-2's residual stream has
        return out

    for standardize in (True, False):
        a, b = _trained(t, s, mask, standardize), _trained(scaled(t), scaled(s), mask, standardize)
        est_a, est_b = a.estimate(t, s, mask), b.estimate(scaled(t), scaled(s), mask)
        loss_a, loss_b = a.student_loss(s, mask), b.student_loss(scaled(s), mask)
        if standardize:
            torch.testing.assert_close(est_b, est_a, rtol=1e-3, atol=1e-4)
            torch.testing.assert_close(loss_b, loss_a, rtol=1e-3, atol=1e-4)
        else:  # raw inputs: the scaled dimension owns the critic
            assert (est_b - est_a).abs().max() > 0.1 * est_a.abs().max()


def test_moments_are_the_teachers_running_mean_and_variance_and_resume_exactly():
    g = torch.Generator().manual_seed(2)
    batches = [(_layers(g, shift=3.0), _layers(g)) for _ in range(3)]
    mask = torch.ones(2, 20, dtype=torch.bool)
    mask[0, 12:] = False
    critics = CriticTrainer(2, D, hidden=16, n_critic=1, seed=0)
    for t, s in batches:
        critics.update(t, s, mask)
    real = torch.stack([torch.cat([f[mask] for f in [t[layer] for t, _ in batches]]) for layer in range(2)]).double()
    m = critics.moments
    assert m.count.item() == real.shape[1]
    torch.testing.assert_close(m.mean[:, 0], real.mean(1))
    torch.testing.assert_close(m.m2[:, 0] / m.count, real.var(1, unbiased=False))
    # a checkpoint made with raw inputs does not silently load into standardised critics (and back)
    raw = CriticTrainer(2, D, hidden=16, n_critic=1, seed=0, standardize=False)
    with pytest.raises(CriticConfigError, match="--no-critic-standardize"):
        critics.load_state_dict(raw.state_dict())
    with pytest.raises(CriticConfigError, match="--critic-standardize"):
        raw.load_state_dict(critics.state_dict())


# ------------------------------------------------------------------------------------- warm-up
def _tiny_gpt2(n_layer: int = 2, seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=64, n_positions=16, n_embd=D * 2, n_layer=n_layer, n_head=2)
    return GPT2LMHeadModel(config)


def _step(teacher: GPT2LMHeadModel, student: GPT2LMHeadModel, layer_map, warmup: int, **critic) -> DistillStep:
    module = DistillStudent(student, [s for s, _ in layer_map], teacher.config.n_embd)
    factory = lambda total: CriticTrainer(len(layer_map), teacher.config.n_embd, hidden=16, n_critic=2,  # noqa: E731
                                          max_samples=16, seed=0, warmup_steps=warmup, **critic)
    step = DistillStep(teacher, module, layer_map, tuple(parse_losses("wd+lm")), seed=0, critic_factory=factory)
    step.bind(module, 10)  # the module's forward has the engine's call signature
    return step


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    ids = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(seed))
    return {"input_ids": ids[:, :-1], "labels": ids[:, 1:]}


def test_warmup_leaves_the_student_untouched_and_is_not_repeated_on_resume():
    teacher = _tiny_gpt2().eval().requires_grad_(False)
    student = _tiny_gpt2(seed=1).train()
    step = _step(teacher, student, [(1, 1), (2, 2)], warmup=7)
    feats = _features(step, _batch())
    before = {k: v.clone() for k, v in step.module.state_dict().items()}
    rng = torch.get_rng_state()
    step.train_critics(*feats)
    assert _adam_steps(step.critics) == 7 + 2 and not step.critics.warmup_pending
    assert torch.equal(torch.get_rng_state(), rng)  # the critics draw from their own generator
    for k, v in step.module.state_dict().items():
        assert torch.equal(v, before[k]), f"the warm-up moved the student's {k}"
    assert all(p.grad is None for p in step.module.parameters())

    saved = step.state_dict()
    resumed = _step(teacher, student, [(1, 1), (2, 2)], warmup=7)
    assert resumed.critics.warmup_pending
    resumed.load_state_dict(saved)
    assert not resumed.critics.warmup_pending
    feats = _features(step, _batch(1))
    step.train_critics(*feats)
    resumed.train_critics(*feats)
    assert _adam_steps(resumed.critics) == _adam_steps(step.critics) == 7 + 2 + 2  # no second warm-up
    torch.testing.assert_close(resumed.critics.last_estimates, step.critics.last_estimates, rtol=0, atol=0)


def _features(step: DistillStep, batch: dict[str, torch.Tensor]):
    from Code.training.steps import teacher_features

    mask = torch.ones_like(batch["input_ids"], dtype=torch.bool)
    _, t = teacher_features(step.teacher, batch["input_ids"], None, step.teacher_idx, False, True)
    _, s = step.module(batch["input_ids"], need_hidden=True)
    return t, s, mask


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step()`")
def test_cosine_critic_schedule_ends_at_its_floor_and_floor_zero_is_the_old_schedule():
    for floor in (0.1, 0.0):
        critics = CriticTrainer(1, D, hidden=8, lr=1e-3, schedule="cosine", total_steps=4, min_lr_ratio=floor)
        for _ in range(6):
            critics.step_scheduler()
        assert critics.current_lr() == pytest.approx(floor * 1e-3, abs=1e-15)


# ------------------------------------------------------------------------------------- dropout regime
@pytest.fixture(scope="module")
def tiny(tmp_path_factory, corpus_dir):
    return data_and_teacher(corpus_dir, tmp_path_factory.mktemp("wasserstein"))


def _models(tiny, dropout: float | None, **kw):
    data, teacher, _ = tiny
    fields = dict(teacher=str(teacher), no_teacher=False, student=None, student_config=None,
                  student_layers="0,1,2,3", layer_map=None, compile="off", student_dropout=dropout)
    fields.update(kw)
    return build_models(ModelConfig(**fields), data, True, 0, torch.device("cpu"), torch.float32)


def _dropouts(model: nn.Module) -> set[float]:
    return {m.p for m in model.modules() if isinstance(m, nn.Dropout)}


def test_a_student_equal_to_the_teacher_in_the_same_dropout_regime_is_at_distance_zero(tiny):
    estimates = {}
    for dropout in (0.0, 0.1):
        models = _models(tiny, dropout)
        assert _dropouts(models.student) == {dropout} and models.student.config.resid_pdrop == dropout
        step = _step(models.teacher, models.student.train(), models.layer_map, warmup=50, lr=1e-3)
        ids = torch.randint(0, 2048, (4, 33), generator=torch.Generator().manual_seed(0))
        torch.manual_seed(0)
        step.compute({"input_ids": ids[:, :-1], "labels": ids[:, 1:]}, step=1)
        estimates[dropout] = step.critics.last_estimates
    assert len(estimates[0.0]) == 4  # every block of the teacher, every matched layer
    assert estimates[0.0].abs().max() < 0.05
    assert estimates[0.1].max() > 10 * max(estimates[0.0].abs().max().item(), 1e-3)  # dropout noise reads as distance


def test_student_dropout_applies_to_every_way_of_building_a_student(tiny, tmp_path):
    cut = _models(tiny, 0.0, student_layers="0,2")
    assert _dropouts(cut.student) == {0.0}
    random = _models(tiny, 0.0, student_config="n_layer=2")
    assert _dropouts(random.student) == {0.0} and random.student.config.attn_pdrop == 0.0
    _models(tiny, 0.1, student_layers="0,2").student.save_pretrained(tmp_path / "s")
    loaded = _models(tiny, 0.0, student=str(tmp_path / "s"))
    assert _dropouts(loaded.student) == {0.0} and loaded.student.config.embd_pdrop == 0.0
    assert _dropouts(_models(tiny, None, student_layers="0,2").student) == {0.1}  # None: the config's own


def test_dropout_default_is_the_teachers_regime_and_pretraining_keeps_its_own(tmp_path):
    base = ["--out-dir", str(tmp_path / "r")]
    assert parse_config(base).model.student_dropout == 0.0
    assert parse_config([*base, "--no-teacher", "--loss", "lm"]).model.student_dropout is None
    assert parse_config([*base, "--student-dropout", "0.1"]).model.student_dropout == 0.1


# ------------------------------------------------------------------------------------- presets
def test_new_defaults_and_the_seed_wd_preset_keeps_the_seed_study():
    new = parse_config(["--loss", "wd+kd+lm"])
    c = new.critic
    assert (c.betas, c.min_lr_ratio, c.standardize, c.warmup_steps) == ((0.0, 0.9), 0.1, True, 100)
    assert new.losses[0].options.wd_reduce == "mean" and new.log.grad_share_interval == new.log.log_interval
    old = parse_config(["--preset", "seed_wd"])
    c = old.critic
    assert (c.optimizer, c.lr, c.schedule, c.min_lr_ratio, c.betas) == ("rmsprop", 1e-4, "cosine", 0.0, (0.5, 0.9))
    assert (c.standardize, c.warmup_steps, old.model.student_dropout) == (False, 0, 0.1)
    assert old.losses[0].name == "wd" and old.losses[0].options.wd_reduce == "sum"
    assert parse_config(["--preset", "seed_wd", "--loss", "wd"]).losses[0].options.wd_reduce == "sum"  # LOSS=wd


# ------------------------------------------------------------------------------------- gradient shares
FLAGS = ["--seq-len", "32", "--micro-batch-size", "2", "--log-interval", "1", "--eval-interval", "100",
         "--eval-iters", "1", "--save-interval", "100", "--warmup-steps", "1", "--lr", "1e-3",
         "--student-layers", "0,2", "--no-progress", "--no-tensorboard", "--precision", "fp32", "--num-workers", "0",
         "--critic-hidden", "16", "--critic-samples", "64", "--critic-warmup-steps", "5", "--max-steps", "3",
         "--loss", "wd+kd+lm", "--weights", "0.3,0.4,0.3", "--student-dropout", "0.1"]


@pytest.fixture
def inproc():
    runner = InProcess()
    yield runner
    runner.close()


def _train(inproc: InProcess, tiny, name: str, *extra: str) -> list[dict]:
    data, teacher, root = tiny
    out = root / name
    inproc.run(CODE / "train_related.py", ["--teacher", str(teacher), "--data-dir", str(data), "--out-dir",
                                          str(out), "--overwrite", *FLAGS, *extra])
    return [r for r in read_metrics(out) if r["kind"] == "train"]


@pytest.mark.parametrize("launcher", ["torchrun", "deepspeed"])
def test_gradient_shares_sum_to_one_and_change_nothing(inproc, tiny, launcher):
    """Every weighted term's share in metrics.jsonl, summing to 1; off (interval 0) no share is logged and
    every loss is bit for bit the same (the probe leaves RNG, `.grad` and DeepSpeed's hooks alone; dropout
    is on here so that a consumed RNG draw would show)."""
    on = _train(inproc, tiny, f"shares_{launcher}", "--launcher", launcher)
    assert [r["step"] for r in on] == [1, 2, 3]
    for r in on:
        shares = {k: v for k, v in r.items() if k.startswith("grad_share/")}
        assert set(shares) == {"grad_share/wd", "grad_share/kd", "grad_share/lm"}
        assert sum(shares.values()) == pytest.approx(1.0, abs=1e-5)
        assert all(r[f"grad_norm/{n}"] > 0 for n in ("wd", "kd", "lm", "total"))
        whole = sum(r[f"grad_norm/{n}"] ** 2 for n in ("wd", "kd", "lm"))
        assert all(r[f"grad_share/{n}"] == pytest.approx(r[f"grad_norm/{n}"] ** 2 / whole, rel=1e-4)
                   for n in ("wd", "kd", "lm"))
    off = _train(inproc, tiny, f"noshares_{launcher}", "--launcher", launcher, "--grad-share-interval", "0")
    assert not any(k.startswith("grad_") for r in off for k in r)
    for a, b in zip(on, off, strict=True):
        assert {k: v for k, v in a.items() if k.startswith("loss")} == {k: v for k, v in b.items()
                                                                         if k.startswith("loss")}
