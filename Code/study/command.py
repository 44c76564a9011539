"""The study's command line: `python -m Code.study --preset cpu` (usually `bash scripts/run_study.sh cpu`).

Parses the flags (declared once in Code/knobs/study.py), then walks the stages in order -- tune, test,
calibration, budget -- through the driver (`Code/study/driver.py`), and writes the report at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from dataclasses import asdict, replace
from pathlib import Path

from Code import CODE_DIR as CODE
from Code import REPO
from Code.cli import cli_main
from Code.knobs.study import STUDY
from Code.processes import git_state, hardware, load_average
from Code.study.driver import Study
from Code.study.plan import OOD_CONVENTIONS, StudyError, launcher_path, ood_file_list, ood_text, resolve_method, stages
from Code.study.presets import FAMILIES, PRESETS, STAGES


def build_parser() -> argparse.ArgumentParser:
    """The study's flags, declared once in Code/knobs/study.py (run_study.sh maps its variables from them)."""
    p = STUDY.add_to(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    p.set_defaults(ood_text=os.environ.get("OOD_TEXT"))  # also without run_study.sh
    return p



def parse_stages(text: str | None) -> list[str]:
    names = [x.strip() for x in (text or ",".join(STAGES)).split(",") if x.strip()]
    unknown = [x for x in names if x not in STAGES]
    if unknown or not names:
        raise StudyError(f"--stages {text!r}: a comma list of {', '.join(STAGES)}")
    return names


def parse_seeds(text: str | None, default: tuple[int, ...]) -> list[int]:
    if not text:
        return list(default)
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise StudyError(f"--seeds {text!r}: give a count like 3 or a list like 1,2,3") from None
    if len(values) == 1 and "," not in text:
        values = list(range(1, values[0] + 1))
    if not values:
        raise StudyError("--seeds is empty: give a count like 3 or a list like 1,2,3")
    return values


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def checked() -> int:
        STUDY.check(args)  # each knob's check: one error line, exit 2
        return run_study(args)

    return cli_main(checked, (ValueError, FileNotFoundError),
                    "run the same command again to resume (finished runs are reused)")


def run_study(args) -> int:
    """Data, teacher, every method x seed, evaluation, then the report; 0 when every run finished."""
    preset = PRESETS[args.preset]
    if args.max_steps:
        preset = replace(preset, train={**preset.train, "MAX_STEPS": str(args.max_steps)})
    if args.teacher_steps:
        preset = replace(preset, teacher_train={**preset.teacher_train, "MAX_STEPS": str(args.teacher_steps)})
    names = [m.strip() for m in (args.methods or ",".join(preset.methods)).split(",") if m.strip()]
    for n in names:
        resolve_method(n, {n: FAMILIES[n].weights[0]} if n in FAMILIES else {})  # unknown names: one error line
    wanted = parse_stages(args.stages)
    seeds = parse_seeds(args.seeds, preset.seeds)
    budget_steps = preset.budget_steps if args.budget_steps is None else args.budget_steps
    plan = stages(preset, budget_steps)
    # tuned: the families among the test methods, and every family a budget `best:<kind>` may pick
    kinds = {m.split(":", 1)[1] for m in preset.budget_methods if m.startswith("best:")} if budget_steps else set()
    families = [f for f in FAMILIES if f in names or (f in preset.families and FAMILIES[f].kind in kinds)]
    root = Path(args.study_dir or REPO / "study" / preset.name).resolve()
    extra = {"HF_HUB_OFFLINE": "1"} if preset.name == "cpu" and "HF_HUB_OFFLINE" not in os.environ else {}
    study = Study(preset, root, args.dry_run, max(1, args.jobs or preset.jobs), extra)
    study.ood = ood_text(preset, args.ood_text)
    study.ood_files = ood_file_list(study.ood)
    study.manifest.update(preset=preset.name, preset_config=asdict(preset), seeds=seeds,
                          hardware=hardware(), git=git_state(), jobs=study.jobs, threads_per_job=study.threads,
                          ood={"text": study.ood, "files": study.ood_files,
                               "conventions": OOD_CONVENTIONS} if study.ood else None)
    study.say(f"study {preset.name}: stages {', '.join(wanted)}; {len(names)} methods x {len(seeds)} seeds in "
              f"{root} ({study.jobs} at a time, {study.threads} thread(s) each)")
    study.say(f"out-of-domain text: {len(study.ood_files)} file(s) from {', '.join(study.ood)}" if study.ood else
              "out-of-domain text: none (set OOD_TEXT or --ood-text to score one)")
    files = {"train": args.train_files, "valid": args.valid_files, "test": args.test_files}
    data_dir = study.data(args.data_dir, args.corpus, files)
    teacher = study.teacher(args.teacher, data_dir)
    study.save()
    # 1. tune: each family's weight grid at the tuning seed, scored on validation
    if "tune" in wanted:
        chosen = study.tune(plan["tune"], families, teacher, data_dir)
    else:
        chosen = study.tuned(plan["tune"], families)[1]
    # 2. test: every method (a family at its validation-best weight) x the test seeds
    methods = {n: resolve_method(n, chosen) for n in names}
    study.manifest["methods"] = {m.name: {"label": m.label, "family": n if n in FAMILIES else None,
                                          "launcher": str(launcher_path(m.launcher).relative_to(REPO)),
                                          "env": m.env, "flags": preset.method_flags.get(m.name, [])}
                                 for n, m in methods.items() if m is not None}
    untuned = [n for n, m in methods.items() if m is None]
    if untuned:
        study.say(f"test: skipping {', '.join(untuned)} until their tuning has finished")
    if "test" in wanted:
        study.runs(plan["test"], [m for m in methods.values() if m is not None], seeds, teacher, data_dir)
    # 3. calibration: is the critic an estimator? (on the LM-only student's and the teacher's states); and the
    # out-of-domain path's self-check: the in-domain test text fed through it reproduces the test PPL
    if "calibration" in wanted:
        study.calibration(plan["test"], teacher, data_dir, seeds[0])
        study.selfcheck(teacher, data_dir, (study.manifest["data"].get("files") or {}).get("test") or [])
    # 4. budget: the main comparison at more steps (last: by far the longest stage)
    if "budget" in wanted and budget_steps:
        budget = study.budget_methods(plan["tune"], families, chosen)
        study.manifest["budget"] = {"max_steps": budget_steps, "seeds": list(preset.budget_seeds),
                                    "methods": {role: m.name for role, m in budget.items()}}
        study.runs(plan["budget"], list(budget.values()), list(preset.budget_seeds), teacher, data_dir)
    study.save()
    failed = list(study.invocation["failed"])
    study.invocation["finished"] = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    study.invocation["load_average_end"] = load_average()
    study.save()
    study.say(f"runs: {len(study.invocation['reused'])} reused, {len(study.invocation['trained'])} trained, "
              f"{len(study.invocation['resumed'])} resumed, {len(study.invocation['evaluated'])} evaluated, "
              f"{len(failed)} failed")
    if not args.no_report and not args.dry_run:
        out = args.report_dir or str(REPO / "Individual-Final-Project-Report" / ("" if preset.name == "cpu" else
                                                                              preset.name))
        ok, _ = study.execute([sys.executable, str(CODE / "make_report.py"), "--study-dir", str(root),
                               "--out-dir", out], {}, root / "logs" / "report.log", "report")
        study.say(f"report: {out}/report.md" if ok else "report: FAILED")
        if not ok:
            return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
