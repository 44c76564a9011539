"""`python -m Code.study --preset cpu`: the study driver (usually through `bash scripts/run_study.sh cpu`)."""

import sys

from Code.study.command import main

sys.exit(main())
