"""The GPU check's plan (bench/gpu_check.py): its steps, their commands, environment and budget shares, and
how one step runs (Code.processes.run_logged: its own process group, a log file, a timeout); the helper
subcommands (`--helper teacher|load`) the plan starts in their own processes.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from Code.knobs.training import LAUNCHER_VARS  # every variable the launchers read, declared once
from Code.processes import child_env as child_env_of
from Code.processes import run_logged

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "bench" / "gpu_check_out"
DEFAULT_CORPUS = REPO.parent / "shared" / "corpus" / "wikitext-2"
STEP_NAMES = ("teacher", "data", "wd", "wd-resume", "mse", "mse-resume", "load", "kd_step", "eval",
              "logit_memory")
SKIPPABLE = ("wd", "mse", "resume", "kd_step", "eval", "logit_memory")
# Share of --budget each step may use at most (sums to 1); a step also never runs past the deadline.
# The first run also pays for DeepSpeed's one-time op builds on a fresh machine, hence its larger share.
SHARES = {"teacher": 0.04, "data": 0.08, "wd": 0.22, "wd-resume": 0.09, "mse": 0.10, "mse-resume": 0.08,
          "load": 0.04, "kd_step": 0.23, "eval": 0.07, "logit_memory": 0.05}
LAUNCHERS = {"wd": "Code/wd_stu_base.sh", "mse": "Code/mse_stu_base.sh"}
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
LOSS_KEY = re.compile(r"^(loss(/.*)?|val/loss)$")


class UsageError(Exception):
    """A bad flag or argument: one `error:` line, exit status 2."""


def _json_field(path: Path, key: str) -> Any:
    try:
        return json.loads(path.read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None


def teacher_shape(args: argparse.Namespace) -> dict[str, int]:
    """kd_step's shape flags: GPT-2 124M for the random teacher, else the given teacher's config.json."""
    shape = {"n_layer": 12, "n_embd": 768, "n_head": 12, "vocab": 50257}
    if args.teacher is not None:
        cfg = Path(args.teacher) / "config.json"
        for key, name in (("n_layer", "n_layer"), ("n_embd", "n_embd"), ("n_head", "n_head"),
                          ("vocab", "vocab_size")):
            value = _json_field(cfg, name)
            if isinstance(value, int):
                shape[key] = value
    return shape


def corpus_files(folder: Path) -> dict[str, list[str]]:
    """Split -> files of a corpus folder: train.txt/valid.txt/test.txt, else every *.txt as train."""
    folder = folder.resolve()
    if not folder.is_dir():
        raise UsageError(f"--corpus {folder}: no such folder (give a folder of .txt files)")
    named = {split: folder / f"{split}.txt" for split in ("train", "valid", "test")}
    if named["train"].is_file():
        return {split: [str(path)] for split, path in named.items() if path.is_file()}
    texts = sorted(str(p) for p in folder.glob("*.txt"))
    if not texts:
        raise UsageError(f"--corpus {folder}: no train.txt and no *.txt files")
    return {"train": texts}


# ------------------------------------------------------------------------------------------------ plan
@dataclass
class Step:
    name: str
    cmd: list[str]
    env: dict[str, str] = field(default_factory=dict)  # the variables this step sets (shown when printed)
    share: float = 0.1
    needs: tuple[str, ...] = ()                         # steps that must have succeeded first

    def shown(self) -> str:
        """The command as one copy-pasteable shell line (this interpreter shown as `python` if it is that)."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        cmd = ["python" if c == sys.executable and _is_path_python() else c for c in self.cmd]
        return (env + " " if env else "") + shlex.join(cmd)


def _is_path_python() -> bool:
    found = shutil.which("python")
    return bool(found) and Path(found).resolve() == Path(sys.executable).resolve()


