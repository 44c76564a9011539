"""The MMIDIDX format: round trip, byte-exact agreement with Megatron's documented layout, refusals."""

from __future__ import annotations

import hashlib
import pickle
import struct

import numpy as np
import pytest

from Code.data_pipeline.indexed_dataset import (
    IndexedDataset,
    IndexedDatasetBuilder,
    IndexedDatasetError,
    IndexedDatasetNotFound,
    best_dtype,
)


def megatron_pair(prefix, docs, code=8, fmt="H", doc_idx=None):
    """Write .bin/.idx by hand, field by field, as Megatron-LM's MMapIndexedDataset.Index.writer does."""
    itemsize = struct.calcsize("<" + fmt)
    sizes = [len(d) for d in docs]
    pointers = [sum(sizes[:i]) * itemsize for i in range(len(docs))]
    doc_idx = list(range(len(docs) + 1)) if doc_idx is None else doc_idx
    idx = b"MMIDIDX\x00\x00"
    idx += struct.pack("<Q", 1)  # version
    idx += struct.pack("<B", code)  # dtype code
    idx += struct.pack("<Q", len(sizes))  # number of sequences
    idx += struct.pack("<Q", len(doc_idx))  # number of doc_idx entries
    idx += struct.pack(f"<{len(sizes)}i", *sizes)  # int32 sizes
    idx += struct.pack(f"<{len(pointers)}q", *pointers)  # int64 byte offsets
    idx += struct.pack(f"<{len(doc_idx)}q", *doc_idx)  # int64 document index
    data = b"".join(struct.pack(f"<{len(d)}{fmt}", *d) for d in docs)
    (prefix.parent / (prefix.name + ".idx")).write_bytes(idx)
    (prefix.parent / (prefix.name + ".bin")).write_bytes(data)
    return idx, data


DOCS = [[15496, 995, 50256], [464, 2068, 7586, 21831, 50256], [50256], [1, 2, 3, 4, 5, 6, 7]]


def build(prefix, docs, dtype=np.uint16):
    builder = IndexedDatasetBuilder(prefix, dtype)
    for d in docs:
        builder.add_document(d)
    return builder.finalize()


def test_round_trip_uint16_and_int32(tmp_path):
    rng = np.random.default_rng(0)
    for dtype, high in ((np.uint16, 50257), (np.int32, 200_000)):
        docs = [rng.integers(0, high, size=int(n)) for n in rng.integers(0, 300, size=50)]
        info = build(tmp_path / f"d{dtype.__name__}", docs, dtype)
        ds = IndexedDataset(tmp_path / f"d{dtype.__name__}")
        assert len(ds) == 50 and ds.dtype == np.dtype(dtype)
        assert ds.num_tokens == info["tokens"] == sum(len(d) for d in docs)
        assert info["documents"] == 50
        assert ds.sizes.dtype == np.int32 and list(ds.sizes) == [len(d) for d in docs]
        for i, d in enumerate(docs):
            assert np.array_equal(ds[i], d)
        assert np.array_equal(ds[-1], docs[-1])
        assert np.array_equal(ds.tokens, np.concatenate(docs))
        big = int(np.argmax(ds.sizes))
        assert np.array_equal(ds.get(big, offset=3, length=10), docs[big][3:13])
        assert np.array_equal(ds.get(big, offset=5), docs[big][5:])
        bin_bytes = (tmp_path / f"d{dtype.__name__}.bin").read_bytes()
        assert info["sha256"] == hashlib.sha256(bin_bytes).hexdigest()
        with pytest.raises(IndexError):
            ds[50]
    assert sorted(p.name for p in tmp_path.iterdir() if "tmp" in p.name) == []  # temp files renamed away


def test_hand_written_megatron_pair_reads_back(tmp_path):
    megatron_pair(tmp_path / "hand", DOCS)
    ds = IndexedDataset(tmp_path / "hand")
    assert ds.dtype == np.uint16 and len(ds) == len(DOCS)
    assert [ds[i].tolist() for i in range(len(ds))] == DOCS
    assert ds.tokens.tolist() == sum(DOCS, [])
    megatron_pair(tmp_path / "hand32", [[70000, 1], [2]], code=4, fmt="i")
    assert IndexedDataset(tmp_path / "hand32")[0].tolist() == [70000, 1]


