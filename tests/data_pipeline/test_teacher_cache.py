"""The teacher cache on real small data: Code/cache_teacher.py writes, for every training block, the tiny
teacher's own top-k (checked against the live teacher), the header names its data and teacher; an
interrupted write resumes to the same files; damage and other inputs are refused in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import GPT2LMHeadModel

from Code.cache_teacher import main
from Code.data_pipeline import teacher_cache as tc
from Code.data_pipeline.lm_datasets import LMBlocks, load_meta, open_split
from Code.objectives.topk_kd import topk_targets
from tests.support.cache_setup import SEQ_LEN, TOP_K, cache_world


@pytest.fixture(scope="module")
def world(tmp_path_factory, corpus_dir):
    return cache_world(tmp_path_factory.mktemp("cache"), corpus_dir)


def _header(cache_dir):
    return cache_dir / f"{tc.cache_name('train', SEQ_LEN, TOP_K)}.json"


def test_rows_are_the_teacher_top_k_of_each_training_block(world):
    data, teacher_dir, cache_dir = world
    cache = tc.TeacherCache(tc.find_cache(cache_dir, "train", SEQ_LEN), verify=True)
    blocks = LMBlocks(open_split(data, "train"), SEQ_LEN)
    assert (cache.blocks, cache.seq_len, cache.k, cache.temperature) == (len(blocks), SEQ_LEN, TOP_K, 1.0)
    assert cache.header["data"]["split_sha256"] == load_meta(data)["splits"]["train"]["sha256"]
    assert tc.same_teacher(cache.header["teacher"], teacher_dir)
    teacher = GPT2LMHeadModel.from_pretrained(teacher_dir).eval()
    for i in (0, len(blocks) // 2, len(blocks) - 1):
        with torch.no_grad():
            live = topk_targets(teacher(blocks[i][None, :-1]).logits[0], TOP_K, 1.0)
        rows = cache.rows(i)
        assert torch.equal(rows["topk_ids"], live.ids)
        torch.testing.assert_close(rows["topk_vals"], live.logp, rtol=1e-3, atol=1e-3)  # float16 storage
        torch.testing.assert_close(rows["topk_rest"], live.log_rest)
        assert bool((rows["topk_vals"][:, :-1] >= rows["topk_vals"][:, 1:]).all())  # sorted: k serves k' <= k
        mass = rows["topk_vals"].exp().sum(-1) + rows["topk_rest"].exp()
        torch.testing.assert_close(mass, torch.ones(SEQ_LEN), rtol=0, atol=5e-3)


def test_cached_blocks_carry_their_rows_and_refuse_another_split_length(world):
    data, _, cache_dir = world
    cache = tc.TeacherCache(_header(cache_dir))
    blocks = LMBlocks(open_split(data, "train"), SEQ_LEN)
    item = tc.CachedBlocks(blocks, cache)[3]
    assert torch.equal(item["block"], blocks[3]) and torch.equal(item["topk_ids"], cache.rows(3)["topk_ids"])
    with pytest.raises(tc.TeacherCacheError, match="blocks"):
        tc.CachedBlocks(LMBlocks(open_split(data, "train"), SEQ_LEN * 2), cache)


def _identity(**over):
    return {"split": "train", "temperature": 1.0, "data": {"split_sha256": "x"}, "teacher": {"name": "t"}, **over}


def test_an_interrupted_write_resumes_to_the_same_files_and_other_inputs_are_refused(tmp_path):
    g = torch.Generator().manual_seed(0)
    vals, ids = torch.randn(10, 4, 3, generator=g), torch.randint(0, 100, (10, 4, 3), generator=g)
    rest = torch.randn(10, 4, generator=g)

    def write(out, stop_at=None):
        w = tc.CacheWriter(out, "train.seq4.topk3", 10, 4, 3, "float32", 100, _identity())
        for lo in range(w.done, 10, 3):
            if stop_at is not None and lo >= stop_at:
                return w  # "killed": the partial files and progress stay
            w.write(lo, vals[lo:lo + 3], ids[lo:lo + 3], rest[lo:lo + 3])
        return w.finish({})

    write(tmp_path / "whole")
    write(tmp_path / "cut", stop_at=6)
    assert not (tmp_path / "cut" / "train.seq4.topk3.json").exists()  # unfinished: no header
    with pytest.raises(tc.TeacherCacheError, match="partial cache of other inputs.*--overwrite"):
        tc.CacheWriter(tmp_path / "cut", "train.seq4.topk3", 10, 4, 3, "float32", 100, _identity(temperature=2.0))
    resumed = tc.CacheWriter(tmp_path / "cut", "train.seq4.topk3", 10, 4, 3, "float32", 100, _identity())
    assert resumed.done == 6
    for lo in range(6, 10, 3):
        resumed.write(lo, vals[lo:lo + 3], ids[lo:lo + 3], rest[lo:lo + 3])
    resumed.finish({})
    for a in tc.ARRAYS:
        name = f"train.seq4.topk3.{a}.bin"
        assert (tmp_path / "cut" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    assert not list((tmp_path / "cut").glob("*.partial")) and not list((tmp_path / "cut").glob("*progress*"))
    cache = tc.TeacherCache(tmp_path / "cut" / "train.seq4.topk3.json", verify=True)
    np.testing.assert_array_equal(cache.rows(7)["topk_ids"].numpy(), ids[7].numpy())


def test_damage_is_refused_by_size_always_and_by_sha256_when_verifying(world, tmp_path):
    _, _, cache_dir = world
    copy = tmp_path / "copy"
    copy.mkdir()
    for p in cache_dir.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    vals = copy / f"{tc.cache_name('train', SEQ_LEN, TOP_K)}.vals.bin"
    raw = bytearray(vals.read_bytes())
    raw[100] ^= 0xFF
    vals.write_bytes(bytes(raw))
    tc.TeacherCache(_header(copy))  # sizes fine
    with pytest.raises(tc.TeacherCacheError, match="sha256"):
        tc.TeacherCache(_header(copy), verify=True)
    vals.write_bytes(bytes(raw[:-2]))
    with pytest.raises(tc.TeacherCacheError, match="not .* bytes"):
        tc.TeacherCache(_header(copy))
    header = json.loads(_header(copy).read_text())
    header["format"] = "something-else"
    _header(copy).write_text(json.dumps(header))
    with pytest.raises(tc.TeacherCacheError, match="not a teacher-topk-v1 header"):
        tc.TeacherCache(_header(copy))


def test_cli_problems_are_one_error_line(world, capsys):
    data, teacher_dir, cache_dir = world
    base = ["--teacher", str(teacher_dir), "--data-dir", str(data), "--out-dir", str(cache_dir)]
    cases = [(base, "--seq-len is required"),
             ([*base, "--seq-len", str(SEQ_LEN), "--top-k", str(TOP_K)], "already exists: pass --overwrite"),
             ([*base, "--seq-len", "4096"], "longer than the teacher's context"),
             ([*base, "--seq-len", "32", "--top-k", "0"], "--top-k must be at least 1")]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
