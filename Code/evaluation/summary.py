"""Markdown for evaluation results: one run's `summary.md` and the multi-run comparison table."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if value != value:  # nan
            return "nan"
        return f"{value:.{digits}g}"
    return str(value)


def _rate(v: float | None) -> str:
    return "n/a" if v is None else f"{v:,.0f}"


def _mb(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:.1f} MB"


def layers_table(layers: Sequence[dict]) -> list[str]:
    lines = ["| student layer | teacher layer | sliced WD | CKA | MSE | normalised MSE |", "|---|---|---|---|---|---|"]
    for row in layers:
        lines.append(
            f"| {row['student_layer']} | {row['teacher_layer']} | {_fmt(row.get('sliced_wd'))} | "
            f"{_fmt(row.get('cka'))} | {_fmt(row.get('mse'))} | {_fmt(row.get('mse_normalized'))} |"
        )
    return lines


def summary_markdown(metrics: dict, images: Sequence[str]) -> str:
    """Short human summary of one evaluation; `images` are file names relative to the eval folder."""
    s, t, data = metrics["student"], metrics["teacher"], metrics["data"]
    lines = [
        f"# Evaluation of `{metrics['checkpoint']}`",
        "",
        f"Teacher `{metrics['teacher_path']}`; data {data['source']} ({data['tokens_scored']} tokens scored, "
        f"window {data['window']}, stride {data['stride'] or 'non-overlapping'}); seed {metrics['seed']}; "
        f"device {metrics['device']} ({metrics['dtype']}).",
        "",
        "| model | perplexity | params | size on disk | tokens/s | latency |",
        "|---|---|---|---|---|---|",
    ]
    cost = metrics.get("cost", {})
    for name, ppl in (("teacher", t), ("student", s)):
        c = cost.get(name, {})
        lines.append(
            f"| {name} | {_fmt(ppl['ppl'], 5)} | {c.get('params', 0) / 1e6:.2f}M | {_mb(c.get('size_bytes'))} | "
            f"{_rate(c.get('tokens_per_s'))} | {_fmt(c.get('latency_ms'), 4)} ms |"
        )
    if "ppl_nonoverlap" in s:
        lines += ["", f"Non-overlapping windows: teacher {_fmt(t['ppl_nonoverlap'], 5)}, "
                      f"student {_fmt(s['ppl_nonoverlap'], 5)}."]
    if cost.get("speedup") is not None:
        lines += ["", f"Student forward is {cost['speedup']:.2f}x the teacher's speed with "
                      f"{cost['param_ratio']:.2f}x its parameters."]
    lines += [
        "",
        f"## Layer by layer ({metrics['layer_map_source']} layer map, {metrics['hidden_tokens']} token positions)",
        "",
        *layers_table(metrics["layers"]),
        "",
    ]
    definitions = metrics.get("definitions") or {}
    if definitions:
        lines += [*(f"- `{key}`: {text}." for key, text in definitions.items()), ""]
    lines += [f"![{name}]({name})" for name in images]
    gens = metrics.get("generations", {})
    if gens.get("student"):
        lines += ["", "## Generations (greedy / sampled)", ""]
        for ts, ss in zip(gens["teacher"], gens["student"], strict=True):
            lines.append(f"- **{ts['prompt']}**")
            for who, g in (("teacher", ts), ("student", ss)):
                lines.append(f"  - {who} greedy: {g['greedy'].strip()!r}")
                lines.append(f"  - {who} sampled: {g['sampled'].strip()!r}")
    for note in metrics.get("notes", []):
        lines += ["", f"Note: {note}"]
    return "\n".join(lines) + "\n"


def compare_markdown(runs: Sequence[tuple[str, dict]], image: str | None) -> str:
    """One table: PPL and mean distances per run, then the per-layer sliced WD / CKA side by side."""
    lines = ["# Comparison", "", "| run | student PPL | teacher PPL | mean sliced WD | mean CKA | mean norm. MSE |",
             "|---|---|---|---|---|---|"]

    def mean(rows: Sequence[dict], key: str) -> float | None:
        vals = [r[key] for r in rows if r.get(key) is not None]
        return sum(vals) / len(vals) if vals else None

    for name, m in runs:
        rows = m.get("layers", [])
        lines.append(
            f"| {name} | {_fmt(m['student']['ppl'], 5)} | {_fmt(m['teacher']['ppl'], 5)} | "
            f"{_fmt(mean(rows, 'sliced_wd'))} | {_fmt(mean(rows, 'cka'))} | {_fmt(mean(rows, 'mse_normalized'))} |"
        )
    indices = sorted({r["student_layer"] for _, m in runs for r in m.get("layers", [])})
    for key, title in (("sliced_wd", "Sliced WD"), ("cka", "CKA")):
        lines += ["", f"## {title} per student layer", "", "| run | " + " | ".join(f"s{i}" for i in indices) + " |",
                  "|---|" + "---|" * len(indices)]
        for name, m in runs:
            by = {r["student_layer"]: r.get(key) for r in m.get("layers", [])}
            lines.append(f"| {name} | " + " | ".join(_fmt(by.get(i)) for i in indices) + " |")
    if image:
        lines += ["", f"![comparison]({image})"]
    return "\n".join(lines) + "\n"


def run_name(path: Path) -> str:
    """A readable run label: the run folder's name, not `best`/`final`."""
    path = Path(path).resolve()
    return path.parent.name if path.name in ("best", "final") else path.name
