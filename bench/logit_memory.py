"""Peak memory of the logit KD terms (forward + backward) per token, against the student's cross-entropy.

    python bench/logit_memory.py --quick     # V = 50,257, 512 tokens: well under a minute on 2 CPU cores
    python bench/logit_memory.py             # V = 50,257, 2048 tokens, fp32 (what CPU runs train in)
    python bench/logit_memory.py --dtype bf16 --tokens 1024   # bf16 logits, as under DeepSpeed BF16

Cases, each forward + backward of the masked token mean (`masked_mean`, ~10% of rows labelled -100):
  ce         the student's own cross-entropy as training runs it (`logit.cross_entropy_rows`, the `lm`
             term); every ratio is to this case's peak in the same run
  ce/plain   `F.cross_entropy(reduction="none")` (reference)
  <term>     kd, rkl, jsd, skl, tvd through the project's chunked autograd Functions
  <term>/plain  the textbook form: log_softmax of both (whole rows), then the divergence, plain autograd
The teacher logits have no gradient; the student logits do, so every case's peak holds that gradient.

Measurement: each case runs in a fresh subprocess that allocates the inputs (student logits with
requires_grad, teacher logits, labels), runs the same case once at 4 rows (so thread pools, the autograd
engine and lazily loaded code are already resident), then resets the RSS high-water mark (Linux: "5"
into /proc/self/clear_refs) and runs the case; its peak = VmHWM - VmRSS just before. glibc's malloc is
pinned to mmap every block of 64 KiB and more (MALLOC_MMAP_THRESHOLD_) and to trim freed heap at once
(MALLOC_TRIM_THRESHOLD_), so a freed tensor leaves RSS immediately and the high-water mark is the true
peak of live tensors. Where clear_refs is unavailable, the peak is ru_maxrss minus that of a subprocess
that only allocates the inputs and warms up. On CUDA (`--device cuda`) all cases share one subprocess:
torch.cuda.max_memory_allocated after reset_peak_memory_stats, minus the memory allocated before (the
caching allocator counts live tensors exactly). Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TERMS = ("kd", "rkl", "jsd", "skl", "tvd")
KIND = {"kd": ("fkl", 0.0), "rkl": ("rkl", 0.0), "jsd": ("jsd", 0.5), "skl": ("skl", 0.1), "tvd": ("tvd", 0.0)}
MIB = 1 << 20


# ------------------------------------------------------------------------------------------- the child
def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _status_kib("VmHWM")
        return True
    except (OSError, RuntimeError):
        return False


def _run_case(case: str, s, t, labels, temperature: float) -> float:
    import torch.nn.functional as F

    from Code.objectives import logit as ll
    from Code.objectives.masking import label_mask, masked_mean

    term, _, variant = case.partition("/")
    if term == "ce":
        if variant == "plain":
            rows = F.cross_entropy(s.float(), labels, reduction="none", ignore_index=-100)
        else:
            rows = ll.cross_entropy_rows(s, labels)
    else:
        kind, c = KIND[term]
        if variant == "plain":
            rows = ll.plain_rows(kind, s, t, 1.0 / temperature, c)
        else:
            fn = {"kd": lambda: ll.forward_kl_rows(s, t, temperature),
                  "rkl": lambda: ll.reverse_kl_rows(s, t, temperature),
                  "jsd": lambda: ll.jsd_rows(s, t, temperature, c),
                  "skl": lambda: ll.skew_kl_rows(s, t, temperature, c),
                  "tvd": lambda: ll.tvd_rows(s, t, temperature)}[term]
            rows = fn()
    loss = masked_mean(rows, label_mask(labels))
    loss.backward()
    return float(loss.detach())


def child(args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    gen = torch.Generator(device=device).manual_seed(args.seed)

    def inputs(n: int):
        s = torch.randn(n, args.vocab, generator=gen, device=device).mul_(2).to(dtype).requires_grad_()
        t = torch.randn(n, args.vocab, generator=gen, device=device).mul_(3).to(dtype)
        labels = torch.randint(0, args.vocab, (n,), generator=gen, device=device)
        labels[torch.rand(n, generator=gen, device=device) < 0.1] = -100
        return s, t, labels

    s, t, labels = inputs(args.tokens)
    warm = inputs(4)
    cases = args.child.split(",")
    for case in cases:
        if case != "inputs":
            _run_case(case, *warm, args.temperature)  # lazily loaded code and pools land before the reset
    del warm
    for case in cases:  # CPU: one case per process; CUDA: the allocator's own peak, so all in one
        s.grad = None
        out: dict = {"case": case, "method": None, "peak_bytes": None}
        value = None
        if device.type == "cuda":
            torch.cuda.synchronize()
            before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            if case != "inputs":
                value = _run_case(case, s, t, labels, args.temperature)
            torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            out.update(method="cuda.max_memory_allocated", peak_bytes=torch.cuda.max_memory_allocated() - before)
        else:
            hwm = _reset_hwm()
            rss0 = _status_kib("VmRSS") if hwm else 0
            start = time.perf_counter()
            if case != "inputs":
                value = _run_case(case, s, t, labels, args.temperature)
            seconds = time.perf_counter() - start
            if hwm:
                out.update(method="VmHWM", peak_bytes=(_status_kib("VmHWM") - rss0) * 1024)
        out.update(value=value, seconds=round(seconds, 3),
                   maxrss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        print(json.dumps(out), flush=True)


# ------------------------------------------------------------------------------------------ the parent
def _spawn(case: str, args: argparse.Namespace) -> list[dict]:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0",
               MALLOC_TOP_PAD_="0", OMP_NUM_THREADS=str(args.threads) if args.threads else
               os.environ.get("OMP_NUM_THREADS", ""))
    if not env["OMP_NUM_THREADS"]:
        del env["OMP_NUM_THREADS"]
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", case, "--vocab", str(args.vocab),
           "--tokens", str(args.tokens), "--dtype", args.dtype, "--device", args.device,
           "--temperature", str(args.temperature), "--seed", str(args.seed), "--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or len(lines) != len(case.split(",")):
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SystemExit(f"error: case {case} failed (exit {proc.returncode}): {tail}")
    return [json.loads(ln) for ln in lines]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="512 tokens (default 2048), V = 50,257")
    p.add_argument("--vocab", type=int, default=50257)
    p.add_argument("--tokens", type=int, default=None, help="rows of logits (default 2048; --quick 512)")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="dtype of both models' logits")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--terms", default=",".join(TERMS), help="comma list of " + ", ".join(TERMS))
    p.add_argument("--no-plain", action="store_true", help="skip the plain full-softmax references")
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--rounds", type=int, default=1, help="measure every case this many times (median)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=float, default=1.5, help="ratio to ce each term must stay within")
    p.add_argument("--check", action="store_true", help="exit 1 when a term's ratio exceeds --limit")
    p.add_argument("--json-out", default=None, help="also write the JSON summary to this file")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.tokens is None:
        args.tokens = 512 if args.quick else 2048
    terms = [x.strip() for x in args.terms.split(",") if x.strip()]
    bad = [x for x in terms if x not in TERMS]
    if bad or not terms:
        p.error(f"--terms: unknown term {bad[0] if bad else '(none)'}; known: {', '.join(TERMS)}")
    if args.tokens < 8 or args.vocab < 2 or args.rounds < 1:
        p.error("--tokens must be >= 8, --vocab >= 2, --rounds >= 1")
    args.term_list = terms
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.child:
        child(args)
        return 0
    import torch

    cases = ["ce"] + ([] if args.no_plain else ["ce/plain"])
    for term in args.term_list:
        cases += [term] + ([] if args.no_plain else [f"{term}/plain"])
    started = time.time()
    runs: dict[str, list[dict]] = {c: [] for c in cases + ["inputs"]}
    for r in range(args.rounds):
        order = ["inputs"] + cases[r % len(cases):] + cases[: r % len(cases)]  # rotated each round
        groups = [",".join(order)] if args.device.startswith("cuda") else order
        for group in groups:
            for rec in _spawn(group, args):
                runs[rec["case"]].append(rec)
                print(f"  {rec['case']:<10} {rec}", file=sys.stderr, flush=True)
    method = "VmHWM" if all(x["method"] == "VmHWM" for c in cases for x in runs[c]) else None
    if args.device.startswith("cuda"):
        method = "cuda.max_memory_allocated"
    base = statistics.median(x["maxrss_bytes"] for x in runs["inputs"])

    def peak(case: str) -> float:
        if method:
            return statistics.median(x["peak_bytes"] for x in runs[case])
        return statistics.median(x["maxrss_bytes"] - base for x in runs[case])

    peaks = {c: peak(c) for c in cases}
    values = {c: statistics.median(x["value"] for x in runs[c]) for c in cases}
    seconds = {c: statistics.median(x["seconds"] for x in runs[c]) for c in cases}
    ce = peaks["ce"]
    itemsize = 4 if args.dtype == "fp32" else 2
    print(f"\nlogit KD memory: V={args.vocab}, {args.tokens} tokens, {args.dtype} logits, T={args.temperature}, "
          f"{args.device}, peak by {method or 'ru_maxrss minus an inputs-only subprocess'}; the gradient of the "
          f"student logits alone is {args.vocab * itemsize} B/token")
    head = "| term | peak MiB | bytes/token | ratio to ce | s | plain peak MiB | plain ratio | ours/plain |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    ratios, plain_ratios = {}, {}
    for term in ["ce"] + args.term_list:
        p = peaks[term]
        ratios[term] = p / ce
        row = f"| {term} | {p / MIB:.0f} | {p / args.tokens:.0f} | {p / ce:.3f} | {seconds[term]:.2f} |"
        plain = f"{term}/plain"
        if plain in peaks:
            plain_ratios[term] = peaks[plain] / ce
            row += f" {peaks[plain] / MIB:.0f} | {peaks[plain] / ce:.3f} | {p / peaks[plain]:.3f} |"
            rel = abs(values[term] - values[plain]) / max(1e-12, abs(values[plain]))
            if rel > 1e-3:
                print(f"warning: {term} value {values[term]:.6g} differs from the plain {values[plain]:.6g}",
                      file=sys.stderr)
        else:
            row += " | | |"
        print(row)
    worst = max(ratios[t] for t in args.term_list)
    verdict = "ok" if worst <= args.limit else "OVER"
    print(f"max ratio to ce over {', '.join(args.term_list)}: {worst:.3f} (limit {args.limit}: {verdict}); "
          f"{time.time() - started:.0f} s")
    summary = {
        "bench": "logit_memory", "date": time.strftime("%Y-%m-%d"), "vocab": args.vocab, "tokens": args.tokens,
        "dtype": args.dtype, "device": args.device, "temperature": args.temperature, "method": method or
        "ru_maxrss-minus-inputs", "rounds": args.rounds, "peak_bytes": peaks, "bytes_per_token":
        {c: peaks[c] / args.tokens for c in cases}, "ratio_to_ce": ratios, "plain_ratio_to_ce": plain_ratios,
        "values": values, "seconds": seconds, "max_ratio": worst, "limit": args.limit, "ok": worst <= args.limit,
        "torch": torch.__version__, "python": platform.python_version(), "cpu_count": os.cpu_count(),
    }
    print(json.dumps(summary))
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(summary, indent=1) + "\n")
    return 1 if args.check and worst > args.limit else 0


if __name__ == "__main__":
    sys.exit(main())
