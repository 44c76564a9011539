"""`python3 -m Code.knobs launcher-map [training]`: the bash lines that map launcher variables to flags.

Code/launch_common.sh evals the output (each line `flag --seq-len "${SEQ_LEN:-}"` or `switch --resume
"${RESUME:-0}"`), so its variables are exactly the declared knobs'. `vars` prints every declared launcher
variable, one a line. Exit 2 with one `error:` line on a bad command.
"""

from __future__ import annotations

import sys

from Code.knobs import Knobs


def _sets() -> dict[str, Knobs]:
    from Code.knobs.scripts import SCRIPTS
    from Code.knobs.study import STUDY
    from Code.knobs.training import TRAINING

    return {"training": TRAINING, "study": STUDY, "scripts": SCRIPTS}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    sets = _sets()
    command = args[0] if args else ""
    name = args[1] if len(args) > 1 else "training"
    if command not in ("launcher-map", "vars") or name not in sets or len(args) > 2:
        print(f"error: usage: python3 -m Code.knobs {{launcher-map,vars}} [{'|'.join(sets)}]", file=sys.stderr)
        return 2
    knobs = sets[name]
    sys.stdout.write(knobs.launcher_map() if command == "launcher-map" else "\n".join(knobs.env_vars()) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
