"""The variables the other shell scripts read (not the training launchers': those are in `training.py`).

Each is read by its script itself and passed on as a flag or a setting of another program; declared here so
that every `${VAR:-...}` in `scripts/`, `Code/*.sh` and `bench/*.sh` has one declaration with its meaning
(tests/training/test_knobs.py fails on an undeclared one). A script variable that names a training knob
(TEACHER, DATA_DIR, MAX_STEPS) is the training knob's, not declared again.
"""

from __future__ import annotations

from Code.knobs import Knob, Knobs

_STUDY = "scripts/run_study.sh -> python -m Code.study"
_DEMO = "scripts/offline_demo.sh"


def _var(env: str, group: str, help: str) -> Knob:  # noqa: A002 - the Knob field's name
    return Knob(env.lower(), group=group, env=env, flag=False, help=help)


SCRIPTS = Knobs([
    _var("STUDY_DIR", _STUDY, "--study-dir: the study folder"),
    _var("METHODS", _STUDY, "--methods: comma list of the preset's methods to run"),
    _var("SEEDS", _STUDY, "--seeds: comma list of seeds"),
    _var("JOBS", _STUDY, "--jobs: runs at once"),
    _var("CORPUS", _STUDY, "--corpus: folder of train.txt [valid.txt test.txt]"),
    _var("TRAIN_FILES", _STUDY, "--train-files: ':'-separated text files of the train split"),
    _var("VALID_FILES", _STUDY, "--valid-files: ':'-separated text files of the valid split"),
    _var("TEST_FILES", _STUDY, "--test-files: ':'-separated text files of the test split"),
    _var("TEACHER_STEPS", _STUDY, "--teacher-steps: steps of the pretrained teacher"),
    _var("REPORT_DIR", _STUDY, "--report-dir: where the report is written"),
    _var("OOD_TEXT", _STUDY, "--ood-text: out-of-domain text for evaluation"),
    _var("NO_REPORT", _STUDY, "1: --no-report"),
    _var("DRY_RUN", _STUDY, "1: --dry-run (print the plan, run nothing)"),
    _var("SEQKD_DIR", "scripts/dolly/seqkd_generate.sh", "--out-dir of Code/seqkd_generate.py: the new data folder"),
    _var("PYTHON", "bench/gpu_check.sh", "the interpreter that runs bench/gpu_check.py (default python)"),
    _var("DEMO_DIR", _DEMO, "the demo's output folder"),
    _var("DEMO_SEED", _DEMO, "the demo runs' seed"),
    _var("DEMO_TEACHER_STEPS", _DEMO, "steps of the demo's teacher"),
    _var("DEMO_STUDENT_STEPS", _DEMO, "steps of each demo student"),
    _var("DEMO_EVAL_TOKENS", _DEMO, "tokens the demo's evaluation reads"),
])
