"""Models: truncation copies the right blocks, layer maps parse/validate, projections, loading errors."""

import json
import time

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from Code.modeling.layer_map import LayerMapError, default_layer_map, parse_layer_map, validate_layer_map
from Code.modeling.loading import ModelLoadError, load_student, load_teacher
from Code.modeling.student import HiddenProjections
from Code.modeling.truncation import (
    StudentConfigError,
    build_student_from_config,
    parse_student_layers,
    truncate_teacher,
)

V = 300


def tiny_teacher(n_layer: int = 6, n_embd: int = 32, seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=V, n_positions=64, n_embd=n_embd, n_layer=n_layer, n_head=2,
        bos_token_id=V - 1, eos_token_id=V - 1,
    )
    model = GPT2LMHeadModel(cfg).eval()
    # random LayerNorm affine params, so a wrong ln_f/ln_1 copy cannot pass by both being (1, 0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".ln_" in name or "ln_f" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def ids(batch: int = 2, length: int = 16) -> torch.Tensor:
    return torch.randint(0, V, (batch, length), generator=torch.Generator().manual_seed(1))


# ------------------------------------------------------------------------------------------ truncation
@pytest.mark.parametrize("layers", [[0, 2, 4], [1, 3, 5], [3, 5], [0], [0, 1, 2, 3, 4, 5]])
def test_truncation_first_block_matches_teacher_exactly(layers):
    teacher = tiny_teacher()
    student = truncate_teacher(teacher, layers).eval()  # no dropout
    assert student.config.n_layer == len(layers)
    x = ids()
    with torch.no_grad():
        hs_s = student(x, output_hidden_states=True).hidden_states
        # teacher block `layers[0]` applied to the embedding output, alone
        emb = teacher.transformer.wte(x) + teacher.transformer.wpe(torch.arange(x.shape[1])[None])
        hs_t = teacher(x, output_hidden_states=True).hidden_states
    assert torch.equal(hs_s[0], hs_t[0]), "embedding outputs must be identical"
    assert torch.equal(hs_s[0], emb)
    # student hidden 1 = block layers[0] of the teacher applied to the embeddings: exactly the teacher's
    # hidden layers[0]+1 when layers[0] == 0, and otherwise checked by running that teacher block directly
    if layers[0] == 0 and len(layers) > 1:
        m = default_layer_map(layers, teacher.config.n_layer)
        assert torch.equal(hs_s[1], hs_t[m[0][1]])
    blk = teacher.transformer.h[layers[0]]
    with torch.no_grad():
        direct = student.transformer.h[0](emb)
        direct = direct[0] if isinstance(direct, tuple) else direct
        ref = blk(emb)
        ref = ref[0] if isinstance(ref, tuple) else ref
    assert torch.equal(direct, ref)


def test_truncation_copies_weights_not_shares():
    teacher = tiny_teacher()
    student = truncate_teacher(teacher, [1, 4])
    t_state, s_state = teacher.state_dict(), student.state_dict()
    for key in ("transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight"):
        assert torch.equal(t_state[key], s_state[key])
    for new, old in enumerate([1, 4]):
        for suffix in ("attn.c_attn.weight", "mlp.c_fc.weight", "ln_1.weight", "ln_2.bias"):
            assert torch.equal(
                s_state[f"transformer.h.{new}.{suffix}"], t_state[f"transformer.h.{old}.{suffix}"]
            )
    assert student.lm_head.weight.data_ptr() == student.transformer.wte.weight.data_ptr()  # tied
    assert student.transformer.wte.weight.data_ptr() != teacher.transformer.wte.weight.data_ptr()
    assert [blk.attn.layer_idx for blk in student.transformer.h] == [0, 1]  # KV cache positions
    with torch.no_grad():
        student.transformer.h[0].mlp.c_fc.weight.add_(1.0)
    assert not torch.equal(student.transformer.h[0].mlp.c_fc.weight, teacher.transformer.h[1].mlp.c_fc.weight)


def test_full_truncation_is_the_teacher_and_generates():
    teacher = tiny_teacher(n_layer=4)
    student = truncate_teacher(teacher, [0, 1, 2, 3]).eval()
    x = ids()
    with torch.no_grad():
        assert torch.allclose(student(x).logits, teacher(x).logits, atol=1e-6)
        out = student.generate(x[:1, :4], max_new_tokens=5, do_sample=False, pad_token_id=V - 1)
    assert out.shape == (1, 9)


def test_truncated_student_round_trips_through_save_pretrained(tmp_path):
    teacher = tiny_teacher()
    student = truncate_teacher(teacher, [0, 3, 5]).eval()
    student.save_pretrained(tmp_path / "s")
    again = load_student(tmp_path / "s").eval()
    x = ids()
    with torch.no_grad():
        assert torch.allclose(again(x).logits, student(x).logits, atol=1e-6)
    assert all(p.requires_grad for p in again.parameters())


# ------------------------------------------------------------------------------------- student layers
def test_parse_student_layers_forms():
    assert parse_student_layers("0,2,4,6,8,10", 12) == [0, 2, 4, 6, 8, 10]
    assert parse_student_layers("first:3", 12) == [0, 1, 2]
    assert parse_student_layers("last:2", 6) == [4, 5]
    assert parse_student_layers("distilgpt2", 12) == [0, 2, 4, 7, 9, 11]
    assert parse_student_layers(" 1 , 3 ", 4) == [1, 3]


@pytest.mark.parametrize(
    "spec,n",
    [("distilgpt2", 6), ("0,2,12", 12), ("2,1", 6), ("1,1", 6), ("a,b", 6), ("first:0", 6),
     ("last:7", 6), ("first:x", 6), ("", 6), ("-1,2", 6)],
)
def test_parse_student_layers_errors_are_one_line(spec, n):
    with pytest.raises(LayerMapError) as err:
        parse_student_layers(spec, n)
    assert "\n" not in str(err.value) and str(err.value)


