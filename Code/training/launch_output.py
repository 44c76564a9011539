"""The launcher's stderr, minus the launcher's own noise: what Code/launch_common.sh pipes the ranks through.

    deepspeed ... 2> >(python3 -m Code.training.launch_output >&2)

- After our first `error: ...` line nothing more passes (other ranks' copies of it, DeepSpeed's
  `[ERROR] ... exits with return code = 2`, torchrun's ChildFailedError box): the user reads one line.
- DeepSpeed's launcher lines (`[launch.py:...]`, `[runner.py:...]`, e.g. after a clean stop's exit 143) and
  torchrun's elastic agent lines (`W1203 ... torch/distributed/elastic/...`, and whatever follows them) go.
- Everything else passes at once, byte for byte: a progress bar redrawn with `\\r` is not held back; only a
  line that may turn out to be one of the above (it starts with `[`, `e`, `W` or `E`) waits for its newline.
- With VERBOSE=1 in the environment (the README: "let the libraries talk too") every byte passes as it comes,
  the launchers' lines and whatever follows an error line included.

It ignores SIGINT and SIGTERM (the launcher forwards those to its whole process group, this filter included)
and ends when every writer has closed the pipe, so the ranks' last lines (the stop line) still get through.
"""

from __future__ import annotations

import os
import re
import signal
import sys

NOISE = re.compile(rb"^\[[^\]]*\] \[[A-Z]+\] \[(launch|runner)\.py:\d+:\w+\]")
ELASTIC = re.compile(rb"^[WEI]\d{4} .*torch/distributed/elastic/")
MAYBE = (b"[", b"e", b"W", b"E")


def main() -> int:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    out = sys.stdout.buffer
    if os.environ.get("VERBOSE") == "1":  # the user asked for every library's lines: nothing is held or dropped
        while chunk := os.read(0, 1 << 16):
            out.write(chunk)
            out.flush()
        return 0
    held = b""          # the start of a line that may be dropped, until its newline
    passing = False     # the current line is being passed through as it comes
    mute = False        # an error line (or torchrun's shutdown) was seen: drop the rest
    while chunk := os.read(0, 1 << 16):
        for piece in re.split(rb"(?<=[\n\r])", chunk):
            if not piece:
                continue
            if mute:
                continue
            if passing:
                out.write(piece)
                passing = not piece.endswith((b"\n", b"\r"))
                continue
            held += piece
            if not held.endswith((b"\n", b"\r")) and held.startswith(MAYBE):
                continue
            line, held = held, b""
            if NOISE.match(line):
                continue
            if ELASTIC.match(line):
                mute = True
                continue
            out.write(line)
            passing = not line.endswith((b"\n", b"\r"))
            if line.startswith(b"error: "):
                mute = True
        out.flush()
    if held and not mute:
        out.write(held)
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
