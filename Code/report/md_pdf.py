"""A small Markdown -> PDF renderer on matplotlib alone (offline, no LaTeX, no browser).

Handles what the report writes: headings, paragraphs, bullet lists, pipe tables, fenced code, images
(`![alt](file.png)`, relative to the Markdown file). Inline markup (`**`, backticks, links) is flattened.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.backends.backend_pdf import PdfPages  # noqa: E402

from Code.utils import atomic_write  # noqa: E402

PAGE_W, PAGE_H, MARGIN = 8.27, 11.69, 0.7   # A4, inches
WIDTH = PAGE_W - 2 * MARGIN
SANS, MONO = 0.53, 0.61                      # average glyph width per point of font size (DejaVu)
IMAGE_DPI = 110                              # PNGs are shown at their pixel size at this dpi (or page width)
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")


def inline(text: str) -> str:
    return _LINK.sub(r"\1", text).replace("**", "").replace("`", "")


class Pages:
    def __init__(self, pdf: PdfPages) -> None:
        self.pdf, self.fig, self.y, self.number = pdf, None, 0.0, 0

    def new(self) -> None:
        self.flush()
        self.number += 1
        self.fig = plt.figure(figsize=(PAGE_W, PAGE_H))
        self.fig.text(0.5, 0.35 / PAGE_H, str(self.number), ha="center", fontsize=8, color="gray")
        self.y = MARGIN

    def flush(self) -> None:
        if self.fig is not None:
            self.pdf.savefig(self.fig)
            plt.close(self.fig)
            self.fig = None

    def room(self, height: float) -> None:
        if self.fig is None or self.y + height > PAGE_H - MARGIN:
            self.new()

    def line(self, text: str, size: float, x: float = 0.0, **kw) -> None:
        h = size * 1.4 / 72
        self.room(h)
        self.fig.text((MARGIN + x) / PAGE_W, 1 - self.y / PAGE_H, text, fontsize=size, va="top",
                      parse_math=False, **kw)
        self.y += h

    def wrapped(self, text: str, size: float, indent: float = 0.0, first: str = "", **kw) -> None:
        chars = max(20, int((WIDTH - indent) * 72 / (size * SANS)))
        lines = textwrap.wrap(inline(text), chars) or [""]
        for i, ln in enumerate(lines):
            self.line((first if i == 0 else " " * len(first)) + ln, size, x=indent, **kw)

    def table(self, rows: list[list[str]]) -> None:
        """Monospace grid; columns too wide for the page are wrapped (widest first) rather than shrunk."""
        ncol = max(len(r) for r in rows)
        rows = [[inline(c) for c in r] + [""] * (ncol - len(r)) for r in rows]
        numeric = [all(re.fullmatch(r"[-+<\[\d.,±()x% a-z]*\d[^A-Za-z]*", r[i] or "0") for r in rows[1:])
                   for i in range(ncol)]
        widths = [max(len(r[i]) for r in rows) for i in range(ncol)]
        # shrink the font down to 5.5 pt first; then wrap text columns (widest first), never numbers
        size = max(5.5, min(7.0, WIDTH * 72 / ((sum(widths) + 2 * (ncol - 1)) * MONO)))
        room = int(WIDTH * 72 / (size * MONO)) - 2 * (ncol - 1)
        while sum(widths) > room:
            text_cols = [i for i in range(ncol) if not numeric[i] and widths[i] > 12]
            if not text_cols:
                break
            widest = max(text_cols, key=lambda i: widths[i])
            widths[widest] = max(12, widths[widest] - (sum(widths) - room))
        for k, r in enumerate(rows):
            cells = [textwrap.wrap(c, w, break_long_words=False) or [""] for c, w in zip(r, widths, strict=True)]
            for j in range(max(len(c) for c in cells)):
                parts = []
                for i, (c, w) in enumerate(zip(cells, widths, strict=True)):
                    text = c[j] if j < len(c) else ""
                    parts.append(text.rjust(w) if numeric[i] and i > 0 else text.ljust(w))  # may overflow
                self.line("  ".join(parts).rstrip(), size, family="DejaVu Sans Mono",
                          weight="bold" if k == 0 else "normal")
            if k == 0:
                self.room(0.05)
                self.fig.add_artist(plt.Line2D([MARGIN / PAGE_W, 1 - MARGIN / PAGE_W],
                                               [1 - (self.y + 0.01) / PAGE_H] * 2, color="gray", lw=0.5))
                self.y += 0.03
        self.y += 0.1

    def image_size(self, path: Path) -> tuple[float, float]:
        """Inches on the page: the PNG's own size at IMAGE_DPI, shrunk to fit the text width and one page."""
        h_px, w_px = plt.imread(path).shape[:2]
        w = min(WIDTH, w_px / IMAGE_DPI)
        h = w * h_px / w_px
        if h > PAGE_H - 2 * MARGIN - 0.3:
            h = PAGE_H - 2 * MARGIN - 0.3
            w = h * w_px / h_px
        return w, h

    def image(self, path: Path) -> None:
        img = plt.imread(path)
        w, h = self.image_size(path)
        self.room(h + 0.1)
        ax = self.fig.add_axes([(MARGIN + (WIDTH - w) / 2) / PAGE_W, 1 - (self.y + h) / PAGE_H, w / PAGE_W, h / PAGE_H])
        ax.imshow(img, interpolation="antialiased")
        ax.axis("off")
        self.y += h + 0.15


