"""Write the study's report from the runs on disk: Markdown, PNG figures and a PDF of it.

    python Code/make_report.py --study-dir study/cpu --out-dir Individual-Final-Project-Report

Reads only files (study.json, data meta.json, each run's args.json / metrics.jsonl / eval/metrics.json /
eval PNGs); never imports the training loop. Nothing in the report is typed by hand: every number is
computed from those files, and a run that is missing or unfinished is listed, not fatal.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

from Code import REPO  # noqa: E402
from Code.report import figures as figs  # noqa: E402
from Code.report.data import StudyData, load_study  # noqa: E402
from Code.report.tables import (  # noqa: E402
    MISSING,
    comparisons,
    conclusion,
    cost_table,
    grad_share_table,
    layer_table,
    num,
    ppl_table,
    run_of,
    sensitivity_table,
    status_lines,
    table,
    teacher_ppl,
    tests_table,
)
from Code.utils import atomic_write_text  # noqa: E402

SIZE_LIMIT = 5 * 2**20


class ReportError(ValueError):
    """The report cannot be written as asked."""


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _commit(state: dict | None) -> str:
    if not state or not state.get("commit"):
        return "unknown"
    return state["commit"][:12] + (" with uncommitted changes" if state.get("dirty") else "")


def _short(path: str) -> str:
    """A path as the reader would type it: relative to the repository when inside it."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except (ValueError, OSError):
        return path


def _config(path: str | None) -> dict:
    try:
        return json.loads((Path(path) / "config.json").read_text()) if path else {}
    except (OSError, json.JSONDecodeError):
        return {}


def model_rows(study: StudyData) -> list[list[str]]:
    """Setup rows for the teacher and the student: where they come from, architecture, parameters."""
    man, ref = study.manifest, run_of(study)
    teacher = man.get("teacher") or {}
    t_path = teacher.get("path") or (ref.args.get("teacher") if ref else None)
    shown = _short(t_path) if t_path else None
    t_cfg = _config(t_path)
    t_cost = (ref.eval or {}).get("cost", {}).get("teacher", {}) if ref else {}
    s_cost = (ref.eval or {}).get("cost", {}).get("student", {}) if ref else {}
    s_cfg = _config(str(ref.path / "final")) if ref else {}
    arch = "{n_layer} layers, width {n_embd}, {n_head} heads, context {n_positions}, vocabulary {vocab_size}"
    rows = [
        ["preset", f"`{man.get('preset', 'n/a')}`"],
        ["teacher", f"{teacher.get('source', 'n/a')}: `{shown}`"
                    + (f" ({arch.format(**t_cfg)})" if t_cfg.get("n_layer") else "")
                    + (f", {t_cost['params'] / 1e6:.2f}M parameters" if t_cost.get("params") else "")
                    + teacher_scores(study)],
    ]
    if ref and s_cfg:
        params = f", {s_cost['params'] / 1e6:.2f}M parameters" if s_cost.get("params") else ""
        rows.append(["student", f"teacher blocks {ref.info.get('student_layers')} copied (same initialization for "
                                f"every method; {arch.format(**s_cfg)}{params})"])
    return rows


def teacher_scores(study: StudyData) -> str:
    """The teacher's test and out-of-domain perplexity, as its setup row states them."""
    test, ood = teacher_ppl(study), teacher_ppl(study, ood=True)
    if test is None:
        return ""
    return f"; test PPL {num(test)}, out-of-domain PPL " + (num(ood) if ood is not None else MISSING)


def ood_row(study: StudyData) -> list[list[str]]:
    """Setup row for the out-of-domain text (from the first evaluation that scored one)."""
    ood = next((r.eval["ood"] for r in study.runs.values() if r.status == "done" and (r.eval or {}).get("ood")), None)
    if not ood:
        return [["out-of-domain text", f"{MISSING} (no run was evaluated with `--ood-text`)"]]
    files = [Path(f) for f in ood.get("files", [])]
    folders = sorted({_short(str(f.parent)) for f in files})
    names = ", ".join(f.stem for f in files)
    stripped = ood.get("gutenberg_stripped") or []
    cap = f", at most {ood['max_tokens']:,} in all, shared equally between the files" if ood.get("max_tokens") else ""
    return [["out-of-domain text", f"{len(files)} file(s) in `{'`, `'.join(folders)}` ({names}): "
                                   f"{ood.get('tokens', 0):,} tokens scored with the run's tokenizer, the same "
                                   f"window and stride{cap}"
                                   + (f"; Project Gutenberg header/footer cut off in {len(stripped)} file(s)"
                                      if stripped else "")]]


