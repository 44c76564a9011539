"""The variables the other shell scripts read (not the training launchers': those are in `training.py`;
the study's are its knobs, `study.py`, included here).

Each is read by its script itself and passed on as a flag or a setting of another program; declared here so
that every `${VAR:-...}` in `scripts/`, `Code/*.sh` and `bench/*.sh` has one declaration with its meaning
(tests/training/test_knobs.py fails on an undeclared one). A script variable that names a training knob
(TEACHER, DATA_DIR, MAX_STEPS) is the training knob's, not declared again.
"""

from __future__ import annotations

from Code.knobs import Knob, Knobs
from Code.knobs.study import STUDY

_DEMO = "scripts/offline_demo.sh"


def _var(env: str, group: str, help: str) -> Knob:  # noqa: A002 - the Knob field's name
    return Knob(env.lower(), group=group, env=env, flag=False, help=help)


SCRIPTS = Knobs([
    *(k for k in STUDY if k.env),  # run_study.sh's, declared with the study's flags
    _var("SEQKD_DIR", "scripts/dolly/seqkd_generate.sh", "--out-dir of Code/seqkd_generate.py: the new data folder"),
    _var("PYTHON", "bench/gpu_check.sh", "the interpreter that runs bench/gpu_check.py (default python)"),
    _var("DEMO_DIR", _DEMO, "the demo's output folder"),
    _var("DEMO_SEED", _DEMO, "the demo runs' seed"),
    _var("DEMO_TEACHER_STEPS", _DEMO, "steps of the demo's teacher"),
    _var("DEMO_STUDENT_STEPS", _DEMO, "steps of each demo student"),
    _var("DEMO_EVAL_TOKENS", _DEMO, "tokens the demo's evaluation reads"),
])
