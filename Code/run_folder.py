"""The run folder's files, in one place: their names, formats, readers, writers and digests.

    <run>/args.json               the flags the run was started with (training writes, everyone reads)
    <run>/metrics.jsonl           one JSON record per line: kind (train | val | done), step, values
    <run>/checkpoints/step<N>/    training state (engine files, rank<r>_state.pt) + manifest.json, last
    <run>/checkpoints/latest      the tag of the newest whole checkpoint (a hint: verified before use)
    <run>/best/, <run>/final/     Hugging Face folders (safetensors weights, distill_info.json, manifest.json)
    <run>/eval/metrics.json       what evaluate_.py measured

Training, evaluation, the study and the report all go through here; nothing else spells these names.
Every write is atomic (Code.utils.atomic_write); every checkpoint read is verified against its manifest
(sha256 per file, written last) and loaded with `torch.load(weights_only=True)`, so a folder received
from someone else can be damaged but cannot run code. Light to import (torch only when a tensor file is
read): the report reads runs through this module without the training or evaluation packages.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ARGS = "args.json"
METRICS = "metrics.jsonl"
EVAL_DIR = "eval"
EVAL_METRICS = "metrics.json"
CHECKPOINTS = "checkpoints"
LATEST = "latest"
BEST = "best"
FINAL = "final"
DISTILL_INFO = "distill_info.json"
MANIFEST = "manifest.json"
TENSORBOARD = "tensorboard"
STARTED = (METRICS, CHECKPOINTS, BEST, FINAL)  # what a run writes once it has begun
TAG = re.compile(r"step(\d+)")


class CheckpointError(ValueError):
    """A checkpoint or model folder that cannot be used as it is (damaged, partial, unsafe to load)."""


# ------------------------------------------------------------------------------------------ JSON files
def read_json(path: str | Path) -> dict[str, Any] | None:
    """A JSON object file, or None when it is missing or unreadable (a reader of many runs keeps going)."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def write_json(path: str | Path, obj: Any) -> None:
    from Code.utils import atomic_write_json

    atomic_write_json(path, obj)


def read_args(run_dir: str | Path) -> dict[str, Any]:
    """The run's args.json ({} when it has none)."""
    return read_json(Path(run_dir) / ARGS) or {}


def write_args(run_dir: str | Path, flags: dict[str, Any]) -> None:
    write_json(Path(run_dir) / ARGS, flags)


def eval_metrics_path(eval_dir: str | Path) -> Path:
    return Path(eval_dir) / EVAL_METRICS


