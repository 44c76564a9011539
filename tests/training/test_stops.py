"""Clean stops (signal -> flag -> agreed at a step boundary -> exit 143/130), the time-based save, the launcher's
stderr filter, and the environment faults' one-liners (busy port, full disk)."""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys

import pytest

from Code.training.env_faults import disk_message
from Code.training.stops import StopWatch
from tests.support.tiny_setup import REPO, quiet_env


def test_a_signal_stops_at_the_next_poll_with_its_exit_code():
    watch = StopWatch(save_every_minutes=0, world_size=1)
    watch.install()
    try:
        assert watch.poll() == (False, False)
        os.kill(os.getpid(), signal.SIGTERM)  # the handler only sets the flag: this process lives on
        os.kill(os.getpid(), signal.SIGTERM)  # a repeat (the launcher forwarding it again) changes nothing
        assert watch.poll() == (True, False)
        assert (watch.exit_code, watch.signal_name) == (143, "SIGTERM")
    finally:
        watch.uninstall()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_ctrl_c_gives_130_and_twice_gives_up_on_the_save():
    watch = StopWatch(save_every_minutes=0, world_size=1)
    watch.install()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert watch.poll()[0] and watch.exit_code == 130
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        watch.uninstall()


def test_time_based_save_is_due_after_the_interval_and_resets_on_save():
    watch = StopWatch(save_every_minutes=10, world_size=1)
    assert watch.poll() == (False, False)
    watch.last_save -= 601  # ten minutes and a second ago
    assert watch.poll() == (False, True)
    watch.saved()
    assert watch.poll() == (False, False)
    assert StopWatch(save_every_minutes=0, world_size=1).poll() == (False, False)  # 0: off


def _filter(data: bytes, **env: str) -> bytes:
    proc = subprocess.run([sys.executable, "-m", "Code.training.launch_output"], input=data, capture_output=True,
                          cwd=REPO, env=quiet_env(**{"VERBOSE": "0", **env}), timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


LAUNCH_INFO = b"[2026-12-03 10:07:19,000] [INFO] [launch.py:256:main] process 4242 spawned with command: [...]\n"
NOISE = (b"[2026-12-03 10:07:26,664] [ERROR] [launch.py:325:sigkill_handler] ['python', 'x.py'] exits with "
         b"return code = 2\n")
ERRORS = b"error: [rank 0] the data is bad: fix it\n" + b"error: [rank 1] the data is bad: fix it\n"


def test_launcher_noise_goes_and_nothing_passes_after_our_error_line():
    warn = b"[2026-12-03 10:07:20,000] [WARNING] [real_accelerator.py:213:get_accelerator] Setting accelerator\n"
    bar = b"\r 10%|#         | 1/10"  # a progress bar redrawn without a newline passes as it comes
    out = _filter(LAUNCH_INFO + warn + bar + b"\r 20%|##        | 2/10\n" + NOISE + ERRORS + NOISE
                  + b"Traceback (most recent call last):\n")
    assert out == warn + bar + b"\r 20%|##        | 2/10\n" + b"error: [rank 0] the data is bad: fix it\n"


def test_verbose_passes_every_line_the_launchers_and_those_after_an_error_included():
    elastic = (b"W1203 10:22:33.123000 1234 torch/distributed/elastic/agent/server/api.py:719] Received "
               b"Signals.SIGTERM death signal, shutting down workers\n")
    data = LAUNCH_INFO + b"\r 10%|#  | 1/10" + NOISE + ERRORS + elastic + NOISE + b"[runner.py partial line"
    assert _filter(data, VERBOSE="1") == data


def test_torchrun_shutdown_chatter_goes():
    lines = (b"step 3/40 loss=7.1\n"
             b"W1203 10:22:33.123000 1234 torch/distributed/elastic/agent/server/api.py:719] Received Signals.SIGTERM "
             b"death signal, shutting down workers\nTraceback (most recent call last):\n  ...SignalException\n")
    assert _filter(lines) == b"step 3/40 loss=7.1\n"


def _port_cmd(*port: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "Code.training.env_faults", "port", *port], capture_output=True,
                          text=True, cwd=REPO, env=quiet_env(), timeout=60)


def test_a_busy_master_port_is_one_line_with_a_free_one_to_use():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _port_cmd(str(port))
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: MASTER_PORT {port} is in use")
    assert "MASTER_PORT=" in lines[0]
    free = _port_cmd()  # unset: one is picked
    assert free.returncode == 0 and 1024 <= int(free.stdout) <= 65535
    assert _port_cmd(free.stdout.strip()).stdout.strip() == free.stdout.strip()  # a free one is kept


def test_disk_full_is_one_line_naming_the_path_and_the_bytes(tmp_path):
    exc = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "checkpoints" / "step5" / "x.pt"))
    line = disk_message(exc, tmp_path, need_bytes=3 * 2**20)
    assert line is not None and "\n" not in line
    assert "no space left" in line and "step5/x.pt" in line and "3.0 MiB needed" in line and "--resume" in line
    torch_style = RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0 / "
                               "PytorchStreamWriter failed writing file data/0: file write failed")
    assert disk_message(torch_style, tmp_path) is not None
    assert disk_message(OSError(errno.EACCES, "Permission denied"), tmp_path) is None
    assert disk_message(RuntimeError("shape mismatch"), tmp_path) is None


def test_a_launcher_killed_with_9_stops_its_ranks_as_a_sigterm(monkeypatch):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # its PID now names no process
    monkeypatch.setenv("DISTILL_LAUNCHER_PID", str(gone.pid))
    monkeypatch.setenv("DISTILL_LAUNCHER_HOST", socket.gethostname())
    watch = StopWatch(save_every_minutes=0, world_size=1)
    assert watch.poll() == (True, False) and watch.exit_code == 143
    monkeypatch.setenv("DISTILL_LAUNCHER_PID", str(os.getpid()))  # alive: nothing happens
    assert StopWatch(save_every_minutes=0, world_size=1).poll() == (False, False)
    monkeypatch.setenv("DISTILL_LAUNCHER_PID", str(gone.pid))
    monkeypatch.setenv("DISTILL_LAUNCHER_HOST", "another-node")  # a PID of another host says nothing here
    assert StopWatch(save_every_minutes=0, world_size=1).poll() == (False, False)
