"""Token files in the memory-mapped indexed format of Megatron-LM / fairseq (``MMIDIDX``), byte-exact.

A dataset is a pair ``<prefix>.bin`` (every sequence's tokens back to back) and ``<prefix>.idx``:

    offset 0   magic      9 bytes  b"MMIDIDX\\x00\\x00"
    offset 9   version    <Q       1
    offset 17  dtype code <B       1 uint8, 2 int8, 3 int16, 4 int32, 5 int64, 8 uint16 (6/7: floats)
    offset 18  sequences  <Q       n
    offset 26  doc_idx    <Q       d (= documents + 1)
    offset 34  sizes      n x int32   tokens per sequence
               pointers   n x int64   byte offset of each sequence in .bin
               doc_idx    d x int64   first sequence of each document, then n

This project writes one sequence per document (``doc_idx = 0..n``), exactly what Megatron's
``MMapIndexedDatasetBuilder`` writes when ``end_document()`` follows every ``add_item()``; files from
other tools with several sequences per document read back too (``len`` counts sequences).
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import numpy as np

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
HEADER = struct.Struct("<9sQBQQ")  # magic, version, dtype code, sequences, doc_idx entries: 34 bytes
DTYPES: dict[int, np.dtype] = {
    1: np.dtype(np.uint8),
    2: np.dtype(np.int8),
    3: np.dtype(np.int16),
    4: np.dtype(np.int32),
    5: np.dtype(np.int64),
    8: np.dtype(np.uint16),
}
# Codes 6 and 7 are float64/float32 in Megatron-Core but float/double in older fairseq: never token ids.
FLOAT_CODES = (6, 7)
CODES = {dtype: code for code, dtype in DTYPES.items()}


class IndexedDatasetError(ValueError):
    """A token file pair that is missing, truncated, foreign or inconsistent."""


class IndexedDatasetNotFound(IndexedDatasetError, FileNotFoundError):
    """The ``.bin`` or ``.idx`` file of a prefix does not exist."""


def best_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (Megatron's rule: vocab < 65500), else int32."""
    return np.dtype(np.uint16) if vocab_size < 65500 else np.dtype(np.int32)


def _paths(prefix: str | Path) -> tuple[Path, Path]:
    prefix = str(prefix)
    for ext in (".bin", ".idx"):  # accept "train.bin" as well as "train"
        if prefix.endswith(ext):
            prefix = prefix[: -len(ext)]
    return Path(prefix + ".bin"), Path(prefix + ".idx")


class IndexedDatasetBuilder:
    """Streams documents into ``<prefix>.bin``/``.idx`` through temp files, renamed only by ``finalize``.

    Use as a context manager so an exception (or Ctrl-C) removes the temp files instead of leaving
    something that looks whole.
    """

    def __init__(self, prefix: str | Path, dtype: np.dtype | type) -> None:
        self.dtype = np.dtype(dtype)
        if self.dtype not in CODES:
            raise IndexedDatasetError(f"dtype {self.dtype} has no MMIDIDX code: use uint16 or int32")
        self.bin_path, self.idx_path = _paths(prefix)
        self.bin_path.parent.mkdir(parents=True, exist_ok=True)
        tag = f".tmp-{os.getpid()}"
        self._bin_tmp = self.bin_path.with_name(self.bin_path.name + tag)
        self._idx_tmp = self.idx_path.with_name(self.idx_path.name + tag)
        self._file = open(self._bin_tmp, "wb")  # noqa: SIM115 - closed in finalize/abort
        self._sha = hashlib.sha256()
        self._sizes: list[int] = []
        self._max = np.iinfo(self.dtype).max
        self._min = np.iinfo(self.dtype).min

    def add_document(self, tokens) -> None:
        """Append one document (any 1-D integer sequence) as one sequence."""
        arr = np.asarray(tokens)
        if arr.ndim != 1:
            raise IndexedDatasetError(f"a document must be a 1-D token list, got shape {arr.shape}")
        if arr.size and (int(arr.max()) > self._max or int(arr.min()) < self._min):
            raise IndexedDatasetError(
                f"token ids {int(arr.min())}..{int(arr.max())} do not fit {self.dtype}: build with int32"
            )
        data = arr.astype(self.dtype, copy=False).tobytes()
        self._file.write(data)
        self._sha.update(data)
        self._sizes.append(arr.size)

    def finalize(self) -> dict:
        """Write the index and rename both files into place; returns tokens, documents and sha256."""
        self._file.close()
        sizes = np.asarray(self._sizes, dtype=np.int32)
        n = len(sizes)
        pointers = np.zeros(n, dtype=np.int64)
        if n:
            np.cumsum(sizes[:-1].astype(np.int64) * self.dtype.itemsize, out=pointers[1:])
        doc_idx = np.arange(n + 1, dtype=np.int64)
        with open(self._idx_tmp, "wb") as f:
            f.write(HEADER.pack(MAGIC, VERSION, CODES[self.dtype], n, n + 1))
            f.write(sizes.tobytes())
            f.write(pointers.tobytes())
            f.write(doc_idx.tobytes())
        # Its own renames, not Code.utils.atomic_write: the .bin is streamed into its temp file document by
        # document long before the index exists, and the two files must land together, so both temps are
        # complete before either rename. .bin first: an .idx only ever sits next to the .bin it describes once
        # both renames are done (and a stale pair is caught on open: sizes vs bytes).
        os.replace(self._bin_tmp, self.bin_path)
        os.replace(self._idx_tmp, self.idx_path)
        return {"tokens": int(sizes.sum(dtype=np.int64)), "documents": n, "sha256": self._sha.hexdigest()}

    def abort(self) -> None:
        """Drop the temp files (nothing final is touched)."""
        self._file.close()
        for p in (self._bin_tmp, self._idx_tmp):
            p.unlink(missing_ok=True)

    def __enter__(self) -> IndexedDatasetBuilder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


