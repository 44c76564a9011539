"""The report's Markdown, section by section, from a loaded study, its figures and the stamp.

`stamp` holds the date, the commit (Code.processes.stamp), the command and the study folder as shown.
"""

from __future__ import annotations

from Code.report.data import StudyData
from Code.report.setup import setup_section
from Code.report.tables import (
    MISSING,
    comparisons,
    conclusion,
    cost_table,
    grad_share_table,
    layer_table,
    ppl_table,
    sensitivity_table,
    status_lines,
    tests_table,
)


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
