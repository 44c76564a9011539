"""The study's protocol and its tuning stage: each family's weight grid scored on validation PPL at the tuning
seed, the weight chosen, and the wall time of every stage.

The grid and the choice come from study.json (`tuning`: what the test stage used); the validation PPLs are
read from the tuning runs' own evaluations (`tune/<family>_w<weight>/seed<k>/eval/metrics.json`, scored on
the validation split), so a tuning stage still running shows the points it has.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from Code.report.data import StudyData
from Code.report.fmt import MISSING, num, plural, table

SPLITS = {"valid": "validation", "test": "test", "train": "training"}


@dataclass
class FamilyTuning:
    name: str
    kind: str                                  # logit | paired | critic | critic-free (n/a when unrecorded)
    label: str
    valid_ppl: dict[str, float | None] = field(default_factory=dict)  # weight (as the grid spells it) -> PPL
    chosen: str | None = None                  # the weight the test stage ran (None: not chosen yet)
    base: tuple[str, ...] = ()                 # the preset's grid; other weights were added past an edge


def split_name(method: str) -> tuple[str, str] | None:
    """`<family>_w<weight>` -> (family, weight); None for a name that is no grid point."""
    family, sep, weight = method.rpartition("_w")
    return (family, weight) if sep and family and weight else None


def tuning(study: StudyData) -> dict[str, FamilyTuning]:
    """Every tuned family: study.json's grid and choice, each point's validation PPL from its run."""
    spec = study.manifest.get("tuning") or {}
    seed = spec.get("seed")
    out: dict[str, FamilyTuning] = {}
    for name, fam in (spec.get("families") or {}).items():
        out[name] = FamilyTuning(name, fam.get("kind") or "n/a", fam.get("label") or "",
                                 dict(fam.get("valid_ppl") or {}), fam.get("chosen"), tuple(fam.get("base") or ()))
    for (method, run_seed), run in study.tune_runs.items():
        parts = split_name(method)
        if parts is None or (seed is not None and run_seed != seed):
            continue
        family, weight = parts
        entry = out.setdefault(family, FamilyTuning(family, "n/a", ""))
        entry.valid_ppl[weight] = run.test_ppl if run.status == "done" else entry.valid_ppl.get(weight)
    for entry in out.values():  # increasing weight, whatever order the points were run in
        try:
            entry.valid_ppl = dict(sorted(entry.valid_ppl.items(), key=lambda item: float(item[0])))
        except ValueError:
            pass
    return out


def lm_reference(study: StudyData) -> float | None:
    """LM-only's validation PPL at the tuning seed: every family's weight 0."""
    seed = tune_seed(study)
    run = study.tune_runs.get(("lm", seed)) if seed is not None else None
    if run is not None and run.status == "done":
        return run.test_ppl
    return (study.manifest.get("tuning") or {}).get("lm_valid_ppl")


def tuning_table(study: StudyData) -> list[str]:
    """family x grid point: validation PPL, the chosen weight in bold and marked ✓."""
    grid = tuning(study)
    if not grid:
        return ["No tuning run is on disk and study.json records no tuning stage yet."]
    width = max(len(f.valid_ppl) for f in grid.values())
    rows = []
    for f in grid.values():
        cells = []
        for w, ppl in f.valid_ppl.items():
            added = "⁺" if f.base and w not in f.base else ""
            text = f"{w}{added}: {num(ppl) if ppl is not None else MISSING}"
            cells.append(f"**{text}** ✓" if w == f.chosen else text)
        rows.append([f"`{f.name}`", f.kind, *cells, *[""] * (width - len(cells)),
                     f.chosen if f.chosen else "not chosen yet"])
    reference = lm_reference(study)
    if reference is not None:
        rows.insert(0, ["LM only (weight 0)", "-", num(reference), *[""] * (width - 1), "-"])
    lines = table(["family", "kind", *(f"weight {i + 1}: val. PPL" for i in range(width)), "chosen weight"], rows)
    extend = (study.manifest.get("tuning") or {}).get("max_extend")
    if extend:
        lines += ["", f"⁺ added past an edge of the preset's grid: a family whose best weight was its grid's "
                  f"smallest or largest got the next weight beyond it at the same ratio, until the best was inside "
                  f"(at most {extend} more; the same rule for every family)."]
    edges = edge_choices(grid)
    if edges:
        lines += ["", "Chosen at an end of its grid" + (" even after the extensions" if extend else "")
                  + " (the best weight may lie beyond it): "
                  + ", ".join(f"`{name}` ({where}, {w})" for name, where, w in edges) + "."]
    if reference is not None:
        below = [f"`{f.name}`" for f in grid.values() if f.chosen and (f.valid_ppl.get(f.chosen) or 1e9) < reference]
        lines += ["", f"Below LM-only's validation PPL ({num(reference)}) at the chosen weight: "
                  + (", ".join(below) if below else "no family") + "."]
    return lines


def edge_choices(grid: dict[str, FamilyTuning]) -> list[tuple[str, str, str]]:
    """(family, "largest" | "smallest", weight) for each family whose chosen weight is an end of its grid."""
    out = []
    for f in grid.values():
        try:
            weights = sorted(f.valid_ppl, key=float)
        except ValueError:  # a weight that is no number: no order to speak of
            continue
        if f.chosen and len(weights) > 1 and f.chosen in (weights[0], weights[-1]):
            out.append((f.name, "largest" if f.chosen == weights[-1] else "smallest", f.chosen))
    return out


def tune_seed(study: StudyData) -> int | None:
    """The tuning seed: study.json's, else the seed the tuning runs on disk share (while tuning still runs)."""
    seeds = {s for _, s in study.tune_runs}
    return (study.manifest.get("tuning") or {}).get("seed") or (seeds.pop() if len(seeds) == 1 else None)


