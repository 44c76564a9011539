"""Write the study's report from the runs on disk: Markdown, PNG figures and a PDF of it.

    python Code/make_report.py --study-dir study/cpu --out-dir Individual-Final-Project-Report

Reads only files (study.json, data meta.json, each run's args.json / metrics.jsonl / eval/metrics.json /
eval PNGs) through Code.run_folder; never imports the training or evaluation packages. Nothing in the report
is typed by hand: every number is computed from those files, and a run that is missing or unfinished is
listed, not fatal. The rows and sections are built in Code/report/; this file only writes them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from Code import REPO
from Code.processes import stamp as machine_stamp
from Code.report import figures as figs
from Code.report.data import load_study
from Code.report.document import build_markdown
from Code.report.fmt import num
from Code.report.setup import shown_path
from Code.utils import atomic_write_text

SIZE_LIMIT = 5 * 2**20


def build_report(study_dir: str | Path, out_dir: str | Path, pdf: bool = True, command: str | None = None) -> Path:
    """Write report.md, figures/ and report.pdf into `out_dir`; returns the Markdown path."""
    study = load_study(study_dir)
    out = Path(out_dir)
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    images = {
        "ppl": figs.ppl_figure(study, fig_dir),
        "layers_sliced_wd": figs.layers_figure(study, "sliced_wd", "sliced WD", fig_dir),
        "layers_cka": figs.layers_figure(study, "cka", "linear CKA", fig_dir),
        "val_loss": figs.val_figure(study, fig_dir),
        "loss_terms": figs.loss_terms_figure(study, fig_dir),
        "critic_wd": figs.critic_figure(study, fig_dir),
        "teacher": figs.teacher_figure(study, fig_dir),
        "tsne": figs.tsne_figure(study, fig_dir),
    }
    for stale in fig_dir.glob("*.png"):  # figures of an earlier report that this one does not draw
        if stale.name not in images.values():
            stale.unlink()
    root = Path(study_dir).resolve()
    shown = shown_path(root, root)  # relative to the repository (or the folder's own name), never absolute
    stamp = {**machine_stamp(), "command": command or f"python Code/make_report.py --study-dir {shown}",
             "study_dir": shown}
    md = out / "report.md"
    atomic_write_text(md, build_markdown(study, images, stamp))
    if pdf:
        from Code.report.pdf import render

        render(md, out / "report.pdf", title="Distillation study report")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    if size > SIZE_LIMIT:
        print(f"warning: {out} holds {size / 2**20:.1f} MB, over the 5 MB the repository keeps", file=sys.stderr)
    return md


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--study-dir", default=str(REPO / "study" / "cpu"), help="the study folder (default study/cpu)")
    p.add_argument("--out-dir", default=str(REPO / "Individual-Final-Project-Report"),
                   help="where report.md, figures/ and report.pdf go (default Individual-Final-Project-Report)")
    p.add_argument("--no-pdf", action="store_true", help="Markdown and figures only")
    args = p.parse_args(argv)
    try:
        md = build_report(args.study_dir, args.out_dir, pdf=not args.no_pdf)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(f"wrote {md}" + ("" if args.no_pdf else f" and {md.with_suffix('.pdf')}"))
    print(f"{num(sum(f.stat().st_size for f in md.parent.rglob('*') if f.is_file()) / 2**20)} MB in {md.parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
