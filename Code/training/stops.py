"""Clean stops and time-based saves, agreed by every rank at a step boundary.

SIGTERM (what a scheduler or `kill` sends) or SIGINT (Ctrl-C) to any process of the run (the launcher
forwards them to every rank: Code/launch_common.sh) sets a flag; at the next step boundary one tiny
all-reduce of [stop, save due] tells every rank, so all of them save the same step, then stop. The run
prints one line (the step saved and the command that resumes it) and exits with 128 + the signal:

    143  stopped by SIGTERM, checkpoint saved      130  stopped by SIGINT (Ctrl-C), checkpoint saved

A second Ctrl-C gives up on the save (KeyboardInterrupt). A launcher that is gone (killed with -9: nothing
to trap) counts as a SIGTERM: its ranks (DISTILL_LAUNCHER_PID, on its host) save and stop at the next step.
`--save-every-minutes` (rank 0's clock, shared by the same all-reduce) saves a checkpoint whenever that much
time has passed since the last save, so a hard kill of the ranks (kill -9, a lost node) loses at most that
much work.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from typing import Any

import torch

STOP_CODES = {signal.SIGTERM: 143, signal.SIGINT: 130}


class StopWatch:
    """The run's stop flag (set by a signal) and its save clock; `poll` is called once per step by every rank."""

    def __init__(self, save_every_minutes: float, world_size: int, device: torch.device | None = None) -> None:
        self.every_s = max(0.0, float(save_every_minutes or 0)) * 60.0
        self.world_size = world_size
        self.device = device or torch.device("cpu")  # NCCL reduces CUDA tensors only
        self.signal: int | None = None
        self.last_save = time.monotonic()
        self._previous: dict[int, Any] = {}
        same_host = os.environ.get("DISTILL_LAUNCHER_HOST") == socket.gethostname()
        self.launcher_pid = int(os.environ.get("DISTILL_LAUNCHER_PID", "0") or 0) if same_host else 0

    def install(self) -> None:
        """Catch SIGTERM and SIGINT from now on (model loading before this still dies at once: nothing to save)."""
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set handlers (a Trainer driven from a worker thread: no clean stop)
        for sig in STOP_CODES:
            self._previous[sig] = signal.signal(sig, self._handle)
        if hasattr(signal, "SIGXFSZ"):  # a file size limit (ulimit -f): an OSError to report, not a silent death
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is None:
            self.signal = signum
            return
        if signum == signal.SIGINT and self.signal == signal.SIGINT:  # Ctrl-C twice: give up on the save
            raise KeyboardInterrupt
        # a repeated SIGTERM (the launcher forwards what this rank already got): keep saving

    def saved(self) -> None:
        self.last_save = time.monotonic()

    def launcher_gone(self) -> bool:
        if not self.launcher_pid:
            return False
        try:
            os.kill(self.launcher_pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def poll(self) -> tuple[bool, bool]:
        """(stop now, save now): the same answer on every rank."""
        if self.signal is None and self.launcher_gone():
            self.signal = signal.SIGTERM
        flags = torch.tensor([float(self.signal or 0), float(self.every_s > 0 and
                                                               time.monotonic() - self.last_save >= self.every_s)],
                             device=self.device)
        if self.world_size > 1:
            import torch.distributed as dist

            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        stop, due = (bool(v) for v in flags.tolist())
        if stop and self.signal is None:  # another rank got the signal: stop with its code
            self.signal = int(flags[0].item())
        return stop, due

    @property
    def exit_code(self) -> int:
        return STOP_CODES.get(signal.Signals(self.signal), 128 + int(self.signal)) if self.signal else 0

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signal).name if self.signal else ""
