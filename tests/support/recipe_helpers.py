"""Run a launcher's exact command cheaply: the real script, fake `deepspeed`/`torchrun`/`python3` on PATH
that record the command line, then that command's entry point called inside the test process.

Starting Python with torch and transformers costs ~8 s of CPU per process here, which would make testing
twenty recipes (each trained, resumed and evaluated) take many minutes. The launcher's whole job is
mapping environment variables to flags and choosing the process launcher; the first part is what the
recorded command checks, and the spawn itself is tested for real by a 2-rank torchrun test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

FAKE = """#!/usr/bin/env bash
printf '%s\\0' "$(basename "$0")" "$@" > "$CAPTURE_FILE"
"""

# The launcher also calls python3 for its own helpers (`-m Code.knobs launcher-map`, `-m Code.training.
# launch_output`, the free port, the GPU count): those run for real. Only an entry script is recorded, and
# its `--check` pass succeeds at once (pre-flight has tests of its own; the test runs the entry itself).
FAKE_PYTHON = """#!/usr/bin/env bash
case "${1:-}" in
  *.py) if [[ " $* " == *" --check "* ]]; then exit 0; fi
        printf '%s\\0' "$(basename "$0")" "$@" > "$CAPTURE_FILE" ;;
  -c) echo 0 ;;  # torch.cuda.device_count(): these tests run on CPU ranks
  *) exec "{python}" "$@" ;;
esac
"""


def fake_bin(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (("deepspeed", FAKE), ("torchrun", FAKE),
                       ("python3", FAKE_PYTHON.replace("{python}", sys.executable))):
        path = folder / name
        path.write_text(text)
        path.chmod(0o755)
    return folder


def launch_command(script: Path, env: dict[str, str], extra: list[str], bin_dir: Path,
                   capture: Path) -> tuple[str, Path, list[str]]:
    """(launcher program, entry script, its flags) that `bash script extra...` would run under `env`."""
    env = {**env, "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', os.environ['PATH'])}",
           "CAPTURE_FILE": str(capture)}
    env.setdefault("NUM_GPUS", "1")  # else the launcher asks python3 (faked here) for the GPU count
    capture.unlink(missing_ok=True)
    proc = subprocess.run(["bash", str(script), *extra], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    parts = capture.read_bytes().decode().split("\0")[:-1]
    program, args = parts[0], parts[1:]
    at = next(i for i, a in enumerate(args) if a.endswith(".py"))
    return program, Path(args[at]).resolve(), args[at + 1 :]


class InProcess:
    """Entry points called in this process; one world-size-1 process group serves every run (DeepSpeed
    keeps module-level communication state that does not survive re-creating it). `close` restores the
    environment the runs changed (RANK, MASTER_PORT, ...); the group lives on for the next one."""

    def __init__(self) -> None:
        self._env = dict(os.environ)
        os.environ["DISTILL_DEBUG"] = "1"  # a failing run raises with its traceback instead of exiting
        # One intra-op thread, as the subprocess tests run (OMP_NUM_THREADS=1): for these tiny models a
        # second thread only adds synchronisation, and much more so on a busy machine.
        self._threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def run(self, entry: Path, flags: list[str]) -> None:
        from Code import evaluate_, seqkd_generate, train_minillm, train_related

        mains = {"train_related.py": train_related.main, "train_minillm.py": train_minillm.main,
                 "seqkd_generate.py": seqkd_generate.main, "evaluate_.py": evaluate_.main}
        result = mains[entry.name](flags)
        assert result in (None, 0), f"{entry.name} {flags} returned {result}"

    def close(self) -> None:
        # The process group stays for the next InProcess of this pytest process: DeepSpeed keeps
        # module-level communication state bound to the first group, which a re-created one breaks.
        os.environ.clear()
        os.environ.update(self._env)
        torch.set_num_threads(self._threads)
