"""Figures for evaluation: t-SNE of teacher vs student hidden states per matched layer, distance curves,
and the multi-run comparison plot. Files are written atomically (`Code.plotting.save_figure`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: evaluation runs on servers
import matplotlib.pyplot as plt
import numpy as np

from Code.plotting import save_figure  # the one atomic figure writer, shared with the report

TEACHER_COLOUR, STUDENT_COLOUR = "tab:blue", "tab:orange"


def tsne_embed(teacher: np.ndarray, student: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One joint 2-D t-SNE of both point sets (so distances between colours mean something)."""
    from sklearn.decomposition import PCA  # scikit-learn takes seconds to import: only when plotting
    from sklearn.manifold import TSNE

    points = np.concatenate([teacher, student]).astype(np.float32)
    n = len(points)
    if points.shape[1] > 50 and n > 50:  # PCA first: the usual t-SNE practice, and much faster
        points = PCA(n_components=50, random_state=seed).fit_transform(points)
    perplexity = float(min(30.0, max(2.0, (n - 1) / 3.0)))
    emb = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, max_iter=500).fit_transform(
        points
    )
    return emb[: len(teacher)], emb[len(teacher):]


def _scatter(ax: plt.Axes, t: np.ndarray, s: np.ndarray, title: str) -> None:
    ax.scatter(t[:, 0], t[:, 1], s=6, alpha=0.6, c=TEACHER_COLOUR, label="teacher")
    ax.scatter(s[:, 0], s[:, 1], s=6, alpha=0.6, c=STUDENT_COLOUR, label="student")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def tsne_plots(
    embeddings: Sequence[tuple[str, np.ndarray, np.ndarray]], out_dir: Path
) -> list[Path]:
    """One PNG per layer (`tsne_<name>.png`) and a grid of all layers (`tsne_grid.png`)."""
    paths = []
    for name, t, s in embeddings:
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        _scatter(ax, t, s, f"t-SNE {name}")
        ax.legend(loc="best", fontsize=8, markerscale=2)
        paths.append(save_figure(fig, out_dir / f"tsne_{name}.png"))
    if embeddings:
        cols = min(3, len(embeddings))
        rows = (len(embeddings) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.6 * rows), squeeze=False)
        for ax, (name, t, s) in zip(axes.flat, embeddings, strict=False):
            _scatter(ax, t, s, name)
        for ax in list(axes.flat)[len(embeddings):]:
            ax.axis("off")
        axes.flat[0].legend(loc="best", fontsize=7, markerscale=2)
        fig.suptitle("teacher (blue) vs student (orange) hidden states")
        paths.append(save_figure(fig, out_dir / "tsne_grid.png"))
    return paths


def layer_plot(layers: Sequence[dict], out_path: Path, title: str = "") -> Path:
    """Sliced WD, CKA and normalised MSE against matched layer, for one run."""
    labels = [f"s{row['student_layer']}/t{row['teacher_layer']}" for row in layers]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, key, name in zip(axes, ("sliced_wd", "cka", "mse_normalized"), ("sliced WD (lower better)",
                             "linear CKA (higher better)", "normalised MSE (lower better)"), strict=True):
        values = [np.nan if row.get(key) is None else row[key] for row in layers]
        ax.plot(range(len(values)), values, marker="o")
        ax.set_xticks(range(len(values)), labels, rotation=45, fontsize=8)
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, y=1.04)
    return save_figure(fig, out_path)


def compare_plot(runs: Sequence[tuple[str, dict]], out_path: Path) -> Path:
    """Several runs in one figure: student PPL bars (teacher dashed) and per-layer sliced WD and CKA."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    names = [name for name, _ in runs]
    x = np.arange(len(runs))
    # grouped bars: runs may have different teachers, so each run shows its own
    for offset, who, colour in ((-0.2, "teacher", TEACHER_COLOUR), (0.2, "student", STUDENT_COLOUR)):
        values = [m.get(who, {}).get("ppl", np.nan) for _, m in runs]
        axes[0].bar(x + offset, values, width=0.4, color=colour, label=who)
    axes[0].legend(fontsize=8)
    finite = [v for _, m in runs for v in (m.get("student", {}).get("ppl"), m.get("teacher", {}).get("ppl"))
              if v is not None and np.isfinite(v) and v > 0]
    if finite and max(finite) / min(finite) > 20:  # runs on different data/teachers: keep all bars readable
        axes[0].set_yscale("log")
    axes[0].set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    axes[0].set_title("perplexity (lower better)", fontsize=9)
    for ax, key, title in ((axes[1], "sliced_wd", "sliced WD per layer"), (axes[2], "cka", "CKA per layer")):
        for name, m in runs:
            rows = m.get("layers", [])
            ax.plot([r["student_layer"] for r in rows], [np.nan if r.get(key) is None else r[key] for r in rows],
                    marker="o", label=name)
        ax.set_xlabel("student hidden-state index")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, out_path)
