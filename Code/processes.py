"""Child processes and the stamp of where they ran: one helper for the study, the GPU check and the report.

- `run_logged`: a command in its own process group, its output appended to a log file (and optionally
  echoed), a timeout that ends the whole tree (launchers start ranks), and the result as `Finished`.
- `child_env`: the caller's environment minus the variables a child must not inherit, plus what it sets.
- `git_state`, `hardware`, `stamp`: the commit (and whether it had uncommitted changes) and the machine.
- `free_port`: a TCP port nobody listens on, for MASTER_PORT.

Light to import (standard library only).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from Code import REPO


@dataclass(frozen=True)
class Finished:
    rc: int | None       # exit status (None: never started)
    status: str          # ok | failed | timeout
    seconds: float

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def child_env(drop: Iterable[str] = (), extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """os.environ without `drop`, then `extra` on top."""
    dropped = set(drop)
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(extra or {})
    return env


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the child's process group, then SIGKILL if it lingers."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_logged(cmd: list[str], env: Mapping[str, str], log: str | Path, *, header: str | None = None,
               timeout: float | None = None, echo: bool = False, cwd: str | Path = REPO,
               mode: str = "a") -> Finished:
    """Run `cmd` in its own process group, its output (stdout and stderr) into `log`.

    `header` is written first (the command as the user would type it); `echo` also copies the output to
    this process's stdout; past `timeout` seconds the whole group is ended and the status is "timeout".
    """
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    status = "ok"
    with log.open(mode) as handle:
        if header is not None:
            handle.write(header + "\n")
            handle.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", start_new_session=True)

        def copy() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                handle.write(line)
                handle.flush()
                if echo:
                    sys.stdout.write(line)
                    sys.stdout.flush()

        reader = threading.Thread(target=copy, daemon=True)
        reader.start()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            status = "timeout"
        except BaseException:  # Ctrl-C in the parent: no orphaned launcher or ranks
            _kill_group(proc)
            raise
        finally:
            if proc.poll() is None:
                _kill_group(proc)
            reader.join(timeout=10)
    if status == "ok" and proc.returncode != 0:
        status = "failed"
    return Finished(proc.returncode, status, round(time.perf_counter() - start, 1))


def last_line(log: str | Path) -> str:
    """The log's last non-empty line (what a failure message quotes)."""
    try:
        lines = [ln for ln in Path(log).read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no output)"
    return lines[-1] if lines else "(no output)"


def tail(path: str | Path, lines: int = 12) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _git(*args: str, cwd: Path = REPO) -> str:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


GENERATED = ("Individual-Final-Project-Report",)  # committed outputs: rewriting them does not change the code


def git_state(repo: Path = REPO) -> dict:
    """{"commit": full hash or None, "dirty": uncommitted changes to tracked files, generated outputs aside}."""
    outputs = [f":(exclude){path}" for path in GENERATED]
    return {"commit": _git("rev-parse", "HEAD", cwd=repo) or None,
            "dirty": bool(_git("status", "--porcelain", "--untracked-files=no", "--", ".", *outputs, cwd=repo))}


def describe_commit(state: Mapping | None) -> str:
    """A git_state as a reader sees it: 12 hex digits, and whether there were uncommitted changes."""
    if not state or not state.get("commit"):
        return "unknown"
    return state["commit"][:12] + (" with uncommitted changes" if state.get("dirty") else "")


def hardware() -> dict:
    """CPU model and cores, memory, GPUs (nvidia-smi), system and Python."""
    info = {"machine": platform.machine(), "system": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(), "cpu_cores": os.cpu_count(), "cpu": platform.processor() or None}
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        kb = int(meminfo.read_text().split("MemTotal:", 1)[1].split()[0])
        info["memory_gb"] = round(kb / 2**20, 1)
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20)
        info["gpus"] = [g.strip() for g in out.stdout.splitlines() if g.strip()] if out.returncode == 0 else []
    except (OSError, subprocess.TimeoutExpired):
        info["gpus"] = []
    return info


def stamp() -> dict:
    """When and at which commit something was made: {"date", "git"}."""
    return {"date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"), "git": git_state()}


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and all its finished descendants: unlike wall time, the
    same on a busy machine as on an idle one (up to contention overheads)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return round(own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime, 1)


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: timings on a shared machine mean little without them."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None
