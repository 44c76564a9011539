"""The report's figures, drawn from a loaded study (Code.report.data.StudyData): PNGs, written atomically.

Each function returns the written file's name, or None when the study has nothing to draw for it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from Code.plotting import save_figure  # noqa: E402
from Code.report.data import Run, StudyData  # noqa: E402
from Code.report.stats import mean, std  # noqa: E402

DPI = 110


def colors(methods: list[str]) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab10")
    return {m: cmap(i % 10) for i, m in enumerate(methods)}


def _auto_log(ax, values: list[float], ratio: float) -> None:
    """A log axis when the values span more than `ratio` (one diverged method would flatten the rest)."""
    positive = [v for v in values if v == v and v > 0]
    if positive and max(positive) / min(positive) > ratio:
        ax.set_yscale("log")


def _save(fig, path: Path) -> str:
    """Write the PNG atomically (Code.plotting.save_figure); the file's name for the Markdown."""
    return save_figure(fig, path, dpi=DPI).name


def ppl_figure(study: StudyData, out: Path) -> str | None:
    methods = [m for m in study.methods if study.of(m)]
    if not methods:
        return None
    col = colors(study.methods)
    fig, ax = plt.subplots(figsize=(6.8, 3.2))
    for i, m in enumerate(methods):
        values = [r.test_ppl for r in study.of(m)]
        ax.bar(i, mean(values), color=col[m], alpha=0.6, yerr=std(values) if len(values) > 1 else None, capsize=4)
        ax.scatter([i + x for x in np.linspace(-0.15, 0.15, len(values))], values, color="k", s=12, zorder=3)
    _auto_log(ax, [r.test_ppl for m in methods for r in study.of(m)], 4.0)
    teacher = [r.eval["teacher"]["ppl"] for m in methods for r in study.of(m)]
    ax.axhline(teacher[0], color="gray", ls="--", lw=1, label=f"teacher {teacher[0]:.1f}")
    ax.set_xticks(range(len(methods)), methods, rotation=20)
    ax.set_ylabel("test perplexity")
    ax.set_title("Student test perplexity (bar: mean, error bar: std over seeds, dots: seeds)")
    ax.legend(loc="best", fontsize=8)
    return _save(fig, out / "ppl.png")


def layers_figure(study: StudyData, key: str, title: str, out: Path) -> str | None:
    col = colors(study.methods)
    fig, ax = plt.subplots(figsize=(6.8, 3.2))
    drawn: list[float] = []
    all_layers: set[int] = set()
    for k, m in enumerate(study.methods):
        per_run = [r.layer_values(key) for r in study.of(m)]
        layers = sorted({i for d in per_run for i in d})
        if not layers:
            continue
        mu = [mean([d[i] for d in per_run if i in d]) for i in layers]
        sd = [std([d[i] for d in per_run if i in d]) for i in layers]
        shift = (k - (len(study.methods) - 1) / 2) * 0.03  # methods side by side, not on top of each other
        ax.errorbar([i + shift for i in layers], mu, yerr=[0 if s != s else s for s in sd], label=m, color=col[m],
                    marker="o", capsize=3, lw=1.2)
        drawn += mu
        all_layers |= set(layers)
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xticks(sorted(all_layers))
    _auto_log(ax, drawn, 10.0)
    ax.set_xlabel("student layer (hidden-state index)")
    ax.set_ylabel(title)
    ax.set_title(f"{title} to the matched teacher layer (mean, std over seeds)")
    ax.legend(fontsize=7, ncol=4)
    return _save(fig, out / f"layers_{key}.png")


