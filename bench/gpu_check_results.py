"""The GPU check's results (bench/gpu_check.py): the steps' files (metrics.jsonl through Code.run_folder,
kd_step's and the load helper's JSON lines, eval/metrics.json) turned into named checks and figures, and
the JSON and Markdown summary.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path
from typing import Any

from Code.run_folder import read_eval, read_metrics
from gpu_check_plan import LAUNCHERS, LOSS_KEY, Step


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


def collect(args: argparse.Namespace, steps: list[Step], status: dict[str, str], result: dict[str, Any]) -> None:
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
        # one record per (kind, step): the resume cut metrics.jsonl back to its checkpoint's step
        records = read_metrics(out / "runs" / loss)
        metrics = check_metrics(records)
        run: dict[str, Any] = {"metrics": metrics}
        first = [r for r in records if r.get("kind", "train") == "train" and int(r.get("step", 0)) <= args.steps]
        add(f"{loss}: trains {args.steps} steps", status.get(loss) == "ok",
            f"{status.get(loss, '')}; logged steps {first[0].get('step')}..{first[-1].get('step')}" if first
            else status.get(loss, ""))
        bad = "; ".join(f"{b['term']}={b['value']} at step {b['step']}" for b in metrics["nonfinite"])
        add(f"{loss}: every loss term finite", metrics["ok"],
            bad or f"{metrics['train_records']} train and {metrics['val_records']} val records")
        resume_name = f"{loss}-resume"
        if resume_name in names:
            log = Path(out / "logs" / f"{resume_name}.log")
            new = [r for r in records if int(r.get("step", 0)) > args.steps]
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
        metrics = read_eval(steps[names.index("eval")].cmd[3])
        ev = eval_figures(metrics) if metrics else {}
        result["eval"] = ev or None
        add("evaluate_.py on the student", status.get("eval") == "ok" and _finite(ev.get("student_ppl")),
            f"student ppl {_fmt(ev.get('student_ppl'), 5)}" if ev else status.get("eval", ""))
    if "logit_memory" in names:
        path = out / "logit_memory.json"
        mem = json.loads(path.read_text()) if path.is_file() else None
        result["logit_memory"] = mem
        add("logit KD memory within 1.5x of ce (GPU)", bool(mem and mem.get("ok")),
            f"max ratio {mem['max_ratio']:.3f}" if mem else status.get("logit_memory", ""))
