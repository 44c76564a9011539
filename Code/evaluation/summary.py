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
    lines = ["| student layer | teacher layer | sliced WD | exact W1 (std units) | CKA | MSE | normalised MSE |",
             "|---|---|---|---|---|---|---|"]
    for row in layers:
        lines.append(
            f"| {row['student_layer']} | {row['teacher_layer']} | {_fmt(row.get('sliced_wd'))} | "
            f"{_fmt(row.get('exact_w1'))} | {_fmt(row.get('cka'))} | {_fmt(row.get('mse'))} | "
            f"{_fmt(row.get('mse_normalized'))} |"
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
    ]
    ood = metrics.get("ood")
    ood_head, ood_rule = (" out-of-domain PPL | out-of-domain bits/byte |", "---|---|") if ood else ("", "")
    lines += [f"| model | perplexity | bits/byte |{ood_head} params | size on disk | tokens/s | latency |",
              f"|---|---|---|{ood_rule}---|---|---|---|"]
    cost = metrics.get("cost", {})
    for name, ppl in (("teacher", t), ("student", s)):
        c = cost.get(name, {})
        ood_cell = f" {_fmt(ppl.get('ood_ppl'), 5)} | {_fmt(ppl.get('ood_bpb'), 4)} |" if ood else ""
        lines.append(
            f"| {name} | {_fmt(ppl['ppl'], 5)} | {_fmt(ppl.get('bpb'), 4)} |{ood_cell} "
            f"{c.get('params', 0) / 1e6:.2f}M | "
            f"{_mb(c.get('size_bytes'))} | {_rate(c.get('tokens_per_s'))} | {_fmt(c.get('latency_ms'), 4)} ms |"
        )
    if ood:
        lines += ["", ood_sentence(ood)]
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


def ood_sentence(ood: dict) -> str:
    """Where the out-of-domain perplexity comes from, in one sentence."""
    names = [Path(f).name for f in ood.get("files", [])]
    shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    stripped = ood.get("gutenberg_stripped") or []
    return (f"Out-of-domain text: {len(names)} file(s) ({shown}), {ood.get('tokens', 0):,} tokens scored with the "
            f"same window and stride" + (f", at most {ood['max_tokens']:,} in all, shared between the files"
                                         if ood.get("max_tokens") else "")
            + (f"; Project Gutenberg header/footer cut off in {len(stripped)} file(s)" if stripped else "")
            + (f"; put into {ood['conventions']} conventions" if ood.get("conventions", "raw") != "raw" else "")
            + ". Bits per byte: summed NLL over ln 2 x the UTF-8 bytes the scored tokens decode to.")


def compare_markdown(runs: Sequence[tuple[str, dict]], image: str | None) -> str:
    """One table: PPL and mean distances per run, then the per-layer sliced WD / CKA side by side."""
    ood = any("ood_ppl" in m.get("student", {}) for _, m in runs)  # an OOD column only where there are numbers
    lines = ["# Comparison", "", "| run | student PPL | teacher PPL |" + (" student OOD PPL | teacher OOD PPL |"
                                                                       if ood else "")
             + " mean sliced WD | mean CKA | mean norm. MSE |", "|---|---|---|" + ("---|---|" if ood else "")
             + "---|---|---|"]

    def mean(rows: Sequence[dict], key: str) -> float | None:
        vals = [r[key] for r in rows if r.get(key) is not None]
        return sum(vals) / len(vals) if vals else None

    for name, m in runs:
        rows = m.get("layers", [])
        ood_cells = (f"{_fmt(m['student'].get('ood_ppl'), 5)} | {_fmt(m['teacher'].get('ood_ppl'), 5)} | "
                     if ood else "")
        lines.append(
            f"| {name} | {_fmt(m['student']['ppl'], 5)} | {_fmt(m['teacher']['ppl'], 5)} | {ood_cells}"
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
