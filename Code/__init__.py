"""GPT-2 distillation toolkit: Wasserstein critics vs MSE vs the classic recipes.

Installed by `pip install -r requirements.txt` (which holds `-e .`), so every module imports as
`Code.<sub-package>.<module>` and the entry files under `Code/` run as plain scripts.
"""

from pathlib import Path

CODE_DIR = Path(__file__).resolve().parent  # where data/, output/ and ds_config_bf16.json live
REPO = CODE_DIR.parent

# `python <checkout>/Code/x.py` (and every rank a launcher starts) must run this checkout's code, not the one
# `pip install -e` registered: one error line otherwise (Code/origin.py).
from Code.origin import check_entry  # noqa: E402

check_entry()
