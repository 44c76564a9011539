"""A fake-but-realistic study folder in the driver's staged layout (Code/study/driver.py): study.json with
methods, tuning, runs, seeds, budget, calibration, selfcheck, ood and invocations; tune/, runs/ and budget/
run folders (args.json, metrics.jsonl, final/, eval/metrics.json in evaluate_.py's schema); the calibration
JSON (Code/evaluation/calibration.py's format) and the self-check evaluation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SEEDS = (1, 2, 3)
# test method -> (family, kind, loss); lm has no family
METHODS = {"lm": (None, None, "lm"), "kd_lm_w0.5": ("kd_lm", "logit", "kd+lm"),
           "mse_lm_w1.25": ("mse_lm", "paired", "mse+lm"), "wd_lm_w0.05": ("wd_lm", "critic", "wd+lm"),
           "gauss_w2_lm_w1": ("gauss_w2_lm", "critic-free", "gauss_w2+lm")}
GRIDS = {"kd_lm": ("0.25", "0.5", "1", "2"), "mse_lm": ("0.25", "0.5", "1.25", "3"),
         "wd_lm": ("0.02", "0.05", "0.12", "0.3"), "gauss_w2_lm": ("0.1", "0.3", "1", "3")}
# validation PPL of each tuning point: the chosen weight (the test methods' above) is each grid's lowest
VALID = {"kd_lm": (260.0, 255.0, 258.0, 270.0), "mse_lm": (110.0, 105.0, 102.0, 108.0),
         "wd_lm": (109.0, 104.0, 106.0, 130.0), "gauss_w2_lm": (103.0, 99.0, 97.5, 98.0)}
# test PPL per method and seed: kd clearly below lm; gauss_w2 consistently ~5 below mse (a real difference);
# wd and mse alike up to noise
PPL = {"lm": [300.0, 310.0, 305.0], "kd_lm_w0.5": [250.5, 259.0, 255.2], "mse_lm_w1.25": [101.0, 100.5, 101.5],
       "wd_lm_w0.05": [100.0, 100.5, 101.0], "gauss_w2_lm_w1": [96.0, 95.6, 96.4]}
OOD_PPL = {"lm": [900.0, 930.0, 915.0], "kd_lm_w0.5": [700.0, 722.0, 711.0], "mse_lm_w1.25": [401.0, 399.5, 402.5],
           "wd_lm_w0.05": [400.0, 396.0, 405.0], "gauss_w2_lm_w1": [390.0, 391.0, 392.0]}
# the budget point (1000 steps): wd falls behind mse there, every other order holds
BUDGET = {"lm": [200.0, 204.0, 202.0], "kd_lm_w0.5": [150.0, 153.0, 151.0], "mse_lm_w1.25": [80.0, 80.5, 81.0],
          "wd_lm_w0.05": [85.0, 86.0, 85.5], "gauss_w2_lm_w1": [70.0, 70.4, 70.2]}
ROLES = {"lm": "lm", "kd_lm": "kd_lm_w0.5", "mse_lm": "mse_lm_w1.25", "best:critic": "wd_lm_w0.05",
         "best:critic-free": "gauss_w2_lm_w1"}
SHARE = {"kd_lm_w0.5": 0.4, "mse_lm_w1.25": 0.2, "wd_lm_w0.05": 0.9, "gauss_w2_lm_w1": 0.3}
TEACHER = {"ppl": 90.0, "ood_ppl": 250.0}
VOCAB = 2048
OOD_FILES = ["/corpus/gutenberg/austen-emma.txt", "/corpus/gutenberg/melville-moby_dick.txt"]
BYTES_PER_TOKEN = 4.0


def bpb(ppl: float) -> float:
    """Bits per byte of a perplexity at BYTES_PER_TOKEN bytes per token."""
    return math.log2(ppl) / BYTES_PER_TOKEN


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2))


def eval_metrics(ppl: float, seed: int, method: str, ood_ppl: float | None = None, bits: bool = True) -> dict:
    """The schema evaluate_.py writes; with `ood_ppl` as --ood-text adds it; `bits`: bits per byte too."""
    layers = [{"student_layer": s, "teacher_layer": t,
               "sliced_wd": 0.5 * s + 0.01 * seed + (0.3 if method == "lm" else 0.0),
               "cka": 0.9 - 0.1 * s + 0.001 * seed, "mse": 1.5 * s, "mse_normalized": 2.0 * s,
               "exact_w1": 1.0 * s + 0.02 * seed}
              for s, t in ((1, 1), (2, 4))]
    cost = {"student": {"params": 937472, "size_bytes": 3752592, "dtype": "float32", "latency_ms": 48.0,
                        "tokens_per_s": 10000.0 + seed, "batch_size": 4, "seq_len": 128, "iters": 5},
            "teacher": {"params": 1334016, "size_bytes": 5341104, "dtype": "float32", "latency_ms": 83.0,
                        "tokens_per_s": 6000.0, "batch_size": 4, "seq_len": 128, "iters": 5}}
    cost["speedup"] = cost["student"]["tokens_per_s"] / cost["teacher"]["tokens_per_s"]
    metrics = {"checkpoint": "x/final", "teacher_path": "/t/final", "seed": 0, "device": "cpu", "dtype": "float32",
               "notes": [], "teacher": {"nll": math.log(TEACHER["ppl"]), "ppl": TEACHER["ppl"], "tokens": 32767},
               "student": {"nll": math.log(ppl), "ppl": ppl, "tokens": 32767},
               "data": {"source": "d split test", "tokens_scored": 32767, "window": 128, "stride": None,
                        "max_tokens": 32768},
               "layer_map_source": "run", "hidden_tokens": 2048, "layers": layers, "cost": cost}
    if bits:
        metrics["teacher"]["bpb"], metrics["student"]["bpb"] = bpb(TEACHER["ppl"]), bpb(ppl)
    if ood_ppl is not None:
        metrics["teacher"].update(ood_ppl=TEACHER["ood_ppl"], ood_nll=math.log(TEACHER["ood_ppl"]))
        metrics["student"].update(ood_ppl=ood_ppl, ood_nll=math.log(ood_ppl))
        if bits:
            metrics["teacher"]["ood_bpb"], metrics["student"]["ood_bpb"] = bpb(TEACHER["ood_ppl"]), bpb(ood_ppl)
        metrics["ood"] = {"files": OOD_FILES, "tokens_per_file": [16383, 16384], "gutenberg_stripped": [],
                          "max_tokens": 32768, "tokens": 32767, "window": 128, "stride": None,
                          "conventions": "wikitext"}
    return metrics


def make_run(run: Path, method: str, seed: int, ppl: float, state: str = "done", ood_ppl: float | None = None,
             steps: int = 20, bits: bool = True) -> Path:
    """One run folder; `state`: done | trained (no eval/) | started (args.json only)."""
    loss = METHODS.get(method, (None, None, method.rpartition("_w")[0].removesuffix("_lm") + "+lm"))[2]
    write_json(run / "args.json", {"loss": loss, "weights": None if loss == "lm" else "w,0.5", "seed": seed,
                                   "max_steps": steps, "micro_batch_size": 4, "seq_len": 32, "grad_accum": 1,
                                   "lr": 1e-3, "warmup_steps": 2, "precision": "fp32", "teacher": "/t/final",
                                   "temperature": 1.0, "critic_optimizer": "adam", "critic_lr": 1e-3, "n_critic": 5,
                                   "critic_hidden": 64, "critic_penalty": "lp", "critic_pairing": "paired",
                                   # the code that trained it: seed 3 at a later commit, seed 2 from a dirty checkout
                                   "run": {"code": {"commit": ("b" if seed == 3 else "a") * 40, "dirty": seed == 2},
                                           "started": "2025-12-31" if seed == 100 else f"2026-01-0{seed}"}})
    if state == "started":
        return run
    lines = []
    term = loss.split("+")[0]
    for step in range(1, 21):
        rec = {"kind": "train", "step": step, "tokens": step * 128, "lr": 1e-3, "tokens_per_s": 1000.0 + seed,
               "loss": 5.0 - 0.1 * step, f"loss/{term}": 5.0 - 0.1 * step}
        if term == "wd":
            rec.update({"loss/wd/layer1": 1.0 / step, "loss/wd/layer2": 2.0 / step})
        if method in SHARE and step % 5 == 0:  # gradient-share probes at some log lines only
            own = SHARE[method] + 0.01 * seed
            rec.update({f"grad_share/{term}": own, "grad_share/lm": 1 - own})
        lines.append(rec)
        if step % 10 == 0:
            lines.append({"kind": "val", "step": step, "val/loss": math.log(ppl) + 0.01 * (20 - step),
                          "val/ppl": ppl})
    lines.append({"kind": "done", "step": 20, "train_time_s": 30.0 + seed, "best_val_loss": math.log(ppl),
                  "world_size": 1, "device": "cpu"})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    write_json(run / "final" / "config.json", {"n_layer": 2, "n_embd": 64, "n_head": 4, "n_positions": 128,
                                                "vocab_size": VOCAB})
    write_json(run / "final" / "distill_info.json", {"teacher": "/t/final", "student_layers": [0, 2],
                                                      "layer_map": [[1, 1], [2, 4]], "loss": loss})
    if state == "done":
        write_json(run / "eval" / "metrics.json", eval_metrics(ppl, seed, method, ood_ppl, bits))
        plt.imsave(run / "eval" / "tsne_grid.png", np.random.default_rng(seed).random((20, 40, 3)))
    return run


def calibration_result() -> dict:
    """Code/evaluation/calibration.py's JSON: two layers, two critic variants, two update counts."""
    def critics(base: float, grad: bool) -> dict:
        out = {}
        for variant, scale in (("gp", 1.0), ("lp", 0.5)):
            out[variant] = {"readings": [{"updates": n, "train": [base * scale * k, 2 * base * scale * k],
                                          "heldout": [base * scale * k * 1.5, 3 * base * scale * k]}
                                         for n, k in ((100, 1.0), (500, 2.0))]}
            if grad:
                out[variant]["grad_at_zero"] = [0.3 * scale, 0.4 * scale]
        return out

    return {"layers": 2, "samples": 1024, "updates": [100, 500], "pairs": {
        "student": {"judges": {"exact_w1": [2.15, 5.68], "sinkhorn": [1.9, 4.2], "sliced_wd": [0.07, 0.2]},
                    "critics": critics(1.0, False)},
        "teacher_self": {"judges": {"exact_w1": [0.61, 1.02], "sinkhorn": [0.01, 0.02], "sliced_wd": [0.01, 0.03]},
                         "critics": critics(0.8, True)}},
        "mse_grad_student": [0.037, 0.074],
        "sinkhorn_vs_mse": {"mse_normalized": [0.9, 1.1], "paired_over_mse": [0.501, 0.499],
                            "paired_grad_cosine": [0.99, 0.985], "unpaired_over_mse": [0.2, 0.3],
                            "unpaired_grad_cosine": [0.5, 0.4]},
        "sinkhorn_options": {"sinkhorn_blur": 0.05}}


