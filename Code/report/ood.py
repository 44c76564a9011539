"""Out-of-domain: the conventions the text was scored in and the report's self-checks, each PASS or FAIL with
its numbers.

(a) the teacher's out-of-domain PPL is well below the vocabulary size (a uniform guess scores the vocabulary
size: a PPL near it says the text's format, not its domain, is being measured); (b) the teacher evaluated
with the in-domain test text fed through the out-of-domain path (the study's `selfcheck/eval`) reproduces
its test PPL; (c) the methods' out-of-domain ranking against their in-domain one (Spearman's rho,
`scipy.stats.spearmanr`), with every pair that swaps.
"""

from __future__ import annotations

from pathlib import Path

from scipy import stats as sps

from Code.report.data import StudyData
from Code.report.fmt import MISSING, num, pct
from Code.report.stats import mean, swapped
from Code.report.tables import run_of, teacher_ppl
from Code.run_folder import FINAL, read_json

WELL_BELOW = 0.25      # (a): the teacher's out-of-domain PPL at most this fraction of the vocabulary size
SELFCHECK_TOL = 0.05   # (b): |self-check OOD PPL / its test PPL − 1| at most this
CONVENTIONS = {"wikitext": "paragraphs unwrapped into one line each, punctuation spaced as WikiText's "
                           "tokenized text (` , `, ` @-@ `), like the training text",
               "raw": "the files as they are (hard-wrapped, untouched)"}


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**PASS**" if ok else "**FAIL**")


def vocab_size(study: StudyData) -> int | None:
    """The tokenizer's vocabulary: data meta.json, else a finished run's model config."""
    if study.meta.get("vocab_size"):
        return int(study.meta["vocab_size"])
    ref = run_of(study)
    cfg = read_json(Path(ref.path) / FINAL / "config.json") if ref else None
    return int(cfg["vocab_size"]) if cfg and cfg.get("vocab_size") else None


def conventions(study: StudyData) -> str | None:
    """How the out-of-domain text was put before scoring (evaluation's `ood.conventions`, else study.json's)."""
    ref = next((r for r in study.runs.values() if r.status == "done" and (r.eval or {}).get("ood")), None)
    found = ((ref.eval or {}).get("ood") or {}).get("conventions") if ref else None
    return found or (study.manifest.get("ood") or {}).get("conventions")


def check_vocab(study: StudyData) -> tuple[bool | None, str]:
    ood, vocab = teacher_ppl(study, ood=True), vocab_size(study)
    if ood is None or vocab is None:
        return None, f"teacher out-of-domain PPL {num(ood)}, vocabulary {vocab or MISSING}: nothing to check yet"
    ok = ood <= WELL_BELOW * vocab
    return ok, (f"teacher out-of-domain PPL {num(ood)} against a vocabulary of {vocab:,} (a uniform guess scores "
                f"{vocab:,}; the check asks at most {WELL_BELOW:.0%} of it, {WELL_BELOW * vocab:,.0f})")


def check_selfcheck(study: StudyData) -> tuple[bool | None, str]:
    teacher = (study.selfcheck or {}).get("teacher") or {}
    test, ood = teacher.get("ppl"), teacher.get("ood_ppl")
    if test is None or ood is None:
        return None, "the self-check evaluation (`selfcheck/eval`) is not there yet"
    gap = ood / test - 1.0
    ok = abs(gap) <= SELFCHECK_TOL
    return ok, (f"the teacher scores {num(test)} on the test split and {num(ood)} on the same test text through "
                f"the out-of-domain path ({pct(100 * gap)}; tolerance ±{SELFCHECK_TOL:.0%})")


def rankings(study: StudyData) -> tuple[dict[str, float], dict[str, float]]:
    """Mean test PPL and mean out-of-domain PPL of each method that has both."""
    test, ood = {}, {}
    for m in study.methods:
        runs = study.of(m)
        t = [r.test_ppl for r in runs]
        o = [r.ood_ppl for r in runs if r.ood_ppl is not None]
        if t and o:
            test[m], ood[m] = mean(t), mean(o)
    return test, ood


def check_ranking(study: StudyData) -> tuple[bool | None, str]:
    test, ood = rankings(study)
    if len(test) < 3:
        return None, f"{len(test)} method(s) have both perplexities: too few to rank"
    rho = float(sps.spearmanr(list(test.values()), [ood[m] for m in test]).statistic)
    order = " < ".join(sorted(test, key=test.get))
    swaps = swapped(test, ood)
    text = f"Spearman rho = {rho:.3f} over {len(test)} methods (in-domain order, best first: {order}); "
    if not swaps:
        text += "the out-of-domain order is the same"
    else:
        text += ("the orders differ: " + ", ".join(f"{a} ahead of {b} in domain, behind out of domain"
                                                    for a, b in swaps))
    return rho > 0, text + ". The check asks rho > 0 (not the reverse of the in-domain order)"


def ood_section(study: StudyData) -> list[str]:
    conv = conventions(study)
    files = (study.manifest.get("ood") or {}).get("files") or []
    lines = [f"Out-of-domain text: {len(files) or MISSING} file(s) (see Setup), scored in the `{conv}` conventions: "
             f"{CONVENTIONS.get(conv, 'as recorded by the evaluation')}." if conv else
             "Out-of-domain text: no conventions recorded (runs evaluated before the text was put into the "
             "training text's conventions): the numbers may measure formatting, not domain.", "",
             "Self-checks:", ""]
    for name, (ok, text) in (("(a) teacher out-of-domain PPL well below the vocabulary size", check_vocab(study)),
                             ("(b) the out-of-domain path reproduces the in-domain test PPL", check_selfcheck(study)),
                             ("(c) out-of-domain ranking vs in-domain ranking", check_ranking(study))):
        lines.append(f"- {name}: {verdict(ok)}: {text}.")
    return lines