def run_env(args: argparse.Namespace, loss: str, steps: int, resume: bool, port: int) -> dict[str, str]:
    out = args.out
    env = {
        "TEACHER": args.teacher or str(out / "teacher"),
        "DATA_DIR": args.data_dir or str(out / "data"),
        "OUT_DIR": str(out / "runs" / loss),
        "MAX_STEPS": str(steps),
        "SEQ_LEN": str(args.seq_len),
        "MICRO_BATCH": str(args.micro_batch),
        "ZERO_STAGE": "2",
        "PRECISION": "bf16",
        "SAVE_INTERVAL": str(args.steps),
        "EVAL_INTERVAL": str(max(1, args.steps // 2)),
        "LOG_INTERVAL": str(max(1, args.steps // 10)),
        "COMPILE": args.compile,
        "SEED": str(1234 + args.seed),
        "MASTER_PORT": str(port),
        "LAUNCHER": "deepspeed",
    }
    if args.gpus:
        env["NUM_GPUS"] = str(args.gpus)
    env["RESUME" if resume else "OVERWRITE"] = "1"
    return env


def plan(args: argparse.Namespace) -> list[Step]:
    py, out = sys.executable, args.out
    steps: list[Step] = []
    if args.teacher is None:
        steps.append(Step("teacher", [py, "bench/gpu_check.py", "--helper", "teacher", str(out / "teacher"),
                                      str(args.seed)]))
    if args.data_dir is None:
        files = corpus_files(Path(args.corpus).expanduser())
        cmd = [py, "Code/data_download.py", "--dataset", "text"]
        for split, paths in files.items():
            cmd += [f"--{split}", *paths]
        steps.append(Step("data", cmd + ["--out-dir", str(out / "data")]))
    base = [s.name for s in steps]
    for i, loss in enumerate(("wd", "mse")):
        if loss in args.skip_set:
            continue
        steps.append(Step(loss, ["bash", LAUNCHERS[loss]], run_env(args, loss, args.steps, False, 29510 + 2 * i),
                          needs=tuple(base)))
        if "resume" not in args.skip_set:
            steps.append(Step(f"{loss}-resume", ["bash", LAUNCHERS[loss]],
                              run_env(args, loss, 2 * args.steps, True, 29511 + 2 * i), needs=(loss,)))
    trained = [loss for loss in ("wd", "mse") if loss not in args.skip_set]
    if trained:
        folders = [str(out / "runs" / loss / kind) for loss in trained for kind in ("best", "final")]
        steps.append(Step("load", [py, "bench/gpu_check.py", "--helper", "load", *folders],
                          needs=tuple(trained)))
    if "kd_step" not in args.skip_set:
        shape = teacher_shape(args)
        student = ",".join(str(i) for i in range(0, shape["n_layer"], 2))  # every other block: 0,2,..,10
        cmd = [py, "bench/kd_step.py", "--device", "cuda", "--precision", "bf16", "--compile", "auto",
               "--n-layer", str(shape["n_layer"]), "--n-embd", str(shape["n_embd"]), "--n-head",
               str(shape["n_head"]), "--vocab", str(shape["vocab"]), "--student-layers", student,
               "--seq-len", "1024", "--batch", "8", "--rounds", "2",
               "--steps", "3", "--num-workers", "2", "--data-dir", args.data_dir or str(out / "data")]
        if args.teacher:
            cmd += ["--teacher", args.teacher]
        steps.append(Step("kd_step", cmd + args.kd_step_extra, needs=tuple(base)))
    if "eval" not in args.skip_set and trained:
        run = out / "runs" / trained[0]
        steps.append(Step("eval", [py, "Code/evaluate_.py", "--ckpt", str(run), "--device", "cuda",
                                   "--max-tokens", "65536", "--tsne-points", "0", "--gen-tokens", "16",
                                   "--no-progress"], needs=(trained[0],)))
    if "logit_memory" not in args.skip_set:
        steps.append(Step("logit_memory", [py, "bench/logit_memory.py", "--device", "cuda", "--dtype", "bf16",
                                           "--tokens", "16384", "--no-plain", "--json-out",
                                           str(out / "logit_memory.json")]))
    for s in steps:
        s.share = SHARES[s.name]
    return steps


# ------------------------------------------------------------------------------------------ running
def child_env(step: Step) -> dict[str, str]:
    """The caller's environment without its launcher variables (a stray LOSS or MAX_STEPS must not slip into
    the check's runs), offline, plus the step's own."""
    env = child_env_of(LAUNCHER_VARS)
    env.update(OFFLINE)
    env.update(step.env)
    return env


def run_step(step: Step, timeout: float, log_path: Path, verbose: bool) -> dict[str, Any]:
    """Run in its own process group (a timeout kills the whole tree: deepspeed's launcher and ranks)."""
    done = run_logged(step.cmd, child_env(step), log_path, header=f"+ {step.shown()}", timeout=timeout,
                      echo=verbose, mode="w")
    return {"name": step.name, "command": step.shown(), "status": done.status, "rc": done.rc,
            "seconds": done.seconds, "timeout_s": round(timeout, 1), "log": str(log_path)}


# ------------------------------------------------------------------------------------------- helpers
def helper(argv: list[str]) -> int:
    """Subcommands the plan runs in their own processes: `teacher DIR SEED`, `load DIR...`."""
    what, rest = argv[0], argv[1:]
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    if what == "teacher":
        out, seed = Path(rest[0]), int(rest[1])
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(GPT2Config())  # GPT-2 small: 12 x 768, 12 heads, 1024 positions, V = 50,257
        model.save_pretrained(out)
        n = sum(p.numel() for p in model.parameters())
        print(json.dumps({"teacher": str(out), "params": n, "config": "GPT2Config()", "seed": seed}))
        return 0
    if what == "load":
        device = "cuda" if torch.cuda.is_available() else "cpu"
        ok = True
        for folder in rest:
            rec: dict[str, Any] = {"folder": folder, "ok": False}
            try:
                model = GPT2LMHeadModel.from_pretrained(folder).to(device).eval()
                ids = torch.arange(16, device=device)[None] * 97 % model.config.vocab_size
                with torch.no_grad():
                    logits = model(ids).logits
                info_path = Path(folder) / "distill_info.json"
                info = json.loads(info_path.read_text()) if info_path.is_file() else {}
                rec.update(ok=bool(torch.isfinite(logits).all()), n_layer=model.config.n_layer,
                           params=sum(p.numel() for p in model.parameters()), step=info.get("step"))
            except Exception as exc:  # noqa: BLE001 - reported, not raised: the check records it
                rec["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            ok &= rec["ok"]
            print(json.dumps(rec), flush=True)
        return 0 if ok else 1
    raise UsageError(f"unknown helper '{what}'")
