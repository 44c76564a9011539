"""Writing matplotlib figures, shared by evaluation and the report (neither imports the other).

Headless (the Agg backend): evaluation and the report run on servers.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from Code.utils import atomic_write  # noqa: E402


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write `fig` to `path` atomically (Code.utils.atomic_write) in the format of its suffix, then close it.

    The format comes from `path`'s suffix and is passed explicitly, so it never depends on the name of
    the temporary file savefig actually writes.
    """
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight"))
    finally:
        plt.close(fig)
    return path