def _mean_curve(runs: list[Run], kind: str, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """x = tokens (train) or step (val) shared by the runs; mean and std of `key` over runs."""
    series = []
    for run in runs:
        pts = {int(r["step"]): r[key] for r in run.kind(kind) if r.get(key) is not None}
        if pts:
            series.append(pts)
    if not series:
        return None
    steps = sorted(set.intersection(*(set(s) for s in series)))
    if not steps:
        return None
    values = np.array([[s[k] for k in steps] for s in series], dtype=float)
    per_step = run_tokens_per_step(runs[0])
    x = np.array(steps, dtype=float) * (per_step or 1)
    return x, values.mean(0), values.std(0, ddof=1) if len(series) > 1 else np.zeros(len(steps))


def run_tokens_per_step(run: Run) -> float | None:
    train = [r for r in run.kind("train") if r.get("tokens")]
    return train[-1]["tokens"] / train[-1]["step"] if train else None


def val_figure(study: StudyData, out: Path) -> str | None:
    col = colors(study.methods)
    fig, ax = plt.subplots(figsize=(6.8, 3.2))
    drawn = False
    for m in study.methods:
        curve = _mean_curve(study.of(m, done_only=False), "val", "val/loss")
        if curve is None:
            continue
        x, mu, sd = curve
        ax.plot(x, mu, marker="o", color=col[m], label=m)
        ax.fill_between(x, mu - sd, mu + sd, color=col[m], alpha=0.15)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("training tokens")
    ax.set_ylabel("validation LM loss")
    ax.set_title("Validation loss during training (mean, band: std over seeds)")
    ax.legend(fontsize=7, ncol=4)
    return _save(fig, out / "val_loss.png")


def _small_multiples(study: StudyData, pick: Callable[[str], bool], title: str, name: str, out: Path,
                     label: Callable[[str], str]) -> str | None:
    panels = []
    for m in study.methods:
        runs = study.of(m, done_only=False)
        keys = sorted({k for r in runs for rec in r.kind("train") for k in rec if pick(k)})
        if keys:
            panels.append((m, runs, keys))
    if not panels:
        return None
    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.0 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (m, runs, keys) in zip(axes.flat, panels, strict=False):
        for key in keys:
            curve = _mean_curve(runs, "train", key)
            if curve is not None:
                x, mu, sd = curve
                ax.plot(x, mu, lw=1, label=label(key))
                ax.fill_between(x, mu - sd, mu + sd, alpha=0.15)
        ax.set_title(m, fontsize=8)
        ax.tick_params(labelsize=6)
        ax.xaxis.get_offset_text().set_fontsize(6)
        ax.legend(fontsize=6)
    fig.suptitle(title, fontsize=10)
    fig.supxlabel("training tokens", fontsize=8)
    fig.tight_layout()
    return _save(fig, out / name)


def loss_terms_figure(study: StudyData, out: Path) -> str | None:
    def is_term(k: str) -> bool:  # each loss term, not its per-layer parts or the critic estimates
        return k.startswith("loss/") and k.count("/") == 1
    return _small_multiples(study, is_term, "Training loss terms (unweighted; mean over seeds, band: std)",
                            "loss_terms.png", out, lambda k: k.removeprefix("loss/"))


def critic_figure(study: StudyData, out: Path) -> str | None:
    return _small_multiples(study, lambda k: k.startswith("loss/wd/layer"),
                            "Critic estimate of the Wasserstein-1 distance per matched layer", "critic_wd.png", out,
                            lambda k: k.removeprefix("loss/wd/"))


def tsne_figure(study: StudyData, out: Path) -> str | None:
    """Each method's t-SNE grid from its first evaluated seed, stacked."""
    picks = []
    for m in study.methods:
        for r in study.of(m):
            grid = r.path / "eval" / "tsne_grid.png"
            if grid.is_file():
                picks.append((m, r.seed, plt.imread(grid)))
                break
    if not picks:
        return None
    cols = 2
    rows = (len(picks) + 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.8, 2.0 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (m, seed, img) in zip(axes.flat, picks, strict=False):
        ax.imshow(img)
        ax.set_title(f"{m} (seed {seed})", fontsize=9)
    fig.suptitle("t-SNE of teacher and student hidden states per matched layer (from each run's eval/)",
                 fontsize=10)
    fig.tight_layout()
    return _save(fig, out / "tsne.png")


def teacher_figure(study: StudyData, out: Path) -> str | None:
    run = study.teacher_run
    if run is None:
        return None
    train = [(r["tokens"], r["loss"]) for r in run.kind("train") if r.get("loss") is not None and r.get("tokens")]
    val = [(r["step"], r["val/loss"]) for r in run.kind("val") if r.get("val/loss") is not None]
    if not train:
        return None
    per_step = run_tokens_per_step(run) or 1
    fig, ax = plt.subplots(figsize=(5, 2.4))
    ax.plot(*zip(*train, strict=True), lw=1, label="train loss")
    if val:
        ax.plot([s * per_step for s, _ in val], [v for _, v in val], "o-", label="validation loss")
    ax.set_xlabel("training tokens")
    ax.set_ylabel("LM loss")
    ax.set_title("Teacher pretraining", fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, out / "teacher.png")
