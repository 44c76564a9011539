"""The code that runs is the code that was launched.

`pip install -e .` registers one checkout's `Code/` as the package. `python Code/train_related.py` in a
second checkout then imports `Code` from the first one (the script's own folder, `Code/`, is on the path,
not its parent), and so do the ranks the launchers start. `check_entry` (run by `Code/__init__.py` on
every import) stops such a process with one line naming both checkouts and the fix. `code_state` is what
args.json records: the commit, the path of the code actually imported and whether it had uncommitted
changes. Standard library only: it runs before anything else is imported.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

CODE_DIR = Path(__file__).resolve().parent


def launched_from() -> Path | None:
    """The `Code/` folder of the checkout whose entry file is running (`python <checkout>/Code/x.py`), if any."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if not path or getattr(getattr(main, "__spec__", None), "name", None):  # `python -m Code.x`: found on the path
        return None
    folder = Path(path).resolve().parent
    while folder != folder.parent:
        if folder.name == "Code" and (folder / "__init__.py").is_file():
            return folder
        folder = folder.parent
    return None


def check_entry() -> None:
    """Exit 2 with one line when this process was started from another checkout than the `Code` it imports."""
    if os.environ.get("DISTILL_ANY_CHECKOUT") == "1":  # an explicit opt-out (e.g. a tool that imports both)
        return
    started = launched_from()
    if started is None or started == CODE_DIR:
        return
    print(f"error: {sys.argv[0]} is in the checkout {started.parent}, but `import Code` loads {CODE_DIR} (the "
          f"checkout installed with pip install -e): run `pip install -e .` in {started.parent} to use its code, "
          f"or start the command from {CODE_DIR.parent}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def code_state() -> dict:
    """{"commit", "dirty", "path"} of the code actually imported (processes.git_state of its checkout)."""
    from Code.processes import git_state

    return {**git_state(CODE_DIR.parent), "path": str(CODE_DIR)}