def data_rows(study: StudyData) -> list[list[str]]:
    """Setup rows for the data, the token budget, the evaluation and the seeds."""
    meta, ref = study.meta, run_of(study)
    rows = []
    if meta:
        splits = ", ".join(f"{k} {v['tokens']:,}" for k, v in meta.get("splits", {}).items())
        rows.append(["data", f"{meta.get('source')}; tokenizer {meta.get('tokenizer')} (vocabulary "
                             f"{meta.get('vocab_size')}); tokens per split: {splits}"])
    if ref:
        a = ref.args
        world = next((r.get("world_size") for r in ref.kind("done")), 1) or 1
        budget = {r.train_tokens for r in study.runs.values() if r.status == "done"}
        rows.append(["token budget", f"{a.get('max_steps')} steps x {a.get('micro_batch_size')} sequences x "
                                     f"{a.get('seq_len')} tokens x {a.get('grad_accum')} accumulation x {world} "
                                     f"rank(s) = {', '.join(f'{b:,}' for b in sorted(x for x in budget if x))} "
                                     f"training tokens per run; lr {a.get('lr')}, warm-up {a.get('warmup_steps')}, "
                                     f"precision {a.get('precision')}"])
        data = (ref.eval or {}).get("data", {})
        rows.append(["evaluation", f"`final/` of each run; {data.get('tokens_scored', 0):,} test tokens scored "
                                   f"(window {data.get('window')}, stride {data.get('stride') or 'non-overlapping'}); "
                                   f"layer metrics on {ref.eval.get('hidden_tokens')} token positions; eval seed "
                                   f"{ref.eval.get('seed')} (same tokens for every run)"])
        rows += ood_row(study)
    rows.append(["seeds", ", ".join(str(s) for s in study.seeds)])
    return rows


def machine_rows(study: StudyData, stamp: dict) -> list[list[str]]:
    """Setup rows for the hardware, the study's wall time and the code version."""
    man = study.manifest
    hw = man.get("hardware") or {}
    invocations = man.get("invocations") or []
    gpus = ", ".join(hw.get("gpus") or []) or "none"
    rows = [["hardware", f"{hw.get('cpu', 'n/a')}, {hw.get('cpu_cores', '?')} cores, {hw.get('memory_gb', '?')} "
                         f"GB RAM, GPUs: {gpus}; {man.get('jobs', 1)} run(s) at a time, "
                         f"{man.get('threads_per_job', '?')} thread(s) each"]]
    if invocations:
        total = sum(float(i.get("wall_s", 0)) for i in invocations)
        first = invocations[0]
        stages = ", ".join(f"{k.removesuffix('_s')} {v:.0f} s" for k, v in (first.get("stages") or {}).items())
        cpu = f", {first['cpu_s'] / 60:.1f} CPU-minutes" if first.get("cpu_s") else ""
        load = first.get("load_average_start"), first.get("load_average_end")
        loads = f"; load average (1, 5, 15 min) {load[0]} at start, {load[1]} at end" if all(load) else ""
        rows.append(["study wall time", f"{total / 60:.1f} min over {len(invocations)} invocation(s); the first "
                                        f"took {first.get('wall_s', 0) / 60:.1f} min{cpu} (started "
                                        f"{first.get('started')}" + (f"; {stages}" if stages else "") + f"{loads})"])
    rows.append(["code", f"study ran at commit {_commit(man.get('git'))}; report written at commit "
                         f"{_commit(stamp['git'])} on {stamp['date']}"])
    return rows


def method_rows(study: StudyData) -> list[list[str]]:
    """One row per method from its first run's args.json: loss, weights, settings, layer map, launcher."""
    rows = []
    for m in study.methods:
        r = next(iter(study.of(m, done_only=False)), None)
        if r is None or not r.args:
            rows.append([m, "n/a", "n/a", "n/a", "n/a"])
            continue
        a = r.args
        extra = [f"T={a.get('temperature')}"] if "kd" in str(a.get("loss")) else []
        if "wd" in str(a.get("loss")).split("+"):
            extra.append(f"critics {a.get('critic_optimizer')} lr {a.get('critic_lr')} x{a.get('n_critic')}, hidden "
                         f"{a.get('critic_hidden')}")
        label = (study.manifest.get("methods") or {}).get(m, {}).get("label", "")
        launcher = (study.manifest.get("methods") or {}).get(m, {}).get("launcher", "")
        rows.append([f"{m}" + (f" ({label})" if label else ""), f"`{a.get('loss')}`",
                     str(a.get("weights") or "equal"), "; ".join(extra) or "-",
                     f"{r.info.get('layer_map', 'n/a')}; `{launcher}`"])
    return rows


def setup_section(study: StudyData, stamp: dict) -> list[str]:
    lines = ["## Setup", ""]
    lines += table(["", ""], model_rows(study) + data_rows(study) + machine_rows(study, stamp))
    lines += ["", "Methods (each run's `args.json`):", ""]
    lines += table(["method", "loss", "weights", "settings", "layer map (student, teacher); launcher"],
                   method_rows(study))
    return lines