def test_builder_writes_the_megatron_bytes_exactly(tmp_path):
    idx, data = megatron_pair(tmp_path / "hand", DOCS)
    build(tmp_path / "ours", DOCS)
    assert (tmp_path / "ours.idx").read_bytes() == idx
    assert (tmp_path / "ours.bin").read_bytes() == data


def test_several_sequences_per_document_read_back(tmp_path):
    # Megatron files may hold sentences as sequences and group them with doc_idx
    megatron_pair(tmp_path / "sent", DOCS, doc_idx=[0, 2, 4])
    ds = IndexedDataset(tmp_path / "sent")
    assert len(ds) == 4 and ds.doc_idx.tolist() == [0, 2, 4]


def test_truncated_files_are_refused(tmp_path):
    build(tmp_path / "d", DOCS)
    bin_path, idx_path = tmp_path / "d.bin", tmp_path / "d.idx"
    whole_bin, whole_idx = bin_path.read_bytes(), idx_path.read_bytes()
    bin_path.write_bytes(whole_bin[:-2])
    with pytest.raises(IndexedDatasetError, match="truncated"):
        IndexedDataset(tmp_path / "d")
    bin_path.write_bytes(whole_bin)
    for cut in (5, 20, len(whole_idx) - 8):
        idx_path.write_bytes(whole_idx[:cut])
        with pytest.raises(IndexedDatasetError, match="truncated") as err:
            IndexedDataset(tmp_path / "d")
        assert "\n" not in str(err.value) and "data_download.py" in str(err.value)


def test_foreign_and_inconsistent_files_are_refused(tmp_path):
    build(tmp_path / "d", DOCS)
    idx_path = tmp_path / "d.idx"
    whole = idx_path.read_bytes()
    cases = {
        b"TNTIDX\x00\x00" + whole[8:]: "foreign",  # fairseq's older non-mmap index
        b"hello, this is a text file, not an index at all\n": "foreign",
        whole[:9] + struct.pack("<Q", 2) + whole[17:]: "version",
        whole[:17] + struct.pack("<B", 7) + whole[18:]: "float",
        whole[:17] + struct.pack("<B", 42) + whole[18:]: "unknown dtype",
        whole[:17] + struct.pack("<B", 4) + whole[18:]: "pointers",  # int32 offsets would be 2x these
    }
    for content, message in cases.items():
        idx_path.write_bytes(content)
        with pytest.raises(IndexedDatasetError, match=message):
            IndexedDataset(tmp_path / "d")
    pointers_off = 34 + 4 * len(DOCS)
    bad = bytearray(whole)
    bad[pointers_off + 8 : pointers_off + 16] = struct.pack("<q", 999)
    idx_path.write_bytes(bytes(bad))
    with pytest.raises(IndexedDatasetError, match="pointers"):
        IndexedDataset(tmp_path / "d")
    with pytest.raises(IndexedDatasetNotFound) as err:
        IndexedDataset(tmp_path / "missing")
    assert isinstance(err.value, FileNotFoundError)


def test_builder_refuses_ids_that_do_not_fit_and_cleans_up(tmp_path):
    with pytest.raises(IndexedDatasetError, match="int32"):
        with IndexedDatasetBuilder(tmp_path / "d", np.uint16) as builder:
            builder.add_document([1, 2, 70000])
    assert list(tmp_path.iterdir()) == []
    assert best_dtype(50257) == np.uint16 and best_dtype(65500) == np.int32


def test_empty_dataset_and_pickling(tmp_path):
    build(tmp_path / "empty", [])
    ds = IndexedDataset(tmp_path / "empty")
    assert len(ds) == 0 and ds.num_tokens == 0 and len(ds.tokens) == 0
    build(tmp_path / "d", DOCS)
    ds = IndexedDataset(tmp_path / "d")
    blob = pickle.dumps(ds)
    assert len(blob) < 500  # reopened by path, not copied
    assert pickle.loads(blob)[1].tolist() == DOCS[1]