def render(md_path: str | Path, pdf_path: str | Path, title: str = "") -> Path:
    """Render `md_path` to `pdf_path`, atomically (Code.utils.atomic_write: a temp file, then renamed)."""
    md_path, pdf_path = Path(md_path), Path(pdf_path)
    lines = md_path.read_text(encoding="utf-8").splitlines()
    atomic_write(pdf_path, lambda tmp: write_pdf(lines, md_path.parent, tmp, title or md_path.stem))
    return pdf_path


def write_pdf(lines: list[str], base: Path, out: Path, title: str) -> None:
    """The PDF of Markdown `lines` (images relative to `base`) written to `out`, one block at a time."""
    with PdfPages(out, metadata={"Title": title, "CreationDate": None}) as pdf:
        pages = Pages(pdf)
        pages.new()
        para: list[str] = []
        i = 0
        while i < len(lines):
            i = block(pages, lines, i, para, base)
        flush_para(pages, para)
        pages.flush()


def flush_para(pages: Pages, para: list[str]) -> None:
    """Set the pending paragraph lines as one wrapped paragraph."""
    if para:
        pages.wrapped(" ".join(para), 9)
        pages.y += 0.06
        para.clear()


def block(pages: Pages, lines: list[str], i: int, para: list[str], base: Path) -> int:
    """Lay out the block starting at line `i` (code, heading, table, image, bullet, text); the next line."""
    raw = lines[i]
    s = raw.strip()
    if s.startswith("```"):
        flush_para(pages, para)
        i += 1
        while i < len(lines) and not lines[i].strip().startswith("```"):
            pages.line(lines[i], 7.5, family="DejaVu Sans Mono")
            i += 1
        pages.y += 0.06
    elif s.startswith("#"):
        flush_para(pages, para)
        heading(pages, s, next((ln.strip() for ln in lines[i + 1 :] if ln.strip()), ""), base)
    elif s.startswith("|"):
        flush_para(pages, para)
        rows = []
        while i < len(lines) and lines[i].strip().startswith("|"):
            cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells if c):
                rows.append(cells)
            i += 1
        pages.table(rows)
        return i
    elif re.fullmatch(r"!\[[^\]]*\]\([^)]+\)", s):
        target = base / s[s.index("(") + 1 : -1]
        if target.is_file():
            # a caption line just before a figure goes to the figure's page, not left behind
            pages.room(pages.image_size(target)[1] + 0.1 + (0.4 if para else 0.0))
        flush_para(pages, para)
        if target.is_file():
            pages.image(target)
    elif s.startswith(("- ", "* ")) or re.match(r"\d+\. ", s):
        flush_para(pages, para)
        indent = (len(raw) - len(raw.lstrip())) / 2 * 0.2
        marker = "• " if s[0] in "-*" else s.split(" ", 1)[0] + " "
        pages.wrapped(s.split(" ", 1)[1] if " " in s else "", 9, indent=0.15 + indent, first=marker)
    elif not s:
        flush_para(pages, para)
    else:
        para.append(s)
    return i + 1


def heading(pages: Pages, s: str, following: str, base: Path) -> None:
    """A heading, kept on one page with what follows it (all of it when that is a figure)."""
    level = len(s) - len(s.lstrip("#"))
    size = {1: 16, 2: 13, 3: 11}.get(level, 10)
    figure = base / following[following.find("(") + 1 : -1] if following.startswith("![") else None
    pages.room(size * 4 / 72 + (pages.image_size(figure)[1] if figure and figure.is_file() else 0.0))
    pages.y += 0.08 if level > 1 else 0
    pages.wrapped(s.lstrip("#").strip(), size, weight="bold")
    pages.y += 0.04
