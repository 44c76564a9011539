"""Read a study folder for the report: every run's args.json, metrics.jsonl and eval/metrics.json, per stage
(tune/, runs/, budget/), and the calibration and self-check files.

Files only, through the run folder's readers (Code.run_folder) and the data folder's (Code.data_pipeline);
never the training or evaluation packages. A run that is missing, unfinished or unevaluated is kept with
its status so the report can say so instead of failing; so is a stage the study has not reached yet.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from Code.data_pipeline.lm_datasets import DataNotFoundError, load_meta
from Code.run_folder import (
    FINAL,
    eval_metrics_path,
    is_trained,
    read_args,
    read_distill_info,
    read_eval,
    read_json,
    read_metrics,
)


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

    def score(self, key: str, model: str = "student") -> float | None:
        """`ppl`, `bpb`, `ood_ppl` or `ood_bpb` of the student (or teacher) from the evaluation; None when the
        evaluation has no such number (bits per byte came later than perplexity)."""
        value = (self.eval or {}).get(model, {}).get(key)
        return float(value) if value is not None else None

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
    tune_runs: dict[tuple[str, int], Run] = field(default_factory=dict)    # tune/<method>/seed<k>
    budget_runs: dict[tuple[str, int], Run] = field(default_factory=dict)  # budget/<method>/seed<k>
    calibration: dict[str, Any] | None = None   # calibration/calibration.json
    selfcheck: dict[str, Any] | None = None     # selfcheck/eval/metrics.json (the teacher, test text as OOD)

    def of(self, method: str, done_only: bool = True) -> list[Run]:
        return [self.runs[(method, s)] for s in self.seeds
                if (method, s) in self.runs and (self.runs[(method, s)].status == "done" or not done_only)]

    def budget_of(self, method: str) -> list[Run]:
        """The method's finished budget-point runs, by seed."""
        return [r for (m, _), r in sorted(self.budget_runs.items()) if m == method and r.status == "done"]

    @property
    def incomplete(self) -> list[Run]:
        return [r for r in [*self.tune_runs.values(), *self.runs.values(), *self.budget_runs.values()]
                if r.status != "done"]

    def family(self, method: str) -> str | None:
        """The family a method belongs to (study.json `methods.<m>.family`, else a tuned family's grid point
        `<family>_w<weight>`); None for `lm` and the like."""
        recorded = (self.manifest.get("methods") or {}).get(method)
        if recorded is not None:
            return recorded.get("family")
        family, sep, _ = method.rpartition("_w")
        return family if sep and family in ((self.manifest.get("tuning") or {}).get("families") or {}) else None

    def method_of(self, family: str) -> str | None:
        """The test method of a family (its grid point at the chosen weight), when the test stage has one."""
        return next((m for m in self.methods if self.family(m) == family), None)

    @property
    def lm(self) -> str | None:
        """The LM-only baseline's method name."""
        return "lm" if "lm" in self.methods else None


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


def _stage_runs(root: Path, folder: str, planned: dict[str, list[int]]) -> dict[tuple[str, int], Run]:
    """The runs of one stage: those planned (method -> seeds) and whatever `<folder>/<method>/seed<k>` holds."""
    keys = {(m, s) for m, seeds in planned.items() for s in seeds}
    for seed_dir in (root / folder).glob("*/seed*"):
        if seed_dir.name[4:].isdigit():
            keys.add((seed_dir.parent.name, int(seed_dir.name[4:])))
    return {(m, s): load_run(m, s, root / folder / m / f"seed{s}") for m, s in sorted(keys)}


def tuning_plan(manifest: dict[str, Any]) -> dict[str, list[int]]:
    """Tuning runs the manifest plans: `<family>_w<weight>` x the tuning seed, for every grid weight."""
    tuning = manifest.get("tuning") or {}
    seed = tuning.get("seed")
    if seed is None:
        return {}
    return {f"{family}_w{w}": [int(seed)] for family, spec in (tuning.get("families") or {}).items()
            for w in spec.get("valid_ppl") or {}}


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
    budget = manifest.get("budget") or {}
    planned_budget = {m: list(budget.get("seeds") or []) for m in (budget.get("methods") or {}).values()}
    calibration = read_json(root / ((manifest.get("calibration") or {}).get("file") or
                                    "calibration/calibration.json"))
    selfcheck = read_json(eval_metrics_path(root / ((manifest.get("selfcheck") or {}).get("dir") or "selfcheck/eval")))
    return StudyData(root, manifest, methods, seeds, runs, meta, teacher_run,
                     tune_runs=_stage_runs(root, "tune", tuning_plan(manifest)),
                     budget_runs=_stage_runs(root, "budget", planned_budget),
                     calibration=calibration, selfcheck=selfcheck)