class IndexedDataset:
    """Read-only memory-mapped view of a ``.bin``/``.idx`` pair, validated on open."""

    def __init__(self, prefix: str | Path) -> None:
        self.prefix = str(prefix)
        self.bin_path, self.idx_path = _paths(prefix)
        self._open()

    def _fail(self, problem: str) -> IndexedDatasetError:
        return IndexedDatasetError(
            f"{self.idx_path}: {problem}; rebuild it with python Code/data_download.py ... --overwrite"
        )

    def _open(self) -> None:
        for p in (self.idx_path, self.bin_path):
            if not p.is_file():
                raise IndexedDatasetNotFound(
                    f"token file {p} not found: create it with python Code/data_download.py"
                )
        idx_bytes = self.idx_path.stat().st_size
        with open(self.idx_path, "rb") as f:
            head = f.read(HEADER.size)
        if not (head[:9] == MAGIC or (len(head) < 9 and MAGIC.startswith(head))):
            raise self._fail("not an MMIDIDX index (wrong magic bytes: a foreign file)")
        if len(head) < HEADER.size:
            raise self._fail(f"truncated header ({len(head)} of {HEADER.size} bytes)")
        _, version, code, n, d = HEADER.unpack(head)
        if version != VERSION:
            raise self._fail(f"unsupported MMIDIDX version {version} (expected {VERSION})")
        if code in FLOAT_CODES:
            raise self._fail(f"dtype code {code} is a float type, not token ids")
        if code not in DTYPES:
            raise self._fail(f"unknown dtype code {code}")
        self.dtype = DTYPES[code]
        expected = HEADER.size + n * 4 + n * 8 + d * 8
        if idx_bytes != expected:
            raise self._fail(f"index is {idx_bytes} bytes but its header needs {expected} (truncated?)")
        mm = np.memmap(self.idx_path, mode="r", dtype=np.uint8)
        self.sizes = np.frombuffer(mm, dtype=np.int32, count=n, offset=HEADER.size)
        self.pointers = np.frombuffer(mm, dtype=np.int64, count=n, offset=HEADER.size + 4 * n)
        self.doc_idx = np.frombuffer(mm, dtype=np.int64, count=d, offset=HEADER.size + 12 * n)
        if n and int(self.sizes.min()) < 0:
            raise self._fail("negative sequence size")
        if d < 1 or self.doc_idx[0] != 0 or self.doc_idx[-1] != n or np.any(np.diff(self.doc_idx) < 0):
            raise self._fail("document index is not 0 .. number of sequences, ascending")
        self._starts = np.zeros(n + 1, dtype=np.int64)  # token offsets; pointers must agree with them
        np.cumsum(self.sizes, out=self._starts[1:])
        if not np.array_equal(self.pointers, self._starts[:-1] * self.dtype.itemsize):
            raise self._fail("pointers do not match the sizes (sequences not stored back to back)")
        self.num_tokens = int(self._starts[-1])
        bin_bytes = self.bin_path.stat().st_size
        if bin_bytes != self.num_tokens * self.dtype.itemsize:
            raise self._fail(
                f"{self.bin_path.name} is {bin_bytes} bytes but the index needs "
                f"{self.num_tokens * self.dtype.itemsize} (truncated or from another index)"
            )
        # np.memmap refuses empty files; an empty split is still a valid dataset
        self.tokens = (
            np.memmap(self.bin_path, dtype=self.dtype, mode="r")
            if self.num_tokens
            else np.zeros(0, dtype=self.dtype)
        )

    def __len__(self) -> int:
        return len(self.sizes)

    def _index(self, i: int) -> int:
        n = len(self.sizes)
        j = int(i) + n if int(i) < 0 else int(i)
        if not 0 <= j < n:
            raise IndexError(f"document {i} out of range for {n} documents")
        return j

    def __getitem__(self, i: int) -> np.ndarray:
        j = self._index(i)
        return self.tokens[self._starts[j] : self._starts[j + 1]]

    def get(self, i: int, offset: int = 0, length: int | None = None) -> np.ndarray:
        """Tokens ``offset .. offset+length`` of document i (Megatron's ``get``), clipped to the document."""
        j = self._index(i)
        size = int(self.sizes[j])
        if not 0 <= offset <= size:
            raise IndexError(f"offset {offset} outside document {i} of {size} tokens")
        end = size if length is None else min(size, offset + max(0, length))
        start = int(self._starts[j])
        return self.tokens[start + offset : start + end]

    @property
    def document_starts(self) -> np.ndarray:
        """Token offset of each document in ``tokens`` (length ``len(self) + 1``)."""
        return self._starts

    def __getstate__(self) -> dict:
        # memmaps would pickle as full copies; DataLoader workers reopen the files instead
        return {"prefix": self.prefix}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["prefix"])

    def __repr__(self) -> str:
        return f"IndexedDataset({self.prefix!r}, documents={len(self)}, tokens={self.num_tokens}, {self.dtype})"
