"""How a command ends on a user error: one line naming the problem and its fix, exit status 2.

Kept free of heavy imports (torch, transformers) so a command can report a bad flag in a fraction of a second.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors (unknown flag, bad int, bad choice) are one `error:` line and exit status 2,
    without the usage block."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see --help)", file=sys.stderr, flush=True)
        sys.exit(2)


def first_line(exc: BaseException) -> str:
    """An exception as the one line a user sees: its first non-empty line (libraries append tracebacks)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def cli_main(body: Callable[[], int], errors: tuple[type[BaseException], ...], interrupted: str) -> int:
    """Run a command's `body`: a user error is one `error:` line and exit status 2; Ctrl-C says how to resume."""
    try:
        return body()
    except errors as exc:
        print(f"error: {first_line(exc)}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print(f"error: interrupted; {interrupted}", file=sys.stderr, flush=True)
        return 130