def make_study(root: Path, seeds=SEEDS, ood: bool = True, bits: bool = True, tuned: bool = True,
               budget: bool = True, calibration: bool = True, selfcheck_ppl: float | None = 91.5) -> Path:
    """The whole staged study; each stage can be left out (as a study still running has not reached it)."""
    methods = {m: {"label": m, "family": f, "launcher": "Code/launch_common.sh", "env": {"LOSS": loss}, "flags": []}
               for m, (f, _, loss) in METHODS.items()}
    manifest = {
        "preset": "cpu", "seeds": list(seeds), "methods": methods,
        "hardware": {"cpu": "Test CPU", "cpu_cores": 2, "memory_gb": 8.0, "gpus": []},
        "git": {"commit": "0123456789abcdef", "dirty": False}, "jobs": 2, "threads_per_job": 1,
        "teacher": {"source": "pretrained here", "path": str(root / "teacher" / "final")},
        "runs": {f"{m}/seed{s}": {"dir": f"runs/{m}/seed{s}", "method": m, "seed": s, "stage": "test",
                                  "train_wall_s": 40.0 + s, "status": "done"} for m in METHODS for s in seeds},
        "ood": {"text": ["/corpus/gutenberg"], "files": OOD_FILES, "conventions": "wikitext"} if ood else None,
        "invocations": [
            {"started": "2026-01-01T00:00:00+00:00", "wall_s": 600.0, "cpu_s": 1000.0,
             "stages": {"data_s": 20.0, "teacher_s": 300.0, "tune_s": 240.0}},
            {"started": "2026-01-02T00:00:00+00:00", "wall_s": 1200.0, "cpu_s": 2000.0,
             "stages": {"tune_s": 60.0, "test_s": 900.0, "budget_s": 200.0, "calibration_s": 30.0}}]}
    if tuned:
        manifest["tuning"] = {"seed": 100, "split": "valid", "families": {
            f: {"label": f, "kind": kind, "term": loss.split("+")[0],
                "valid_ppl": dict(zip(GRIDS[f], VALID[f], strict=True)), "chosen": m.rpartition("_w")[2]}
            for m, (f, kind, loss) in METHODS.items() if f}}
        for f, grid in GRIDS.items():
            for w, ppl in zip(grid, VALID[f], strict=True):
                make_run(root / "tune" / f"{f}_w{w}" / "seed100", f"{f}_w{w}", 100, ppl)
    if budget:
        manifest["budget"] = {"max_steps": 1000, "seeds": list(SEEDS), "methods": ROLES}
        for m in ROLES.values():
            for i, s in enumerate(SEEDS):
                make_run(root / "budget" / m / f"seed{s}", m, s, BUDGET[m][i], ood_ppl=OOD_PPL[m][i], steps=1000)
    if calibration:
        manifest["calibration"] = {"file": "calibration/calibration.json", "student": "runs/lm/seed1/final",
                                   "ok": True}
        write_json(root / "calibration" / "calibration.json", calibration_result())
    if selfcheck_ppl is not None:
        manifest["selfcheck"] = {"dir": "selfcheck/eval", "ood_text": ["/corpus/wikitext-2/test.txt"]}
        check = eval_metrics(TEACHER["ppl"], 0, "teacher", selfcheck_ppl)
        check["teacher"]["ood_ppl"] = selfcheck_ppl
        write_json(root / "selfcheck" / "eval" / "metrics.json", check)
    write_json(root / "study.json", manifest)
    for m in METHODS:
        for i, s in enumerate(seeds):
            make_run(root / "runs" / m / f"seed{s}", m, s, PPL[m][i], ood_ppl=OOD_PPL[m][i] if ood else None,
                     bits=bits)
    return root


def row(text: str, first_cell: str, after: str) -> str:
    """The table row starting with `first_cell` in the section after the heading `after`."""
    for line in text.split(after, 1)[1].splitlines():
        if line.startswith(f"| {first_cell} |"):
            return line
    raise AssertionError(f"no row {first_cell!r} after {after!r}")


def rows(text: str, first_cell: str, after: str) -> list[str]:
    """Every table row starting with `first_cell` in the section after the heading `after`."""
    return [ln for ln in text.split(after, 1)[1].splitlines() if ln.startswith(f"| {first_cell} |")]


def section(text: str, heading: str) -> str:
    """The text of one `## heading` section (up to the next `## `)."""
    body = text.split(f"## {heading}\n", 1)[1]
    return body.split("\n## ", 1)[0]
