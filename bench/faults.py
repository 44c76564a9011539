"""Fault suite: inject each fault a user meets into real runs (tiny teacher, 1-2 CPU ranks), print one table.

    python bench/faults.py                 # every fault, kill -9 three times: a few minutes on 2 busy cores
    python bench/faults.py --kills 9       # more random kills
    python bench/faults.py --only sigterm  # faults whose name contains a word

Each row: the fault, what happened (the line the user read), the steps lost (trained steps that had to be
trained again: the step reached minus the step resumed from) and the exit code. A resumed run's final weights
are compared with an uninterrupted run of the same length ("= uninterrupted": bit-identical). Nothing here
asserts: the tests (tests/training/test_faults*.py, test_stops*.py) do. The second checkout is a venv with
the package registered from a copy (the machine's own install is never touched).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CODE = REPO / "Code"
CORPUS = REPO.parent / "shared" / "corpus" / "wikitext-2"
STEPS = 30
FLAGS = ["--seq-len", "32", "--micro-batch-size", "2", "--log-interval", "1", "--eval-interval", "1000",
         "--eval-iters", "1", "--save-interval", "5", "--keep-checkpoints", "3", "--warmup-steps", "1", "--lr",
         "1e-3", "--student-layers", "0,2", "--no-progress", "--no-tensorboard", "--num-workers", "0",
         "--precision", "fp32", "--loss", "mse+lm", "--max-steps", str(STEPS),
         "--min-lr-ratio", "1.0"]  # constant LR after warm-up: a run stopped at step k and resumed to k+5 can be
LONG = ["--max-steps", "5000"]   # compared with an uninterrupted run of k+5 steps (the schedule ignores max-steps)
ROWS: list[tuple[str, str, str, str]] = []


def env(**extra: str) -> dict[str, str]:
    out = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1",
               OMP_NUM_THREADS="1")
    out.update(extra)
    return out


class Setup:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        subprocess.run([sys.executable, str(CODE / "data_download.py"), "--dataset", "text", "--train",
                        str(CORPUS / "valid.txt"), "--valid", str(CORPUS / "test.txt"), "--test",
                        str(CORPUS / "test.txt"), "--out-dir", str(self.data), "--train-tokenizer", "2048"],
                       check=True, capture_output=True, env=env())
        self.teacher = root / "teacher"
        subprocess.run([sys.executable, "-c", (
            "import sys, torch; from transformers import GPT2Config, GPT2LMHeadModel; torch.manual_seed(0); "
            "GPT2LMHeadModel(GPT2Config(vocab_size=int(sys.argv[2]), n_positions=128, n_embd=64, n_layer=4, "
            "n_head=4, bos_token_id=0, eos_token_id=0)).save_pretrained(sys.argv[1])"), str(self.teacher), "2048"],
            check=True, capture_output=True, env=env())

    def cmd(self, out: Path, *extra: str) -> list[str]:
        return [sys.executable, str(CODE / "train_related.py"), "--teacher", str(self.teacher), "--data-dir",
                str(self.data), "--out-dir", str(out), *FLAGS, *extra]

    def launcher_env(self, out: Path, **extra: str) -> dict[str, str]:
        return env(TEACHER=str(self.teacher), DATA_DIR=str(self.data), OUT_DIR=str(out), **extra)

    def launcher(self, *extra: str) -> list[str]:
        return ["bash", str(CODE / "wd_stu_base.sh"), *FLAGS, *extra]


def run(cmd: list[str], environ: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=environ, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def start(cmd: list[str], environ: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=environ, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def logged_step(out: Path) -> int:
    path = out / "metrics.jsonl"
    if not path.is_file():
        return 0
    import json

    steps = [json.loads(ln).get("step", 0) for ln in path.read_text().splitlines() if ln.strip().endswith("}")]
    return max(steps, default=0)


def wait_step(out: Path, proc: subprocess.Popen, step: int, timeout: float = 400, poll: float = 0.05) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if logged_step(out) >= step:
            return True
        time.sleep(poll)
    return False


def said(proc: subprocess.CompletedProcess | tuple[str, str], *marks: str) -> str:
    """The line the user reads: the first error line, else the first line holding a mark."""
    stdout, stderr = (proc.stdout, proc.stderr) if hasattr(proc, "stdout") else proc
    lines = [ln.strip() for ln in (stderr + "\n" + stdout).splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith("error:"):
            return ln
    for mark in marks:
        for ln in lines:
            if mark in ln:
                return ln
    return lines[-1] if lines else "(no output)"


def resumed_from(text: str) -> int | None:
    for ln in text.splitlines():
        if ln.startswith("resumed from step "):
            return int(ln.split()[3])
    return None


def same_final(a: Path, b: Path) -> str:
    import torch
    from safetensors.torch import load_file

    x, y = load_file(a / "final" / "model.safetensors"), load_file(b / "final" / "model.safetensors")
    same = x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    return "= uninterrupted" if same else "DIFFERS from uninterrupted"


def row(fault: str, happened: str, lost: int | str, code: int | None) -> None:
    happened = happened.replace(str(ROOT), "…").replace("|", "/")
    ROWS.append((fault, happened[:230], str(lost), str(code)))
    print(f"[{time.strftime('%H:%M:%S')}] {fault}: {happened[:160]} (lost {lost}, exit {code})", flush=True)


# ---------------------------------------------------------------------------------------------------- faults
def uninterrupted(s: Setup) -> Path:
    out = s.root / "uninterrupted"
    proc = run(s.cmd(out), env())
    row("none (reference run)", said(proc, "done:"), 0, proc.returncode)
    return out


def kills(s: Setup, ref: Path, n: int, rng: random.Random) -> None:
    """kill -9 at random steps, n times on one run, resuming after each; then the run finishes."""
    out = s.root / "killed"
    pairs: list[tuple[int, int]] = []
    code = None
    for i in range(n):
        low = logged_step(out) + 1
        if low > STEPS - 3:
            break
        at = rng.randint(low, STEPS - 3)
        proc = start(s.cmd(out, *(["--resume"] if i else [])), env())
        if not wait_step(out, proc, at, poll=0.005):  # a random step, then a random moment within it
            proc.communicate()                        # (a tiny step takes 0.03-0.1 s): mid-step, mid-save, mid-log
            break
        time.sleep(rng.uniform(0, 0.05))
        if proc.poll() is not None:
            break
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        code = 128 - proc.returncode if proc.returncode < 0 else proc.returncode  # as a shell reports it
        pairs.append((logged_step(out), latest_whole_step(out) or 0))  # (logged when killed, resumed from)
    final = run(s.cmd(out, "--resume"), env())
    what = (f"killed after step {', '.join(str(a) for a, _ in pairs)}; resumed from step "
            f"{', '.join(str(b) for _, b in pairs)}; final {same_final(ref, out)}")
    row(f"kill -9 at random moments (x{len(pairs)})", what if final.returncode == 0 else said(final),
        sum(a - b for a, b in pairs), code)


def latest_whole_step(out: Path) -> int | None:
    from Code.run_folder import newest_whole, step_of

    tag = newest_whole(out / "checkpoints")
    return step_of(tag) if tag else None


def copy_run(ref: Path, name: str) -> Path:
    out = ref.parent / name
    shutil.copytree(ref, out)
    (out / "run.lock").unlink(missing_ok=True)
    return out


def flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def damaged_checkpoints(s: Setup, ref: Path) -> None:
    """Each kind of checkpoint file damaged in the newest step; resumed with 5 more steps."""
    newest = ref / "checkpoints" / f"step{STEPS}"
    kinds = {p.name: p.name for p in newest.iterdir() if p.is_file()}
    cases = [(f"byte flip in {name}", lambda f, n=name: flip(f / n)) for name in sorted(kinds)]
    big = max(newest.glob("*.pt"), key=lambda p: p.stat().st_size).name
    cases.append((f"truncated {big}", lambda f: os.truncate(f / big, (f / big).stat().st_size // 2)))
    cases.append(("newest step folder deleted", lambda f: shutil.rmtree(f)))
    for i, (fault, damage) in enumerate(cases):
        out = copy_run(ref, f"damaged{i}")
        damage(out / "checkpoints" / f"step{STEPS}")
        proc = run(s.cmd(out, "--resume", "--max-steps", str(STEPS + 5)), env())
        back = resumed_from(proc.stdout)
        row(fault, said(proc, "skipping checkpoint", "resumed from"), STEPS - back if back is not None else "-",
            proc.returncode)
    out = copy_run(ref, "dangling")
    (out / "checkpoints" / "latest").write_text("step999")
    proc = run(s.cmd(out, "--resume", "--max-steps", str(STEPS + 5)), env())
    back = resumed_from(proc.stdout)
    row("dangling `latest`", said(proc, "names no checkpoint", "resumed from"),
        STEPS - back if back is not None else "-", proc.returncode)
    out = copy_run(ref, "flipped_final")
    flip(next((out / "final").glob("*.safetensors")))
    proc = run([sys.executable, str(CODE / "evaluate_.py"), "--ckpt", str(out / "final"), "--data-dir",
                str(s.data), "--teacher", str(s.teacher), "--max-tokens", "2000"], env())
    row("byte flip in final/model.safetensors (evaluate_.py)", said(proc), "-", proc.returncode)


def sigterm_launcher(s: Setup) -> Path:
    out = s.root / "sigterm_launcher"
    proc = start(s.launcher(*LONG), s.launcher_env(out))
    wait_step(out, proc, 4)
    second = run(s.launcher(*LONG, "--resume"), s.launcher_env(out), timeout=300)
    row("a second run into the same folder (RESUME=1 while it runs)", said(second), "-", second.returncode)
    reached = logged_step(out)
    os.kill(proc.pid, signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=300)
    stop = latest_whole_step(out) or 0
    row("SIGTERM to the launcher", said((stdout, stderr), "stopped by"), max(0, reached - stop), proc.returncode)
    end = ["--max-steps", str(stop + 5)]
    resumed = run(s.launcher(*end), s.launcher_env(out, RESUME="1"))
    ref = s.root / "reference_sigterm"
    run(s.launcher(*end), s.launcher_env(ref))  # the same launcher (its preset) without the stop
    row("  ... then RESUME=1 (5 more steps)", said(resumed, "resumed from") + f"; final {same_final(ref, out)}"
        if resumed.returncode == 0 else said(resumed), 0, resumed.returncode)
    return out


def sigterm_rank(s: Setup) -> None:
    out = s.root / "sigterm_rank"
    proc = start(s.launcher(*LONG), s.launcher_env(out, NUM_GPUS="2"))
    wait_step(out, proc, 4)
    ranks = [int(p.name) for p in Path("/proc").iterdir()
             if p.name.isdigit() and _cmdline(p, str(out), "--local_rank=1")]
    reached = logged_step(out)
    for pid in ranks:
        os.kill(pid, signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=300)
    stop = latest_whole_step(out) or 0
    row("SIGTERM to one rank (2 ranks)", said((stdout, stderr), "stopped by"), max(0, reached - stop),
        proc.returncode)
    left = [p.name for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline(p, str(out))]
    row("  ... processes left of that run", f"{len(left)} process(es) still running", "-", "-")
    fewer = run(s.launcher(*LONG), s.launcher_env(out, RESUME="1"), timeout=300)
    row("resume a 2-rank run on 1 rank", said(fewer), "-", fewer.returncode)


def _cmdline(proc_dir: Path, *marks: str) -> bool:
    try:
        line = (proc_dir / "cmdline").read_bytes()
    except OSError:
        return False
    return all(m.encode() in line for m in marks)


def kill9_launcher(s: Setup) -> None:
    """kill -9 to the launcher script: nothing to trap; its ranks notice it is gone, save and stop."""
    out = s.root / "kill9_launcher"
    proc = start(s.launcher(*LONG), s.launcher_env(out))
    wait_step(out, proc, 4)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 120
    while time.time() < deadline and any(_cmdline(p, f"--out-dir {out} ") for p in Path("/proc").iterdir()
                                         if p.name.isdigit()):
        time.sleep(0.2)
    left = sum(_cmdline(p, f"--out-dir {out} ") for p in Path("/proc").iterdir() if p.name.isdigit())
    reached, stop = logged_step(out), latest_whole_step(out) or 0
    stopped = [ln for ln in proc.stdout.read().splitlines() if ln.startswith("stopped by")] if proc.stdout else []
    row("kill -9 to the launcher", (stopped[0] if stopped else f"checkpoint step{stop} saved") +
        f"; {left} process(es) of the run left", max(0, reached - stop), 128 - proc.returncode)


def changed_setting(s: Setup, ref: Path) -> None:
    out = copy_run(ref, "changed")
    proc = run(s.cmd(out, "--resume", "--max-steps", str(STEPS + 5), "--seq-len", "16"), env())
    row("resume with another --seq-len", said(proc), "-", proc.returncode)


def other_checkout(s: Setup) -> None:
    """A copy of this checkout registered as the `Code` package in a venv (a path entry in its site-packages: what
    `pip install -e` amounts to), and this checkout's entry run by that venv's Python."""
    clone, venv = s.root / "clone", s.root / "venv"
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{REPO}", str(clone)], check=True)
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], env()).stdout.strip()
    (Path(site) / "other_checkout.pth").write_text(f"{clone}\n")
    proc = run([str(python), str(CODE / "train_related.py"), "--help"], env())
    row("entry of one checkout, package installed from another", said(proc), "-", proc.returncode)


def full_disk(s: Setup) -> None:
    out = s.root / "full_disk"
    cmd = " ".join(f"'{c}'" for c in s.cmd(out))
    proc = run(["bash", "-c", f"ulimit -f 600; exec {cmd}"], env())  # 600 KiB per file: a checkpoint does not fit
    whole = latest_whole_step(out)
    partial = [p.name for p in (out / "checkpoints").glob("step*")] if (out / "checkpoints").is_dir() else []
    row("full disk (ulimit -f 600 KiB per file)", said(proc) + f" [step folders left: {partial or 'none'}]",
        logged_step(out) - (whole or 0), proc.returncode)


def busy_port(s: Setup) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        proc = run(s.launcher(), s.launcher_env(s.root / "busy", MASTER_PORT=str(busy.getsockname()[1])))
    row("busy MASTER_PORT", said(proc), "-", proc.returncode)


def data_faults(s: Setup) -> None:
    bad = s.root / "data_changed"
    shutil.copytree(s.data, bad)
    (bad / ".verified.json").unlink(missing_ok=True)
    flip(bad / "train.bin")
    proc = run([sys.executable, str(CODE / "train_related.py"), "--check", "--teacher", str(s.teacher),
                "--data-dir", str(bad), "--out-dir", str(s.root / "data_run"), *FLAGS], env())
    row("train.bin changed after conversion", said(proc), "-", proc.returncode)
    big = s.root / "teacher_50257"
    subprocess.run([sys.executable, "-c", (
        "import sys; from transformers import GPT2Config, GPT2LMHeadModel; GPT2LMHeadModel(GPT2Config("
        "vocab_size=50257, n_positions=64, n_embd=16, n_layer=2, n_head=2)).save_pretrained(sys.argv[1])"),
        str(big)], check=True, capture_output=True, env=env())
    proc = run([sys.executable, str(CODE / "train_related.py"), "--check", "--teacher", str(big), "--data-dir",
                str(s.data), "--out-dir", str(s.root / "vocab_run"), *FLAGS], env())
    row("teacher of 50,257 ids over 2,048-id data", said(proc), "-", proc.returncode)


def main() -> None:
    global ROOT
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=3, help="kill -9 this many times at random moments")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="", help="run the faults whose function name contains this word")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    ROOT = Path(tempfile.mkdtemp(prefix="faults-"))
    t0 = time.perf_counter()
    try:
        s = Setup(ROOT)
        ref = uninterrupted(s)
        rng = random.Random(args.seed)
        steps = [("kills", lambda: kills(s, ref, args.kills, rng)), ("damaged", lambda: damaged_checkpoints(s, ref)),
                 ("sigterm", lambda: sigterm_launcher(s)), ("sigterm_rank", lambda: sigterm_rank(s)),
                 ("kill9_launcher", lambda: kill9_launcher(s)),
                 ("changed", lambda: changed_setting(s, ref)), ("checkout", lambda: other_checkout(s)),
                 ("disk", lambda: full_disk(s)), ("port", lambda: busy_port(s)), ("data", lambda: data_faults(s))]
        for name, fn in steps:
            if args.only in name:
                fn()
    finally:
        if not args.keep:
            shutil.rmtree(ROOT, ignore_errors=True)
    print(f"\n{len(ROWS)} rows in {time.perf_counter() - t0:.0f} s (python bench/faults.py --kills {args.kills})\n")
    print("| fault | what happened | steps lost | exit |\n|---|---|---|---|")
    for r in ROWS:
        print("| " + " | ".join(r) + " |")


ROOT = Path(".")

if __name__ == "__main__":
    main()