# ------------------------------------------------------------------------------------------ layer maps
def test_default_layer_map():
    assert default_layer_map([0, 2, 4, 6, 8, 10], 12) == [(1, 1), (2, 3), (3, 5), (4, 7), (5, 9), (6, 12)]
    assert default_layer_map([0, 1], 4) == [(1, 1), (2, 4)]
    assert default_layer_map([3], 6) == [(1, 6)]


def test_parse_layer_map_forms():
    assert parse_layer_map("1:2,2:4,3:6", 3) == [(1, 2), (2, 4), (3, 6)]
    assert parse_layer_map("2,4,6,8,10,12", 6) == [(1, 2), (2, 4), (3, 6), (4, 8), (5, 10), (6, 12)]
    assert parse_layer_map("0:0", 3) == [(0, 0)]


@pytest.mark.parametrize("spec", ["", "1:2,3", "1:x", "2,4", "1:2:3", "a"])
def test_parse_layer_map_errors_are_one_line(spec):
    with pytest.raises(LayerMapError) as err:
        parse_layer_map(spec, 3)
    assert "\n" not in str(err.value)


def test_validate_layer_map_accepts_default():
    validate_layer_map(default_layer_map([0, 2, 4], 6), 3, 6, 32, 32)
    validate_layer_map([(1, 2)], 3, 6, 16, 32)  # widths differ: projection allowed


@pytest.mark.parametrize(
    "pairs,kw,needle",
    [
        ([(4, 2)], {}, "student index 4"),
        ([(1, 7)], {}, "teacher index 7"),
        ([(-1, 2)], {}, "student index -1"),
        ([(1, 2), (1, 3)], {}, "repeats student"),
        ([(1, 2), (2, 2)], {}, "repeats teacher"),
        ([], {}, "empty"),
        ([(0, 0), (1, 1), (2, 2), (3, 3), (3, 4)], {}, "pairs"),
        ([(1, 2)], {"student_dim": 16, "teacher_dim": 32, "allow_projection": False}, "width"),
        ([(1, 2)], {"student_dim": 0, "teacher_dim": 32}, "widths"),
    ],
)
def test_validate_layer_map_rejects(pairs, kw, needle):
    with pytest.raises(LayerMapError, match=needle) as err:
        validate_layer_map(pairs, 3, 6, **kw)
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------------------- projections
def test_projections_identity_when_widths_match():
    proj = HiddenProjections(32, 32, 3)
    hs = [torch.randn(2, 5, 32) for _ in range(3)]
    out = proj(hs)
    assert all(o is h for o, h in zip(out, hs, strict=True))
    assert sum(p.numel() for p in proj.parameters()) == 0


def test_projections_learned_linear_when_widths_differ():
    proj = HiddenProjections(16, 32, 2)
    hs = [torch.randn(2, 5, 16, requires_grad=True) for _ in range(2)]
    out = proj(hs)
    assert [o.shape for o in out] == [torch.Size([2, 5, 32])] * 2
    assert all(isinstance(m, torch.nn.Linear) for m in proj.proj)
    sum(o.sum() for o in out).backward()
    assert all(m.weight.grad is not None for m in proj.proj)
    with pytest.raises(LayerMapError):
        proj(hs[:1])


# --------------------------------------------------------------------------------------- config/student
def test_build_student_from_key_values_and_json(tmp_path):
    teacher = tiny_teacher()
    s = build_student_from_config("n_layer=2,n_embd=16,n_head=2", teacher.config, seed=3)
    assert (s.config.n_layer, s.config.n_embd, s.config.vocab_size) == (2, 16, V)
    assert s.config.n_positions == teacher.config.n_positions
    again = build_student_from_config("num_hidden_layers=2,hidden_size=16,n_head=2", teacher.config, seed=3)
    assert torch.equal(s.transformer.h[0].mlp.c_fc.weight, again.transformer.h[0].mlp.c_fc.weight)
    cfg = tmp_path / "s.json"
    cfg.write_text(json.dumps({"n_layer": 3, "n_embd": 32, "resid_pdrop": 0.0}))
    s2 = build_student_from_config(cfg, teacher.config)
    assert (s2.config.n_layer, s2.config.resid_pdrop, s2.config.vocab_size) == (3, 0.0, V)
    x = ids()
    assert s2(x).logits.shape == (2, 16, V)


@pytest.mark.parametrize(
    "spec", ["n_layer", "bogus_field=3", "n_embd=30,n_head=4", "vocab_size=50", "missing.json"]
)
def test_build_student_errors(spec):
    with pytest.raises(StudentConfigError) as err:
        build_student_from_config(spec, tiny_teacher(n_layer=2).config)
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------------------------- loading
def test_load_teacher_local_is_frozen(tmp_path):
    tiny_teacher(n_layer=2).save_pretrained(tmp_path / "t")
    t = load_teacher(tmp_path / "t")
    assert not t.training and not any(p.requires_grad for p in t.parameters())
    assert t.config._attn_implementation == "sdpa"


def test_load_teacher_hub_name_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.time()
    with pytest.raises(ModelLoadError) as err:
        load_teacher("gpt2-made-up-name-for-test")
    assert time.time() - start < 10
    msg = str(err.value)
    assert "\n" not in msg and "scripts/pretrain_teacher.sh" in msg


@pytest.mark.parametrize("sub", ["nope/a/b", "./missing"])
def test_load_missing_local_path(tmp_path, sub):
    with pytest.raises(ModelLoadError, match="not found"):
        load_student(str(tmp_path / sub))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="config.json"):
        load_teacher(tmp_path / "empty")
