"""A teacher's top-k next-token targets, computed once per token split: the format, its writer and its reader.

Files, beside the split's token files (`<split>.bin/.idx`) unless written elsewhere, for `seq_len` L and k:

    <split>.seq<L>.topk<k>.vals.bin   (blocks, L, k)  float16 or float32  log-probabilities, each row sorted
                                                                          descending (so k serves any k' <= k)
    <split>.seq<L>.topk<k>.ids.bin    (blocks, L, k)  uint16 (V <= 65,536) or int32   their token ids
    <split>.seq<L>.topk<k>.rest.bin   (blocks, L)     float32  log of the mass on every other token (-inf: none)
    <split>.seq<L>.topk<k>.json       the header: format, split, seq_len, k, blocks, temperature, each array's
                                      file/dtype/shape/sha256, the data (split sha256 from meta.json, tokens,
                                      tokenizer) and the teacher (name, sha256 of its config and weight files)

Row (b, j) is the teacher's distribution over the token after position j of training block b, the block
`LMBlocks(split, L)[b]` that training reads (its inputs are the block's first L tokens), so any rank reads
any block by index and the sampler's order does not matter. The arrays are raw C-order binaries read with
`np.memmap`. The header is written last (atomically): a cache without one is unfinished. Until then the
writer keeps `<name>.*.bin.partial` files and a `<name>.progress.json` naming the blocks done and what
they were computed from; a rerun with the same inputs continues from there. Reading checks each file's
size and, with `verify`, its sha256 (about 1 GB/s).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from Code.data_pipeline.lm_datasets import load_meta
from Code.run_folder import sha256
from Code.utils import atomic_write_json

FORMAT = "teacher-topk-v1"
VALS_DTYPES = ("float16", "float32")
ARRAYS = ("vals", "ids", "rest")
HOW = "build it with python Code/cache_teacher.py --teacher DIR --data-dir DIR --seq-len L --top-k K"


class TeacherCacheError(ValueError):
    """A teacher cache that is missing, unfinished, damaged or made for other data, teacher or seq_len."""


def cache_name(split: str, seq_len: int, k: int) -> str:
    return f"{split}.seq{seq_len}.topk{k}"


def ids_dtype(vocab_size: int) -> str:
    return "uint16" if vocab_size <= 1 << 16 else "int32"


def array_shapes(blocks: int, seq_len: int, k: int) -> dict[str, tuple[int, ...]]:
    return {"vals": (blocks, seq_len, k), "ids": (blocks, seq_len, k), "rest": (blocks, seq_len)}


def data_identity(data_dir: str | Path, split: str) -> dict[str, Any]:
    """What identifies the token split: meta.json's sha256 of it (computed at conversion), tokens, tokenizer."""
    meta = load_meta(data_dir)
    info = meta.get("splits", {}).get(split) or {}
    return {"split_sha256": info.get("sha256"), "tokens": info.get("tokens"),
            "tokenizer": meta.get("tokenizer_sha256") or meta.get("tokenizer")}


def teacher_identity(teacher: str | Path) -> dict[str, Any]:
    """A local teacher folder by the sha256 of its config and weight files (a copy elsewhere matches); a hub
    name by its name."""
    path = Path(teacher)
    if not path.is_dir():
        return {"name": str(teacher), "files": None}
    files = sorted(p for p in path.iterdir() if p.is_file() and (
        p.name == "config.json" or p.suffix in (".safetensors", ".bin")))
    return {"name": str(teacher), "files": {p.name: sha256(p) for p in files}}


def same_teacher(recorded: Mapping[str, Any], teacher: str | Path) -> bool:
    now = teacher_identity(teacher)
    if recorded.get("files") is not None or now["files"] is not None:
        return recorded.get("files") == now["files"]
    return recorded.get("name") == now["name"]


