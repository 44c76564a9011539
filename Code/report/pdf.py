"""report.md -> report.pdf with markdown-pdf (PyPI `markdown-pdf`: markdown-it-py for the Markdown, PyMuPDF
for the pages).

Chosen because it renders the report's GitHub-style tables, inline code and PNG figures with neither a
browser nor LaTeX, installs from wheels on Linux, macOS and Windows, and is maintained. The CSS keeps the
wide tables inside the page (small type) and the figures at the page width.
"""

from __future__ import annotations

from pathlib import Path

from Code.utils import atomic_write

CSS = """
body { font-family: sans-serif; font-size: 9pt; line-height: 1.3; }
h1 { font-size: 15pt; } h2 { font-size: 12.5pt; margin-top: 14pt; } h3 { font-size: 11pt; }
table { border-collapse: collapse; margin: 4pt 0; }
th, td { border: 0.5pt solid #999; padding: 1.5pt 3pt; font-size: 7pt; vertical-align: top; }
th { background-color: #eee; }
code { font-family: monospace; font-size: 8pt; }
pre { background-color: #f4f4f4; padding: 4pt; font-size: 8pt; }
img { width: 100%; }
"""


def render(md_path: str | Path, pdf_path: str | Path, title: str) -> Path:
    """Render `md_path` (figures relative to its folder) to `pdf_path`, atomically."""
    from markdown_pdf import MarkdownPdf, Section

    md_path, pdf_path = Path(md_path), Path(pdf_path)
    pdf = MarkdownPdf(toc_level=2, optimize=True)
    pdf.meta["title"] = title
    pdf.add_section(Section(md_path.read_text(encoding="utf-8"), root=str(md_path.parent), paper_size="A4",
                            borders=(36, 36, -36, -36)), user_css=CSS)
    atomic_write(pdf_path, lambda tmp: pdf.save(tmp))
    return pdf_path
