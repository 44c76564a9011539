"""bench/kd_step.py's peak memory: `mse` and the peer, each built alone in a fresh subprocess (bench/kd_step.py
with the hidden `--memory-child ours|peer`); CPU: rise of the RSS high-water mark, GPU: max_memory_allocated."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from kd_peer import make_peer, peer_steps
from kd_setup import Setup

ENTRY = Path(__file__).with_name("kd_step.py")  # the children run the entry point with --memory-child


# ---------------------------------------------------------------------------------------------- memory
def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_rss_peak() -> None:
    """Linux: "5" to clear_refs resets VmHWM to the current RSS (imports peaked above it already)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def rss_peak_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def memory_child(opts: argparse.Namespace, data_dir: Path, which: str) -> None:
    """Build only `which` (ours or peer) in this fresh process, run 3 steps, print its peak memory."""
    device = torch.device(opts.device)
    reset_rss_peak()
    base = rss_bytes()
    setup = Setup(opts, data_dir, device, with_peer=which == "peer", with_engine=which == "ours")
    if which == "ours":
        for _ in range(3):
            setup.case_step("mse")
        setup.log_interval_sync()
    else:
        with tempfile.TemporaryDirectory() as tmp:
            trainer, clock = make_peer(setup, tmp)
            peer_steps(trainer, clock, 2)
    if device.type == "cuda":
        peak, method = torch.cuda.max_memory_allocated(device), "torch.cuda.max_memory_allocated"
    else:
        peak = rss_peak_bytes() - base
        method = "RSS high-water mark (VmHWM, reset before the models) minus RSS then, fresh subprocess"
    print(json.dumps({"which": which, "peak_bytes": peak, "method": method}))


def measure_memory(argv: list[str]) -> dict[str, dict]:
    """Both children side by side (memory is not timing), each in its own process."""
    # Without the rendezvous variables of this process: each child picks its own free port.
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    procs = {which: subprocess.Popen([sys.executable, str(ENTRY), *argv, "--memory-child", which], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for which in ("ours", "peer")}
    out = {}
    for which, proc in procs.items():
        stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"memory child {which} failed:\n{stderr[-3000:]}")
        out[which] = json.loads(stdout.strip().splitlines()[-1])
    return out
