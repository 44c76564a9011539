"""GPT-2 distillation toolkit: Wasserstein critics vs MSE vs the classic recipes.

Installed by `pip install -r requirements.txt` (which holds `-e .`), so every module imports as
`Code.<sub-package>.<module>` and the entry files under `Code/` run as plain scripts.
"""

from pathlib import Path

CODE_DIR = Path(__file__).resolve().parent  # where data/, output/ and ds_config_bf16.json live
REPO = CODE_DIR.parent