def protocol_rows(study: StudyData) -> list[list[str]]:
    """Setup rows: how weights were chosen and on which seeds the methods are tested."""
    spec = study.manifest.get("tuning") or {}
    grid = tuning(study)
    rows = []
    if grid:
        split = SPLITS.get(spec.get("split", "valid"), spec.get("split"))
        grids = "; ".join(f"`{f.name}` {', '.join(f.valid_ppl)}" for f in grid.values())
        rows.append(["protocol", f"each family (one distillation term beside the LM term) trained once per grid "
                                 f"weight at tuning seed {tune_seed(study) or MISSING} (not a test seed), scored on "
                                 f"the {split} split; the weight with the lowest "
                                 f"{split} PPL is the one tested. Grids: {grids}"])
    rows.append(["test seeds", f"{', '.join(str(s) for s in study.seeds)} ({plural(len(study.seeds), 'seed')}; "
                               "every method on every seed, scored on the test split)"])
    budget = study.manifest.get("budget") or {}
    if budget:
        rows.append(["budget point", f"{budget.get('max_steps')} steps, seeds "
                                     f"{', '.join(str(s) for s in budget.get('seeds') or [])}"])
    return rows


def stage_rows(study: StudyData) -> list[list[str]]:
    """Wall time per stage and in all, summed over the study's invocations (it resumes across sittings)."""
    invocations = study.manifest.get("invocations") or []
    if not invocations:
        return []
    stages: dict[str, float] = {}
    for inv in invocations:
        for k, v in (inv.get("stages") or {}).items():
            stages[k.removesuffix("_s")] = stages.get(k.removesuffix("_s"), 0.0) + float(v)
    total = sum(float(i.get("wall_s", 0)) for i in invocations)
    cpu = sum(float(i.get("cpu_s", 0)) for i in invocations)
    parts = ", ".join(f"{k} {v / 60:.1f} min" for k, v in stages.items())
    rows = [["study wall time", f"{total / 60:.1f} min ({total / 3600:.2f} h) over "
                                f"{plural(len(invocations), 'invocation')}"
                                + (f", {cpu / 3600:.2f} CPU-hours" if cpu else "")
                                + (f"; per stage, as recorded: {parts}" if parts else "")
                                + f"; started {invocations[0].get('started', MISSING)}"]]
    # A stage cut short by a kill before its time was saved is missing above; its runs' own times never are.
    run_time: dict[str, list[float]] = {}
    for run in (study.manifest.get("runs") or {}).values():
        spent = float(run.get("train_wall_s", 0)) + float(run.get("eval_wall_s", 0))
        if run.get("stage") and run.get("status") == "done":
            run_time.setdefault(run["stage"], []).append(spent)
    if run_time:
        jobs = study.manifest.get("jobs") or 1
        rows.append(["run time per stage", "; ".join(
            f"{stage} {plural(len(times), 'run')} timed, {sum(times) / 3600:.2f} h of run wall time (median "
            f"{statistics.median(times):.0f} s a run)" for stage, times in run_time.items())
            + f" ({jobs} run(s) at a time; training and evaluation, launcher start-up included)"])
    return rows