# ------------------------------------------------------------------------------------------------ writer
class CacheWriter:
    """Fills the arrays block range by block range; `done` blocks survive a crash (see the module's doc).

    `identity` is everything the rows depend on (data, teacher, seq_len, k, temperature, dtypes): a partial
    cache made from anything else is refused unless `overwrite`.
    """

    def __init__(self, out_dir: str | Path, name: str, blocks: int, seq_len: int, k: int, vals_dtype: str,
                 vocab_size: int, identity: dict[str, Any], overwrite: bool = False) -> None:
        if vals_dtype not in VALS_DTYPES:
            raise TeacherCacheError(f"values dtype {vals_dtype!r} is not one of {', '.join(VALS_DTYPES)}")
        self.dir, self.name = Path(out_dir), name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dtypes = {"vals": vals_dtype, "ids": ids_dtype(vocab_size), "rest": "float32"}
        self.shapes = array_shapes(blocks, seq_len, k)
        self.identity = {**identity, "blocks": blocks, "seq_len": seq_len, "k": k, "dtypes": self.dtypes}
        self.progress = self.dir / f"{name}.progress.json"
        header = self.dir / f"{name}.json"
        if header.exists() and not overwrite:
            raise TeacherCacheError(f"{header} already exists: pass --overwrite to rebuild it")
        if overwrite:
            for path in [header, self.progress, *self.final_paths().values(), *self.partial_paths().values()]:
                path.unlink(missing_ok=True)
        self.done = self._resume()
        self.maps = {a: np.memmap(p, dtype=self.dtypes[a], mode="r+", shape=self.shapes[a])
                     for a, p in self.partial_paths().items()}

    def final_paths(self) -> dict[str, Path]:
        return {a: self.dir / f"{self.name}.{a}.bin" for a in ARRAYS}

    def partial_paths(self) -> dict[str, Path]:
        return {a: p.with_name(p.name + ".partial") for a, p in self.final_paths().items()}

    def _resume(self) -> int:
        partial = self.partial_paths()
        state = json.loads(self.progress.read_text()) if self.progress.is_file() else None
        sizes_ok = all(p.is_file() and p.stat().st_size == _nbytes(self.shapes[a], self.dtypes[a])
                       for a, p in partial.items())
        if state is not None and sizes_ok:
            if state.get("identity") != self.identity:
                raise TeacherCacheError(f"{self.progress} is a partial cache of other inputs (teacher, data, k, "
                                        "seq_len, temperature or dtype): pass --overwrite to start it again")
            return int(state["done"])
        for a, p in partial.items():  # a fresh start: preallocate (sparse) files of the final size
            with open(p, "wb") as handle:
                handle.truncate(_nbytes(self.shapes[a], self.dtypes[a]))
        self._save_progress(0)
        return 0

    def _save_progress(self, done: int) -> None:
        atomic_write_json(self.progress, {"identity": self.identity, "done": done})

    def write(self, start: int, vals: Tensor, ids: Tensor, rest: Tensor) -> None:
        """Rows of blocks `start .. start + len(vals)`; only whole, flushed ranges are recorded as done."""
        if start != self.done:
            raise TeacherCacheError(f"blocks must be written in order: next is {self.done}, got {start}")
        stop = start + vals.shape[0]
        for a, t in (("vals", vals), ("ids", ids), ("rest", rest)):
            self.maps[a][start:stop] = t.detach().cpu().numpy().astype(self.dtypes[a])
            self.maps[a].flush()
        self.done = stop
        self._save_progress(stop)

    def finish(self, extra: dict[str, Any]) -> Path:
        """Rename the arrays into place, then write the header (sha256 of each array): the cache is whole."""
        if self.done != self.shapes["vals"][0]:
            raise TeacherCacheError(f"only {self.done} of {self.shapes['vals'][0]} blocks written")
        arrays = {}
        for a, partial in self.partial_paths().items():
            self.maps[a].flush()
            final = self.final_paths()[a]
            os.replace(partial, final)
            arrays[a] = {"file": final.name, "dtype": self.dtypes[a], "shape": list(self.shapes[a]),
                         "sha256": sha256(final)}
        self.maps = {}
        header = {"format": FORMAT, **self.identity, **extra, "arrays": arrays}
        path = self.dir / f"{self.name}.json"
        atomic_write_json(path, header)
        self.progress.unlink(missing_ok=True)
        return path



def _nbytes(shape: tuple[int, ...], dtype: str) -> int:
    return int(np.prod(shape)) * np.dtype(dtype).itemsize


