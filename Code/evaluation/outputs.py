"""Where an evaluation writes: the files each job owns in its output folder, the refusal to replace earlier
results without `--overwrite`, and the list of files written that `evaluate_.py` prints at the end.

Light at import: the refusal comes before any model loads.
"""

from __future__ import annotations

import json
from pathlib import Path

from Code.evaluation.common import EvalError
from Code.run_folder import EVAL_METRICS

DOLLY_METRICS = "dolly_metrics.json"
METRICS = {"lm": EVAL_METRICS, "dolly": DOLLY_METRICS}  # each task's metrics file in a run's eval/

# The files each job writes into its output folder (glob patterns): what counts as its earlier results.
RESULTS: dict[str, tuple[str, ...]] = {
    "lm": (EVAL_METRICS, "summary.md", "layers.png", "tsne_*.png"),
    "dolly": (DOLLY_METRICS, "dolly_generations.jsonl"),
    "compare": ("compare.md", "compare.json", "compare.png"),
    "compare_dolly": ("compare_dolly.md", "compare_dolly.json"),
}


def earlier_results(out_dir: Path, job: str) -> list[Path]:
    """The files of `job` already in `out_dir`, sorted."""
    if not out_dir.is_dir():
        return []
    return sorted({p for pattern in RESULTS[job] for p in out_dir.glob(pattern) if p.is_file()})


def refuse_overwrite(out_dir: Path, job: str, overwrite: bool) -> None:
    """An EvalError naming the earlier results in `out_dir`, unless there are none or `overwrite`."""
    found = earlier_results(out_dir, job)
    if found and not overwrite:
        names = ", ".join(p.name for p in found[:4]) + (f" and {len(found) - 4} more" if len(found) > 4 else "")
        raise EvalError(f"{out_dir} already holds results of an earlier evaluation ({names}): pass --overwrite "
                        "to replace them, or --out-dir DIR to write elsewhere")


class Written:
    """The files one invocation wrote, in order (a file written twice is listed once)."""

    def __init__(self) -> None:
        self.paths: list[Path] = []

    def add(self, *paths: Path) -> None:
        for path in paths:
            if path not in self.paths:
                self.paths.append(Path(path))

    def json(self, path: Path, obj) -> Path:
        from Code.utils import atomic_write_json

        atomic_write_json(path, obj)
        self.add(path)
        return path

    def text(self, path: Path, text: str) -> Path:
        from Code.utils import atomic_write_text

        atomic_write_text(path, text)
        self.add(path)
        return path

    def jsonl(self, path: Path, rows: list[dict]) -> Path:
        return self.text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))

    def listing(self) -> str:
        """'wrote N files:' and one path a line (relative to the working folder when under it)."""
        lines = [f"wrote {len(self.paths)} file{'s' if len(self.paths) != 1 else ''}:"]
        cwd = Path.cwd().resolve()
        for path in self.paths:
            full = path.resolve()
            lines.append(f"  {full.relative_to(cwd) if full.is_relative_to(cwd) else full}")
        return "\n".join(lines)