def build_markdown(study: StudyData, images: dict[str, str | None], stamp: dict) -> str:
    tests = comparisons(study)
    lines = [f"# Distilling a GPT-2 teacher: LM-only vs MSE vs Wasserstein vs the classic recipes "
             f"(`{study.manifest.get('preset', study.root.name)}` study)", "",
             f"Generated {stamp['date']} by `{stamp['command']}` from the runs in `{stamp['study_dir']}`. "
             "Every number below is read or computed from those files.", ""]
    lines += setup_section(study, stamp)

    def fig(key: str, caption: str) -> list[str]:
        return ["", f"![{caption}](figures/{images[key]})", ""] if images.get(key) else []

    lines += ["", "## Test perplexity", "",
              "Mean ± sample standard deviation over seeds of each run's student perplexity on the test tokens, "
              "and beside it on the out-of-domain text (same tokenizer, window and stride; "
              f"{MISSING} for runs evaluated without it).", ""]
    lines += ppl_table(study)
    lines += fig("ppl", "test perplexity")
    lines += ["## Layer by layer: sliced Wasserstein distance and CKA", "",
              "Per matched layer (student hidden index s ↔ teacher hidden index t), from each run's "
              "`eval/metrics.json`. Sliced WD: lower is closer; CKA: higher is more similar.", "",
              "Sliced WD:", ""]
    lines += layer_table(study, "sliced_wd")
    lines += ["", "CKA:", ""]
    lines += layer_table(study, "cka")
    lines += fig("layers_sliced_wd", "sliced WD per layer") + fig("layers_cka", "CKA per layer")
    lines += ["## Training curves", "", "From each run's `metrics.jsonl` (mean over seeds)."]
    lines += fig("val_loss", "validation loss") + fig("loss_terms", "loss terms") + fig("critic_wd", "critic WD")
    if images.get("teacher"):
        lines += ["Teacher pretraining (its own `metrics.jsonl`):"] + fig("teacher", "teacher pretraining")
    if images.get("tsne"):
        lines += ["## t-SNE of hidden states", ""] + fig("tsne", "t-SNE grids")
    lines += ["## Cost", "", "Parameters and forward speed from the evaluation's timing pass; training tokens/s "
              "(median over log intervals) and training time from `metrics.jsonl`; run wall time (launcher start-up "
              "included) from `study.json`.", ""]
    wall = {k: v.get("train_wall_s") for k, v in (study.manifest.get("runs") or {}).items()
            if v.get("train_wall_s") is not None}
    lines += cost_table(study, wall)
    lines += ["", "## Paired tests across seeds", "",
              "Each row pairs the runs of two methods that share a seed (same data order and initialization) and "
              "tests the mean of the differences a − b: a two-sided paired t-test (`scipy.stats.ttest_rel`), "
              "Holm-corrected over all rows, and the exact Wilcoxon signed-rank test (`scipy.stats.wilcoxon`). "
              "Effect sizes: the mean difference with its 95% t confidence interval in the metric's unit (PPL for "
              "test and out-of-domain perplexity), and the same in percent of b's mean (b's mean taken as fixed); "
              "the intervals are per row, not Holm-adjusted. Mean sliced WD (SW_1) and mean CKA average the "
              "matched layers of a run. Out-of-domain rows appear where both methods' runs were scored on the "
              "out-of-domain text.", ""]
    lines += tests_table(tests) if tests else ["No pair of methods has a seed in common yet."]
    lines += ["", "## Which term drives the student", "",
              "Each weighted term's share of the squared gradient it sends into the student's parameters "
              "(`grad_share/<term>` in `metrics.jsonl`: its squared norm over the sum of the terms' squared norms, "
              "measured every `--grad-share-interval` steps before clipping), averaged over the run, then over "
              "seeds.", ""] + grad_share_table(study)
    sensitivity = sensitivity_table(study)
    if sensitivity:
        lines += ["", "## Wasserstein sensitivity", "",
                  "The `wd_lm` recipe with one setting changed at a time (WD weight, critic learning rate, critic "
                  "updates per step), each against `mse_lm` on the same seeds: does any setting make WD beat "
                  "MSE?", ""] + sensitivity
    lines += ["", "## Conclusion", ""] + conclusion(study, tests)
    lines += ["", "## Runs", ""] + status_lines(study)
    lines += ["", "## Reproduce", "", "```", f"bash scripts/run_study.sh {study.manifest.get('preset', 'cpu')}",
              f"python Code/make_report.py --study-dir {stamp['study_dir']}", "```", ""]
    return "\n".join(lines)


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
    shown = _short(str(study_dir))
    stamp = {"date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
             "git": {"commit": _git("rev-parse", "HEAD") or None,
                     "dirty": bool(_git("status", "--porcelain", "--untracked-files=no"))},
             "command": command or f"python Code/make_report.py --study-dir {shown}", "study_dir": str(shown)}
    md = out / "report.md"
    atomic_write_text(md, build_markdown(study, images, stamp))
    if pdf:
        from Code.report.md_pdf import render

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
