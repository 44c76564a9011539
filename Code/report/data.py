"""Read a study folder for the report: every run's args.json, metrics.jsonl and eval/metrics.json.

Files only, through the run folder's readers (Code.run_folder) and the data folder's (Code.data_pipeline);
never the training or evaluation packages. A run that is missing, unfinished or unevaluated is kept with
its status so the report can say so instead of failing.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from Code.data_pipeline.lm_datasets import DataNotFoundError, load_meta
from Code.run_folder import FINAL, is_trained, read_args, read_distill_info, read_eval, read_json, read_metrics


@dataclass
class Run:
    method: str
    seed: int
    path: Path
    status: str                            # done | not evaluated | not finished | missing
    args: dict[str, Any] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)
    eval: dict[str, Any] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def kind(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("kind", "train") == kind]

    @property
    def test_ppl(self) -> float | None:
        return self.eval["student"]["ppl"] if self.eval else None

    @property
    def ood_ppl(self) -> float | None:
        """Out-of-domain perplexity (evaluate_.py --ood-text); None for runs evaluated without it."""
        return (self.eval or {}).get("student", {}).get("ood_ppl")

    @property
    def teacher_ood_ppl(self) -> float | None:
        return (self.eval or {}).get("teacher", {}).get("ood_ppl")

    def layer_values(self, key: str) -> dict[int, float]:
        """student layer -> value of `key` (sliced_wd, cka, mse) from the evaluation."""
        rows = (self.eval or {}).get("layers", [])
        return {int(r["student_layer"]): float(r[key]) for r in rows if r.get(key) is not None}

    def layer_mean(self, key: str) -> float | None:
        values = list(self.layer_values(key).values())
        return sum(values) / len(values) if values else None

    @property
    def train_time_s(self) -> float | None:
        done = self.kind("done")
        return float(done[-1]["train_time_s"]) if done and done[-1].get("train_time_s") is not None else None

    @property
    def train_tokens(self) -> int | None:
        train = self.kind("train")
        return int(train[-1]["tokens"]) if train and "tokens" in train[-1] else None

    @property
    def train_tokens_per_s(self) -> float | None:
        """Median over log intervals (the first interval also holds start-up work)."""
        values = [r["tokens_per_s"] for r in self.kind("train") if r.get("tokens_per_s")]
        return float(statistics.median(values)) if values else None

    @property
    def final_val_loss(self) -> float | None:
        val = [r for r in self.kind("val") if r.get("val/loss") is not None]
        return float(val[-1]["val/loss"]) if val else None


@dataclass
class StudyData:
    root: Path
    manifest: dict[str, Any]
    methods: list[str]
    seeds: list[int]
    runs: dict[tuple[str, int], Run]
    meta: dict[str, Any]                   # data meta.json (may be empty)
    teacher_run: Run | None                # the teacher's pretraining run, when it was trained here

    def of(self, method: str, done_only: bool = True) -> list[Run]:
        return [self.runs[(method, s)] for s in self.seeds
                if (method, s) in self.runs and (self.runs[(method, s)].status == "done" or not done_only)]

    @property
    def incomplete(self) -> list[Run]:
        return [r for r in self.runs.values() if r.status != "done"]


def _meta(*folders: Path) -> dict[str, Any]:
    """The first data folder's meta.json that reads ({} when none does: the report says n/a)."""
    for folder in folders:
        try:
            return load_meta(folder)
        except DataNotFoundError:
            continue
    return {}


def load_run(method: str, seed: int, path: Path) -> Run:
    if not path.is_dir():
        return Run(method, seed, path, "missing")
    metrics = read_eval(path)
    status = ("done" if metrics else "not evaluated") if is_trained(path) else "not finished"
    return Run(method, seed, path, status, args=read_args(path), records=read_metrics(path),
               eval=metrics, info=read_distill_info(path / FINAL))


def load_study(root: str | Path) -> StudyData:
    """The study's plan from study.json when present, else whatever `runs/<method>/seed<k>` holds."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"study folder {root} not found: run scripts/run_study.sh first or pass --study-dir")
    manifest = read_json(root / "study.json") or {}
    found: dict[str, set[int]] = {}
    for seed_dir in sorted((root / "runs").glob("*/seed*")):
        if seed_dir.name[4:].isdigit():
            found.setdefault(seed_dir.parent.name, set()).add(int(seed_dir.name[4:]))
    methods = list(manifest.get("methods") or []) + sorted(set(found) - set(manifest.get("methods") or []))
    seeds = sorted(set(manifest.get("seeds") or []) | {s for v in found.values() for s in v})
    if not methods:
        raise FileNotFoundError(f"{root} holds no runs (no runs/<method>/seed<k>/ and no study.json)")
    runs = {}
    for method in methods:
        for seed in seeds:
            path = root / "runs" / method / f"seed{seed}"
            if path.is_dir() or method in (manifest.get("methods") or {}):
                runs[(method, seed)] = load_run(method, seed, path)
    teacher_dir = root / "teacher"
    teacher_run = load_run("teacher", 0, teacher_dir) if read_args(teacher_dir) else None
    data_dir = Path((manifest.get("data") or {}).get("dir") or root / "data")
    meta = _meta(data_dir, root / "data")
    return StudyData(root, manifest, methods, seeds, runs, meta, teacher_run)
