"""The report's Markdown, section by section, from a loaded study, its figures and the stamp.

`stamp` holds the date, the commit (Code.processes.stamp), the command and the study folder as shown.
"""

from __future__ import annotations

from Code.report.budget import budget_section
from Code.report.comparisons import MSE_FAMILY, comparisons, tests_table
from Code.report.conclusion import conclusion
from Code.report.data import StudyData
from Code.report.estimators import estimator_section
from Code.report.fmt import MISSING, plural
from Code.report.ood import ood_section
from Code.report.setup import setup_section
from Code.report.stats import min_wilcoxon_p
from Code.report.tables import (
    cost_table,
    critic_lines,
    grad_share_table,
    layer_table,
    per_seed_table,
    score_table,
    status_lines,
)
from Code.report.tuning import tuning_table


def build_markdown(study: StudyData, images: dict[str, str | None], stamp: dict) -> str:
    tests = comparisons(study)
    lines = [f"# Distilling a GPT-2 teacher: does matching distributions help, whoever measures the distance? "
             f"(`{study.manifest.get('preset', study.root.name)}` study)", "",
             f"Generated {stamp['date']} by `{stamp['command']}` from the runs in `{stamp['study_dir']}`. "
             "Every number below is read or computed from those files.", ""]
    if study.incomplete:  # say it before any number: a partial study's tests have less power than planned
        planned = len(study.tune_runs) + len(study.runs) + len(study.budget_runs)
        lines += [f"**Partial study: {len(study.incomplete)} of {planned} planned runs are not finished** (listed "
                  "under Runs). The numbers below are from the finished ones; run the study's command again to "
                  "finish it (it resumes) and rebuild this report.", ""]
    lines += setup_section(study, stamp)

    def fig(key: str, caption: str) -> list[str]:
        return ["", f"![{caption}](figures/{images[key]})", ""] if images.get(key) else []

    lines += ["", "## Tuning on validation", "",
              "Each family's validation perplexity at every weight of its grid (tuning seed, validation split; "
              "never a test seed or the test split). The chosen weight, the lowest, is in bold and marked ✓; the "
              f"test stage runs each family at it. {MISSING}: not finished yet.", ""]
    lines += tuning_table(study)
    lines += ["", "## Test results", "",
              "Every test method (LM-only and each family at its chosen weight): mean ± sample standard deviation "
              "over seeds of the student's test perplexity and bits per byte, and the same on the out-of-domain "
              f"text ({MISSING}: the evaluations lack that number; a count of seeds when only some have it).", ""]
    lines += score_table(study)
    lines += fig("ppl", "test perplexity")
    lines += ["", "Per seed:", ""] + per_seed_table(study)
    # the seeds the tests have: the fewest any method finished (the planned seeds while none has)
    n = min((len(study.of(m)) for m in study.methods if study.of(m)), default=len(study.seeds))
    lines += ["", "## Paired tests across seeds", "",
              f"Every method against `{MSE_FAMILY}`'s method and against `lm`, on test and out-of-domain "
              "perplexity. Each row pairs the runs of two methods that share a seed (same data order and "
              "initialization) and tests the mean of the differences a − b: a two-sided paired t-test "
              "(`scipy.stats.ttest_rel`), Holm-corrected over all rows together, and the exact Wilcoxon signed-rank "
              "test (`scipy.stats.wilcoxon`). Effect sizes: the mean difference with its 95% t confidence interval "
              "in PPL, and the same in percent of b's mean (b's mean taken as fixed); the intervals are per row, "
              f"not Holm-adjusted. With {plural(n, 'seed')} the smallest two-sided p the exact Wilcoxon test can "
              f"give is {min_wilcoxon_p(n):.3g} (2 / 2^n).", ""]
    lines += tests_table(tests) if tests else ["No pair of methods has a seed in common yet."]
    lines += ["", "## Does the estimator matter?", ""] + estimator_section(study, tests)
    lines += ["", "### Which term drives the student", "",
              "Each weighted term's share of the squared gradient it sends into the student's parameters "
              "(`grad_share/<term>` in `metrics.jsonl`: its squared norm over the sum of the terms' squared norms, "
              "measured every `--grad-share-interval` steps before clipping), averaged over the run, then over "
              "seeds.", ""] + grad_share_table(study)
    critics = critic_lines(study)
    if critics:
        lines += ["", "Where the training critics' estimates ended:", ""] + critics
    lines += ["", "## Out-of-domain", ""] + ood_section(study)
    lines += ["", "## Budget point", ""] + budget_section(study)
    lines += ["", "## Layer by layer: sliced Wasserstein distance, exact W1 and CKA", "",
              "Per matched layer (student hidden index s ↔ teacher hidden index t), from each run's "
              "`eval/metrics.json`. Sliced WD and exact W1 (on a subsample, in the teacher's standardised "
              "coordinates): lower is closer; CKA: higher is more similar.", "", "Sliced WD:", ""]
    lines += layer_table(study, "sliced_wd")
    if any(r.layer_values("exact_w1") for r in study.runs.values()):
        lines += ["", "Exact W1:", ""] + layer_table(study, "exact_w1")
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
    lines += ["", "## Conclusion", ""] + conclusion(study, tests)
    lines += ["", "## Runs", ""] + status_lines(study)
    lines += ["", "## Reproduce", "", "```", f"bash scripts/run_study.sh {study.manifest.get('preset', 'cpu')}",
              f"python Code/make_report.py --study-dir {stamp['study_dir']}", "```", ""]
    return "\n".join(lines)
