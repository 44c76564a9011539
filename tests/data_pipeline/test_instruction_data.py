"""Prompt/response data (--task prompt, alias dolly): prompt tokens are excluded from logit losses, hidden
losses still see every position; records read back as prompts and references; ROUGE-L; generation with left
padding."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from Code import data_download
from Code.data_pipeline.instruction_data import (
    InstructionDataError,
    is_prompt_task,
    load_examples,
    prompt_lengths,
    task_blocks,
)
from Code.data_pipeline.lm_datasets import open_split
from Code.data_pipeline.tokenization import load_tokenizer
from Code.modeling.generation import generate_responses, rouge_l
from Code.objectives.registry import REGISTRY, LossInputs
from Code.training.setup import as_batch
from tests.support.dolly_fixture import make_dolly_files


@pytest.fixture(scope="module")
def dolly_dir(tmp_path_factory, corpus_dir):
    root = tmp_path_factory.mktemp("instr")
    files = make_dolly_files(corpus_dir, root / "jsonl", n_train=60, n_valid=8, n_test=8)
    out = root / "dolly"
    code = data_download.main(["--dataset", "dolly", "--train", str(files["train"]), "--valid", str(files["valid"]),
                               "--test", str(files["test"]), "--out-dir", str(out), "--train-tokenizer", "400"])
    assert code == 0
    return out


def _prompt_flags(data_dir, split) -> np.ndarray:
    """Independently: a flag per token of the stream, True inside each document's first plen tokens."""
    ds, plens = open_split(data_dir, split), prompt_lengths(data_dir, split)
    flags = []
    for i in range(len(ds)):
        n = len(ds[i])
        flags.extend([True] * int(plens[i]) + [False] * (n - int(plens[i])))
    return np.array(flags)


def test_prompt_targets_are_masked_and_responses_scored(dolly_dir):
    seq = 24
    blocks = task_blocks(dolly_dir, "train", seq, "dolly")
    flags = _prompt_flags(dolly_dir, "train")
    stream = np.asarray(open_split(dolly_dir, "train").tokens, dtype=np.int64)
    batch = as_batch(next(iter(DataLoader(blocks, batch_size=len(blocks)))), torch.device("cpu"))
    for i in range(len(blocks)):
        start = i * seq
        assert batch["input_ids"][i].tolist() == stream[start : start + seq].tolist()
        targets = np.arange(start + 1, start + seq + 1)
        want = np.where(flags[targets], -100, stream[targets])
        assert batch["labels"][i].tolist() == want.tolist()
    scored = (batch["labels"] != -100).float().mean().item()
    assert 0.1 < scored < 0.9  # both kinds of token are present

    # The scored text of one document is exactly its response and the closing EOS.
    tok = load_tokenizer(str(dolly_dir / "tokenizer"))
    ex = load_examples(dolly_dir, "train", limit=1)[0]
    doc_scored = [t for t in batch["labels"].reshape(-1).tolist() if t != -100][: len(ex.response) + 1]
    assert doc_scored == ex.response + [tok.eos_token_id]
    assert tok.decode(ex.response) == ex.reference
    assert tok.decode(ex.prompt).endswith("### Response:\n")


def test_logit_losses_ignore_prompt_positions_hidden_losses_do_not(dolly_dir):
    blocks = task_blocks(dolly_dir, "train", 24, "prompt")
    batch = as_batch(next(iter(DataLoader(blocks, batch_size=4))), torch.device("cpu"))
    labels = batch["labels"]
    prompt = labels == -100
    assert prompt.any() and (~prompt).any()
    torch.manual_seed(0)
    V, D = 400, 8
    s, t = torch.randn(*labels.shape, V), torch.randn(*labels.shape, V)
    hs, ht = torch.randn(*labels.shape, D), torch.randn(*labels.shape, D)
    mask = torch.ones_like(labels, dtype=torch.bool)  # every position is real (packed blocks, no padding)

    def values(s_logits, s_hidden):
        inputs = LossInputs(labels=labels, mask=mask, student_logits=s_logits, teacher_logits=t,
                            student_hidden=[s_hidden], teacher_hidden=[ht])
        specs = {name: REGISTRY[name] for name in ("lm", "kd", "rkl", "tvd", "mse", "cos")}
        return {name: spec.fn(inputs, spec.make_options())[0].item() for name, spec in specs.items()}

    base = values(s, hs)
    ce = torch.nn.functional.cross_entropy(s[~prompt], labels[~prompt])
    assert base["lm"] == pytest.approx(ce.item(), rel=1e-5)  # the mean over response targets only
    changed = values(torch.where(prompt[..., None], s + 3 * torch.randn_like(s), s),
                     torch.where(prompt[..., None], hs + 1.0, hs))
    for name in ("lm", "kd", "rkl", "tvd"):
        assert changed[name] == pytest.approx(base[name], rel=1e-6), name
    for name in ("mse", "cos"):
        assert changed[name] != pytest.approx(base[name], rel=1e-3), name


def test_data_without_prompt_lengths_is_refused(dolly_dir, tmp_path):
    copy = tmp_path / "plain"
    shutil.copytree(dolly_dir, copy)
    meta = json.loads((copy / "meta.json").read_text())
    meta["splits"]["train"].pop("prompt_lengths")
    (copy / "meta.json").write_text(json.dumps(meta))
    for task in ("prompt", "dolly"):
        with pytest.raises(InstructionDataError, match="--dataset dolly"):
            task_blocks(copy, "train", 24, task)
    task_blocks(copy, "train", 24, "lm")  # plain LM on the same documents still works


def test_prompt_is_the_task_name_and_dolly_its_alias(dolly_dir):
    assert is_prompt_task("prompt") and is_prompt_task("dolly")
    assert not is_prompt_task("lm") and not is_prompt_task(None)
    a, b = task_blocks(dolly_dir, "valid", 16, "prompt"), task_blocks(dolly_dir, "valid", 16, "dolly")
    assert len(a) == len(b) and all(torch.equal(a[i]["is_prompt"], b[i]["is_prompt"]) for i in range(len(a)))


def test_rouge_l():
    assert rouge_l(["the cat sat on the mat"], ["the cat sat on the mat"]) == [100.0]
    assert rouge_l(["dogs bark"], ["the cat sat"]) == [0.0]
    # LCS "the cat the mat" (4) over 6-word strings: P = R = 4/6
    assert rouge_l(["the cat lay on the mat"], ["the cat sat in the mat"])[0] == pytest.approx(100 * 4 / 6)


def test_generation_left_padding_matches_one_by_one():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=32, n_embd=16, n_layer=2, n_head=2,
                                       bos_token_id=0, eos_token_id=0))
    prompts = [[3, 4, 5, 6, 7, 8], [9, 10], [11, 12, 13]]
    batched = generate_responses(model, prompts, eos_id=0, max_new_tokens=6, batch_size=3)
    single = [generate_responses(model, [p], eos_id=0, max_new_tokens=6)[0] for p in prompts]
    assert batched == single
    assert model.training  # left in the mode it was in
    # a prompt longer than the context allows keeps its last tokens
    assert len(generate_responses(model, [list(range(1, 40))], eos_id=0, max_new_tokens=4)[0]) <= 4
