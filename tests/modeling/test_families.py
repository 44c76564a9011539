"""The family adapters: every supported family resolves, truncates, builds students from a config, and is
refused with one line when it is unknown, needs hub code, or does not match the teacher."""

from __future__ import annotations

import json

import pytest
import torch

from Code.modeling import families
from Code.modeling.loading import ModelLoadError, load_config, load_student, load_teacher
from Code.modeling.truncation import build_student_from_config, student_config_from_spec, truncate_teacher
from tests.modeling.family_setup import KINDS, tiny_config, tiny_model

FAMILY = {"gpt2": "gpt2", "llama": "llama", "qwen2": "qwen2", "qwen3": "qwen2", "mistral": "mistral",
          "gpt_neox": "gpt_neox"}


@pytest.mark.parametrize("kind", KINDS)
def test_adapter_finds_blocks_norm_and_head(kind):
    model = tiny_model(kind)
    assert families.family_of(model).name == FAMILY[kind]
    assert len(families.blocks(model)) == families.num_layers(model.config) == 4
    assert families.hidden_size(model.config) == 32 and families.context_length(model.config) == 64
    x = torch.randint(1, 97, (2, 9))
    with torch.no_grad():
        out = model(x, output_hidden_states=True)
        last, states = families.decoder_forward(model, x, None, output_hidden_states=True)
        # the last hidden state is taken after the final norm in every family: norm(hidden before it) differs
        assert len(states) == 5 and torch.equal(states[-1], last)
        torch.testing.assert_close(families.head(model)(last), out.logits)
        seen = []
        hook = families.blocks(model)[-1].register_forward_hook(
            lambda _m, _i, o: seen.append(o[0] if isinstance(o, tuple) else o))
        model(x)
        hook.remove()
        torch.testing.assert_close(families.final_norm(model)(seen[0]), states[-1])
        assert not torch.allclose(seen[0], states[-1])
    assert isinstance(families.blocks(model)[0], torch.nn.Module)


@pytest.mark.parametrize("kind", KINDS)
def test_truncation_copies_chosen_blocks(kind):
    teacher = tiny_model(kind, seed=1)
    x = torch.randint(1, 97, (2, 9))
    with torch.no_grad():
        whole = truncate_teacher(teacher, [0, 1, 2, 3]).eval()
        torch.testing.assert_close(whole(x).logits, teacher(x).logits)  # all blocks: the same function
        student = truncate_teacher(teacher, [0, 2]).eval()
        t_hs = teacher(x, output_hidden_states=True).hidden_states
        s_hs = student(x, output_hidden_states=True).hidden_states
    assert families.num_layers(student.config) == 2 and families.family_of(student) is families.family_of(teacher)
    torch.testing.assert_close(s_hs[1], t_hs[1])  # block 0 is teacher block 0 on the same embeddings
    assert not torch.allclose(s_hs[2], t_hs[2])
    prefix = families.blocks_prefix(teacher)
    s_state, t_state = student.state_dict(), teacher.state_dict()
    for key in t_state:
        if key.startswith(f"{prefix}2."):
            assert torch.equal(s_state[key.replace(f"{prefix}2.", f"{prefix}1.")], t_state[key])
    tied = bool(teacher.config.tie_word_embeddings)
    head, emb = families.head(student).weight, student.get_input_embeddings().weight
    assert (head.data_ptr() == emb.data_ptr()) == tied
    assert emb.data_ptr() != teacher.get_input_embeddings().weight.data_ptr()  # copies, not shared
    per_layer = getattr(teacher.config, "layer_types", None)
    if per_layer:
        assert student.config.layer_types == [per_layer[0], per_layer[2]]


@pytest.mark.parametrize("kind", KINDS)
def test_student_config_over_the_teachers_family(kind):
    teacher = tiny_config(kind)
    spec = ("n_layer=2,n_embd=16,n_head=2" if kind == "gpt2"
            else "num_hidden_layers=2,hidden_size=16,num_attention_heads=2,intermediate_size=32")
    if kind in ("llama", "qwen2", "qwen3", "mistral"):
        spec += ",num_key_value_heads=1"
    cfg = student_config_from_spec(spec, teacher)
    assert type(cfg) is type(teacher)
    assert (families.num_layers(cfg), families.hidden_size(cfg), cfg.vocab_size) == (2, 16, 97)
    student = build_student_from_config(spec, teacher, seed=3)
    with torch.no_grad():
        logits = student(torch.randint(1, 97, (1, 5))).logits
    assert logits.shape == (1, 5, 97)
    with pytest.raises(ValueError, match="unknown"):
        student_config_from_spec("no_such_field=3", teacher)
    with pytest.raises(ValueError, match="vocab_size"):
        student_config_from_spec("vocab_size=50", teacher)


def test_gpt2_names_still_work_and_check_sizes():
    teacher = tiny_config("gpt2")
    with pytest.raises(ValueError, match="n_embd=30 is not divisible by n_head=4"):
        student_config_from_spec("n_embd=30", teacher)
    assert student_config_from_spec("n_positions=32", teacher).n_positions == 32


@pytest.mark.parametrize("kind", KINDS)
def test_saved_teacher_loads_through_auto_classes(kind, tmp_path):
    tiny_model(kind).save_pretrained(tmp_path / "t")
    teacher = load_teacher(tmp_path / "t")
    student = load_student(tmp_path / "t")
    assert type(teacher) is type(student) and not teacher.training
    assert families.family_of(load_config(tmp_path / "t", "teacher")).name == FAMILY[kind]


def test_unknown_family_is_one_line(tmp_path):
    from transformers import BertConfig

    BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=16).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError) as err:
        load_teacher(tmp_path)
    message = str(err.value)
    assert "'bert' has no adapter" in message and "gpt2" in message and "\n" not in message


def test_remote_code_needs_the_flag(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "my_arch", "auto_map": {"AutoConfig": "configuration_my.MyConfig",
                                              "AutoModelForCausalLM": "modeling_my.MyModel"}}))
    with pytest.raises(ModelLoadError) as err:
        load_config(tmp_path, "teacher")
    assert "--trust-remote-code" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ModelLoadError) as err:  # with the flag it goes on (here: no such code in the folder)
        load_config(tmp_path, "teacher", trust_remote_code=True)
    assert "--trust-remote-code" not in str(err.value)


def test_student_of_another_family_or_vocabulary_is_refused():
    llama, gpt2 = tiny_config("llama"), tiny_config("gpt2")
    with pytest.raises(families.StudentMismatchError, match="keeps the teacher's family"):
        families.check_pair(llama, gpt2)
    with pytest.raises(families.StudentMismatchError, match="vocab_size 50 vs 97"):
        families.check_pair(llama, tiny_config("llama", vocab=50))
    with pytest.raises(families.StudentMismatchError, match="token_id 3 vs 0"):
        families.check_pair(llama, tiny_config("llama", eos=3))
    families.check_pair(tiny_config("qwen2"), tiny_config("qwen3"))  # one family, one adapter


def test_set_dropout_reaches_config_and_modules():
    model = tiny_model("gpt_neox")
    families.set_dropout(model, 0.25)
    assert model.config.attention_dropout == model.config.hidden_dropout == 0.25
    assert all(m.p == 0.25 for m in model.modules() if isinstance(m, torch.nn.Dropout))