# ------------------------------------------------------------------------------------------------ reader
def find_cache(where: str | Path, split: str, seq_len: int, min_k: int = 0) -> Path:
    """The header for `split` and `seq_len` in folder `where` (or `where` itself, a header): of several, the
    smallest k >= `min_k`."""
    where = Path(where)
    if where.is_file():
        return where
    if not where.is_dir():
        raise TeacherCacheError(f"teacher cache {where} does not exist: {HOW}")
    pattern = re.compile(rf"{re.escape(split)}\.seq{seq_len}\.topk(\d+)\.json")
    found = sorted((int(m.group(1)), p) for p in where.iterdir() if (m := pattern.fullmatch(p.name)))
    usable = [p for k, p in found if k >= min_k]
    if not usable:
        have = ", ".join(p.name for p in sorted(where.glob(f"{split}.seq*.topk*.json"))) or "none"
        raise TeacherCacheError(f"no teacher cache for split {split!r}, seq_len {seq_len}, k >= {max(min_k, 1)} in "
                                f"{where} (has: {have}): {HOW}")
    return usable[0]


class TeacherCache:
    """A finished cache, memory-mapped on first use (so each DataLoader worker maps its own)."""

    def __init__(self, header_path: str | Path, verify: bool = False) -> None:
        self.path = Path(header_path)
        try:
            self.header = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise TeacherCacheError(f"cannot read teacher cache header {self.path} ({exc}): {HOW}") from None
        if self.header.get("format") != FORMAT:
            raise TeacherCacheError(f"{self.path} is not a {FORMAT} header: {HOW}")
        self.blocks, self.seq_len, self.k = (int(self.header[f]) for f in ("blocks", "seq_len", "k"))
        self.temperature = float(self.header["temperature"])
        self._maps: dict[str, np.memmap] | None = None
        for info in self.header["arrays"].values():
            file = self.path.parent / info["file"]
            want = _nbytes(tuple(info["shape"]), info["dtype"])
            if not file.is_file() or file.stat().st_size != want:
                raise TeacherCacheError(f"teacher cache array {file} is missing or not {want} bytes: "
                                        f"rebuild it ({HOW} --overwrite)")
            if verify and sha256(file) != info["sha256"]:
                raise TeacherCacheError(f"teacher cache array {file} does not match the sha256 in {self.path.name} "
                                        f"(damaged or replaced): rebuild it ({HOW} --overwrite)")

    def mismatch(self, data: Mapping[str, Any], seq_len: int, teacher: str | Path | None) -> str | None:
        """Why this cache cannot serve a run on `data` (data_identity), `seq_len` and `teacher`; None if it can."""
        if seq_len != self.seq_len:
            return f"it holds blocks of {self.seq_len} tokens, the run reads {seq_len}"
        if dict(data) != self.header["data"]:
            return "it was computed from other token data (the split's sha256 or tokenizer differ)"
        if teacher is not None and not same_teacher(self.header["teacher"], teacher):
            return f"it was computed by teacher {self.header['teacher']['name']}, not {teacher}"
        return None

    def _arrays(self) -> dict[str, np.memmap]:
        if self._maps is None:
            self._maps = {a: np.memmap(self.path.parent / i["file"], dtype=i["dtype"], mode="r",
                                       shape=tuple(i["shape"])) for a, i in self.header["arrays"].items()}
        return self._maps

    def rows(self, block: int) -> dict[str, Tensor]:
        """Block `block`'s targets: `topk_vals` (L, k) float32, `topk_ids` (L, k) int64, `topk_rest` (L,)."""
        m = self._arrays()
        return {"topk_vals": torch.from_numpy(m["vals"][block].astype(np.float32)),
                "topk_ids": torch.from_numpy(m["ids"][block].astype(np.int64)),
                "topk_rest": torch.from_numpy(np.array(m["rest"][block], dtype=np.float32))}

    def __getstate__(self) -> dict[str, Any]:  # memmaps are not sent to spawned workers: they map their own
        return {**self.__dict__, "_maps": None}


class CachedBlocks(Dataset):
    """Training blocks with their cached targets: item i is `{"block": blocks[i], "topk_*": cache rows i}`."""

    def __init__(self, blocks: Dataset, cache: TeacherCache) -> None:
        if len(blocks) != cache.blocks:
            raise TeacherCacheError(f"the split has {len(blocks)} blocks of {cache.seq_len} tokens, the teacher "
                                    f"cache {cache.path} {cache.blocks}: rebuild it ({HOW} --overwrite)")
        self.blocks, self.cache = blocks, cache

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"block": self.blocks[i], **self.cache.rows(int(i))}
