"""LM views of converted data: meta/split loading, vocab check, training blocks, perplexity windows."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from Code.data_pipeline.indexed_dataset import IndexedDataset, IndexedDatasetBuilder
from Code.data_pipeline.lm_datasets import (
    DataNotFoundError,
    DataTooSmallError,
    EvalWindows,
    LMBlocks,
    VocabMismatchError,
    check_vocab,
    load_meta,
    open_split,
)


@pytest.fixture
def data_dir(tmp_path):
    rng = np.random.default_rng(0)
    docs = [np.append(rng.integers(0, 1000, size=int(n)), 1000) for n in rng.integers(5, 60, size=40)]
    b = IndexedDatasetBuilder(tmp_path / "train", np.uint16)
    for d in docs:
        b.add_document(d)
    info = b.finalize()
    meta = {"source": "test", "tokenizer": "toy", "vocab_size": 1001, "eos_id": 1000, "dtype": "uint16",
            "splits": {"train": info}}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    return tmp_path


def test_meta_and_split_loading(data_dir, tmp_path_factory):
    meta = load_meta(data_dir)
    ds = open_split(data_dir, "train")
    assert isinstance(ds, IndexedDataset) and ds.num_tokens == meta["splits"]["train"]["tokens"]
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(DataNotFoundError, match="data_download.py") as err:
        load_meta(empty)
    assert isinstance(err.value, FileNotFoundError) and "\n" not in str(err.value)
    with pytest.raises(DataNotFoundError, match="split 'valid'.*has: train"):
        open_split(data_dir, "valid")
    meta["splits"]["train"]["tokens"] += 1
    (data_dir / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataNotFoundError, match="--overwrite"):
        open_split(data_dir, "train")


def test_check_vocab():
    meta = {"vocab_size": 50257, "eos_id": 50256, "tokenizer": "gpt2"}
    check_vocab(meta, 50257)
    check_vocab(meta, 50304)  # padded embedding tables are fine
    with pytest.raises(VocabMismatchError, match="50257 tokens.*student has 4096"):
        check_vocab(meta, 4096, "student")
    with pytest.raises(VocabMismatchError):
        check_vocab({"vocab_size": 100, "eos_id": 120}, 110)


def test_lm_blocks_cover_the_stream(data_dir):
    ds = open_split(data_dir, "train")
    blocks = LMBlocks(ds, seq_len=16)
    assert len(blocks) == (ds.num_tokens - 1) // 16
    stream = np.asarray(ds.tokens, dtype=np.int64)
    for i in (0, 1, len(blocks) - 1):
        item = blocks[i]
        assert item.dtype == torch.long and item.shape == (17,)
        assert item.tolist() == stream[i * 16 : i * 16 + 17].tolist()
    assert blocks[-1].tolist() == blocks[len(blocks) - 1].tolist()
    with pytest.raises(IndexError):
        blocks[len(blocks)]
    with pytest.raises(DataTooSmallError, match="seq-len"):
        LMBlocks(ds, seq_len=ds.num_tokens)


@pytest.mark.parametrize("n,window,stride", [(100, 16, None), (100, 16, 16), (100, 16, 5), (101, 10, 1),
                                             (7, 16, None), (2, 2, None), (64, 8, 7), (65, 8, 3)])
def test_eval_windows_score_every_token_after_the_first_once(n, window, stride):
    tokens = torch.arange(1000, 1000 + n)
    windows = EvalWindows(tokens, window, stride)
    scored = []
    for k in range(len(windows)):
        item = windows[k]
        ids, labels = item["input_ids"], item["labels"]
        assert ids.dtype == labels.dtype == torch.long and ids.shape == labels.shape
        assert 2 <= len(ids) <= window and labels[0] == -100
        begin = int(ids[0]) - 1000
        assert ids.tolist() == list(range(1000 + begin, 1000 + begin + len(ids)))  # contiguous slice
        kept = labels != -100
        assert (labels[kept] == ids[kept]).all()
        scored += (ids[kept] - 1000).tolist()
        if stride is not None and stride < window and k > 0:  # sliding: the most context that fits
            assert len(ids) == min(window, n)
    assert scored == list(range(1, n)) and windows.num_scored == n - 1


def test_eval_windows_accept_an_indexed_dataset_and_refuse_bad_strides(data_dir):
    ds = open_split(data_dir, "train")
    w = EvalWindows(ds, 32)
    assert sum(int((w[k]["labels"] != -100).sum()) for k in range(len(w))) == ds.num_tokens - 1
    with pytest.raises(ValueError, match="stride"):
        EvalWindows(ds, 32, 33)
    with pytest.raises(DataTooSmallError):
        EvalWindows([5], 8)