def read_eval(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's eval/metrics.json, or None when it was not evaluated."""
    return read_json(eval_metrics_path(Path(run_dir) / EVAL_DIR))


def write_eval(eval_dir: str | Path, result: dict[str, Any]) -> Path:
    path = eval_metrics_path(eval_dir)
    write_json(path, result)
    return path


def read_distill_info(model_dir: str | Path) -> dict[str, Any]:
    """A model folder's distill_info.json (teacher, data_dir, student_layers, layer_map), or {}."""
    return read_json(Path(model_dir) / DISTILL_INFO) or {}


def is_trained(run_dir: str | Path) -> bool:
    """The run wrote its `final/` model (the last thing training does)."""
    return (Path(run_dir) / FINAL / "config.json").is_file()


# ------------------------------------------------------------------------------------------ metrics.jsonl
def metrics_line(record: dict[str, Any]) -> str:
    """One record as its line: non-finite floats as null (JSON has no NaN), keys sorted."""
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
    return json.dumps(clean, sort_keys=True) + "\n"


def _records(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The run's records in step order, the last one written for each (kind, step) winning (a run killed
    after logging past its last checkpoint logs those steps again when it resumes)."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    by_key = {(rec.get("kind", "train"), int(rec.get("step", 0))): rec for rec in _records(path)}
    return [by_key[k] for k in sorted(by_key, key=lambda k: (k[1], k[0]))]


def cut_metrics(run_dir: str | Path, step: int) -> int:
    """Drop the records after `step` (what a resume from `step` will log again) and any `done` record;
    atomically. Returns how many lines were dropped."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return 0
    records = _records(path)
    kept = [r for r in records if int(r.get("step", 0)) <= step and r.get("kind") != "done"]
    if len(kept) != len(records) or len(path.read_text(errors="replace").splitlines()) != len(records):
        from Code.utils import atomic_write_text

        atomic_write_text(path, "".join(metrics_line(r) for r in kept))
    return len(records) - len(kept)


# ------------------------------------------------------------------------------------------ digests
def sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _payload(folder: Path) -> list[Path]:
    """The files a manifest covers: everything in the folder but the manifest and temp files."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST and ".tmp" not in p.name)


def write_manifest(folder: str | Path) -> None:
    """Record size and sha256 of every file in `folder`; written last and atomically, so a folder with a
    manifest was complete when it was written."""
    folder = Path(folder)
    files = {str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": sha256(p)} for p in _payload(folder)}
    write_json(folder / MANIFEST, {"algorithm": "sha256", "files": files})


def folder_problem(folder: str | Path) -> str | None:
    """Why `folder` is not whole (no manifest, a file missing, cut short or changed), or None when it is."""
    folder = Path(folder)
    if not folder.is_dir():
        return "missing"
    manifest = read_json(folder / MANIFEST)
    if manifest is None or not isinstance(manifest.get("files"), dict) or not manifest["files"]:
        return f"no readable {MANIFEST} (a save cut short, or written before digests)"
    for name, want in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != want.get("bytes"):
            return f"{name} has {path.stat().st_size} bytes, {want.get('bytes')} were written"
        if sha256(path) != want.get("sha256"):
            return f"{name} does not match its sha256 (changed or damaged on disk)"
    return None


def check_model_folder(folder: str | Path) -> bool:
    """Verify a `best/` or `final/` folder against its manifest; False when it has none (written before
    digests, or not a run's folder). A damaged one raises CheckpointError."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        return False
    problem = folder_problem(folder)
    if problem:
        raise CheckpointError(f"{folder}: {problem}: retrain it, or resume the run with --resume to write it again")
    return True


# ------------------------------------------------------------------------------------------ checkpoints
def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINTS


def step_of(tag: str) -> int:
    match = TAG.fullmatch(tag)
    return int(match.group(1)) if match else -1


def checkpoint_tags(ckpt_root: str | Path) -> list[str]:
    """`step<N>` folders, oldest first."""
    root = Path(ckpt_root)
    found = [p.name for p in root.glob("step*") if p.is_dir() and TAG.fullmatch(p.name)] if root.is_dir() else []
    return sorted(found, key=step_of)


def latest_hint(ckpt_root: str | Path) -> str | None:
    """What `latest` names, when it names a step folder that exists (garbled or dangling: None)."""
    try:
        tag = (Path(ckpt_root) / LATEST).read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None
    return tag if TAG.fullmatch(tag) and (Path(ckpt_root) / tag).is_dir() else None


def finish_checkpoint(ckpt_root: str | Path, tag: str, keep: int) -> None:
    """After every rank wrote its files: the manifest, then `latest`, then drop all but `keep` newest."""
    from Code.utils import atomic_write_text

    root = Path(ckpt_root)
    write_manifest(root / tag)
    atomic_write_text(root / LATEST, tag)
    if keep > 0:
        import shutil

        for old in checkpoint_tags(root)[:-keep]:
            shutil.rmtree(root / old, ignore_errors=True)


def choose_checkpoint(ckpt_root: str | Path, say: Callable[[str], None] = print) -> str | None:
    """The newest whole checkpoint's tag; None when the run has none at all (a fresh start).

    Newest first by step (`latest` is only a hint: it may dangle or be garbled); each one skipped is named
    with the reason in one line. Step folders present but none whole: CheckpointError, never a silent
    restart from step 0.
    """
    root = Path(ckpt_root)
    tags = checkpoint_tags(root)
    hint = latest_hint(root)
    if (root / LATEST).exists() and hint is None:
        say(f"note: {root / LATEST} names no checkpoint folder; looking for the newest whole one")
    skipped = []
    for tag in reversed(tags):
        problem = folder_problem(root / tag)
        if problem is None:
            return tag
        skipped.append(f"{tag} ({problem})")
        say(f"note: skipping checkpoint {root / tag}: {problem}")
    if skipped:
        raise CheckpointError(f"no whole checkpoint in {root}: {'; '.join(skipped)}; restore one from a copy, "
                              "or start over with --overwrite")
    return None


def newest_whole(ckpt_root: str | Path) -> str | None:
    """The newest whole checkpoint's tag, quietly (for messages that name one)."""
    try:
        return choose_checkpoint(ckpt_root, say=lambda _: None)
    except CheckpointError:
        return None


# ------------------------------------------------------------------------------------------ loading tensors
def load_tensors(path: str | Path, map_location: Any = "cpu", allowed: Iterable[type] = ()) -> Any:
    """`torch.load(weights_only=True)`: tensors and plain types only (plus the `allowed` classes, which the
    unpickler may build but never call). A file holding any other object is one CheckpointError line."""
    import pickle

    import torch

    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        what = found.group(1) if found else "a pickled object"
        raise CheckpointError(f"{path} holds {what}, which loading would have to run as code: refused; use a "
                              "checkpoint this project wrote (tensors and plain values only)") from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"{path} cannot be read ({' '.join(str(exc).split())[:160]}): the file is damaged; "
                              "resume from an older checkpoint or start over with --overwrite") from None
