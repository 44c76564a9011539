"""The study's knobs (`python -m Code.study`, `scripts/run_study.sh`), declared once.

The study's flags (`Code/study/command.py` `build_parser`) and run_study.sh's variable map
(`python3 -m Code.knobs launcher-map study`) derive from `STUDY`. The preset is run_study.sh's first
argument, not a variable.
"""

from __future__ import annotations

from Code.knobs import Knob, Knobs, at_least
from Code.study.presets import FAMILIES, METHODS, PRESETS, STAGES

K = Knob
STUDY = Knobs([
    K("preset", "cpu", choices=tuple(sorted(PRESETS)), group="study",
      help="the study's size and data (run_study.sh: its first argument)"),
    K("study_dir", help="study folder (default study/<preset>)", group="study", env="STUDY_DIR"),
    K("stages", help=f"comma list of {', '.join(STAGES)} (default all, in that order)", group="study",
      env="STAGES"),
    K("methods", group="study", env="METHODS",
      help=f"test stage: comma list of methods ({','.join(METHODS)}) or tuned families ({','.join(FAMILIES)}: "
           "each at its validation-best weight; default the preset's)"),
    K("seeds", help="comma list of seeds, or a count N meaning 1..N (default 1,2,3)", group="study", env="SEEDS"),
    K("jobs", None, int, help="runs side by side (default: the preset's)", group="study", env="JOBS",
      check=at_least(1)),
    K("data_dir", help="an existing indexed data folder (skips data preparation)", group="data", env="DATA_DIR"),
    K("corpus", help="folder with train.txt, valid.txt, test.txt (cpu default ../shared/corpus/wikitext-2)",
      group="data", env="CORPUS"),
    K("train_files", help="train text files, ':'-separated", group="data", env="TRAIN_FILES"),
    K("valid_files", help="valid text files, ':'-separated", group="data", env="VALID_FILES"),
    K("test_files", help="test text files, ':'-separated", group="data", env="TEST_FILES"),
    K("teacher", help="a teacher folder or hub name (skips pretraining)", group="runs", env="TEACHER"),
    K("ood_text", group="runs", env="OOD_TEXT",
      help="out-of-domain text every run is also scored on: ':'-separated .txt files or folders, or none "
           "(default: ../shared/corpus/gutenberg when present)"),
    K("max_steps", None, int, help="optimizer steps of every student run (default: the preset's)", group="runs",
      env="MAX_STEPS", check=at_least(1)),
    K("budget_steps", None, int, help="steps of the budget point's runs (default: the preset's; 0: none)",
      group="runs", env="BUDGET_STEPS", check=at_least(0)),
    K("teacher_steps", None, int, help="optimizer steps of the teacher pretraining (preset's)", group="runs",
      env="TEACHER_STEPS", check=at_least(1)),
    K("report_dir", help="where make_report.py writes (default Individual-Final-Project-Report[/gpu])",
      group="report", env="REPORT_DIR"),
    K("no_report", False, switch=True, help="do not run make_report.py at the end", group="report",
      env="NO_REPORT"),
    K("dry_run", False, switch=True, help="print the commands, run nothing", group="study", env="DRY_RUN"),
])
