"""The report's setup rows (models, data, machine, methods), built from a loaded study's files.

Paths are shown as a reader can use them: relative to the repository, or under the study folder's own
name; never the absolute paths of the machine the study ran on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from Code import REPO
from Code.processes import describe_commit
from Code.report.data import StudyData
from Code.report.fmt import MISSING, num, plural, table
from Code.report.tables import run_of, teacher_ppl
from Code.report.tuning import protocol_rows, stage_rows


def shown_path(path: str | Path, study_root: Path | None = None) -> str:
    """`path` as a reader can use it: relative to the repository (`../shared/corpus` beside it), else under
    the study folder's own name (`study-cpu/teacher/final`), else by its last two parts; never absolute."""
    text = str(path)
    p = Path(text).expanduser()
    if not p.is_absolute():
        return text
    p = p.resolve()
    rel = os.path.relpath(p, REPO)
    if rel.count("..") <= 1:
        return rel
    if study_root is not None:
        root = Path(study_root).resolve()
        if p == root or root in p.parents:
            return str(Path(root.name) / p.relative_to(root))
    return str(Path(*p.parts[-2:]))


# Hugging Face's common config names -> GPT-2's, which the rows below format (any model family then reads alike)
_GPT2_NAMES = {"num_hidden_layers": "n_layer", "hidden_size": "n_embd", "num_attention_heads": "n_head",
               "max_position_embeddings": "n_positions"}


def _config(path: str | None) -> dict:
    try:
        cfg = json.loads((Path(path) / "config.json").read_text()) if path else {}
    except (OSError, json.JSONDecodeError):
        return {}
    for common, gpt2 in _GPT2_NAMES.items():
        if common in cfg:
            cfg.setdefault(gpt2, cfg[common])
    return cfg


def model_rows(study: StudyData) -> list[list[str]]:
    """Setup rows for the teacher and the student: where they come from, architecture, parameters."""
    man, ref = study.manifest, run_of(study)
    teacher = man.get("teacher") or {}
    t_path = teacher.get("path") or (ref.args.get("teacher") if ref else None)
    shown = shown_path(t_path, study.root) if t_path else None
    t_cfg = _config(t_path)
    t_cost = (ref.eval or {}).get("cost", {}).get("teacher", {}) if ref else {}
    s_cost = (ref.eval or {}).get("cost", {}).get("student", {}) if ref else {}
    s_cfg = _config(str(ref.path / "final")) if ref else {}
    arch = "{n_layer} layers, width {n_embd}, {n_head} heads, context {n_positions}, vocabulary {vocab_size}"
    rows = [
        ["preset", f"`{man.get('preset', 'n/a')}`"],
        ["teacher", f"{teacher.get('source', 'n/a')}: `{shown}`"
                    + (f" ({arch.format(**t_cfg)})" if t_cfg.get("n_layer") else "")
                    + (f", {t_cost['params'] / 1e6:.2f}M parameters" if t_cost.get("params") else "")
                    + teacher_scores(study)],
    ]
    if ref and s_cfg:
        params = f", {s_cost['params'] / 1e6:.2f}M parameters" if s_cost.get("params") else ""
        rows.append(["student", f"teacher blocks {ref.info.get('student_layers')} copied (same initialization for "
                                f"every method; {arch.format(**s_cfg)}{params})"])
    return rows


def teacher_scores(study: StudyData) -> str:
    """The teacher's test and out-of-domain perplexity, as its setup row states them."""
    test, ood = teacher_ppl(study), teacher_ppl(study, ood=True)
    if test is None:
        return ""
    return f"; test PPL {num(test)}, out-of-domain PPL " + (num(ood) if ood is not None else MISSING)


def ood_row(study: StudyData) -> list[list[str]]:
    """Setup row for the out-of-domain text (from the first evaluation that scored one)."""
    ood = next((r.eval["ood"] for r in study.runs.values() if r.status == "done" and (r.eval or {}).get("ood")), None)
    if not ood:
        return [["out-of-domain text", f"{MISSING} (no run was evaluated with `--ood-text`)"]]
    files = [Path(f) for f in ood.get("files", [])]
    folders = sorted({shown_path(f.parent, study.root) for f in files})
    names = ", ".join(f.stem for f in files)
    stripped = ood.get("gutenberg_stripped") or []
    cap = f", at most {ood['max_tokens']:,} in all, shared equally between the files" if ood.get("max_tokens") else ""
    return [["out-of-domain text", f"{len(files)} file(s) in `{'`, `'.join(folders)}` ({names}): "
                                   f"{ood.get('tokens', 0):,} tokens scored with the run's tokenizer, the same "
                                   f"window and stride{cap}"
                                   + (f"; Project Gutenberg header/footer cut off in {len(stripped)} file(s)"
                                      if stripped else "")]]


def data_rows(study: StudyData) -> list[list[str]]:
    """Setup rows for the data, the token budget, the evaluation and the seeds."""
    meta, ref = study.meta, run_of(study)
    rows = []
    if meta:
        splits = ", ".join(f"{k} {v['tokens']:,}" for k, v in meta.get("splits", {}).items())
        rows.append(["data", f"{meta.get('source')}; tokenizer {meta.get('tokenizer')} (vocabulary "
                             f"{meta.get('vocab_size')}); tokens per split: {splits}"])
    if ref:
        a = ref.args
        world = next((r.get("world_size") for r in ref.kind("done")), 1) or 1
        budget = {r.train_tokens for r in study.runs.values() if r.status == "done"}
        rows.append(["token budget", f"{a.get('max_steps')} steps x {a.get('micro_batch_size')} sequences x "
                                     f"{a.get('seq_len')} tokens x {a.get('grad_accum')} accumulation x {world} "
                                     f"rank(s) = {', '.join(f'{b:,}' for b in sorted(x for x in budget if x))} "
                                     f"training tokens per run; lr {a.get('lr')}, warm-up {a.get('warmup_steps')}, "
                                     f"precision {a.get('precision')}"])
        data = (ref.eval or {}).get("data", {})
        rows.append(["evaluation", f"`final/` of each run; {data.get('tokens_scored', 0):,} test tokens scored "
                                   f"(window {data.get('window')}, stride {data.get('stride') or 'non-overlapping'}); "
                                   f"layer metrics on {ref.eval.get('hidden_tokens')} token positions; eval seed "
                                   f"{ref.eval.get('seed')} (same tokens for every run)"])
        rows += ood_row(study)
    return rows + protocol_rows(study)


def machine_rows(study: StudyData, stamp: dict) -> list[list[str]]:
    """Setup rows for the hardware, the study's wall time and the code version."""
    man = study.manifest
    hw = man.get("hardware") or {}
    gpus = ", ".join(hw.get("gpus") or []) or "none"
    rows = [["hardware", f"{hw.get('cpu', 'n/a')}, {hw.get('cpu_cores', '?')} cores, {hw.get('memory_gb', '?')} "
                         f"GB RAM, GPUs: {gpus}; {man.get('jobs', 1)} run(s) at a time, "
                         f"{man.get('threads_per_job', '?')} thread(s) each"]]
    rows += stage_rows(study)
    rows.append(["code", f"study last invoked at commit {describe_commit(man.get('git'))}; report written at "
                         f"commit {describe_commit(stamp['git'])} on {stamp['date']}"])
    rows += run_code_rows(study)
    return rows


def run_code_rows(study: StudyData) -> list[list[str]]:
    """Which code trained the runs (each args.json records its checkout's commit): a study that spans
    sittings may span commits, and a reader should know."""
    runs = [*study.tune_runs.values(), *study.runs.values(), *study.budget_runs.values()]
    stamps = [r.args.get("run") or {} for r in runs if r.status == "done"]
    codes = sorted((s.get("started") or "", s["code"]["commit"], bool(s["code"].get("dirty")))
                   for s in stamps if (s.get("code") or {}).get("commit"))  # in the order they were started
    if not codes:
        return []
    commits = [commit for _, commit, _ in codes]
    dirty = sum(1 for *_, d in codes if d)
    if len(set(commits)) == 1:
        text = f"all {plural(len(commits), 'run')} trained at commit {commits[0][:12]}"
    else:
        text = (f"{plural(len(commits), 'run')} trained at {len(set(commits))} commits, the first at "
                f"{commits[0][:12]}, the last at {commits[-1][:12]} (a study resumed across sittings while the code "
                "moved on)")
    text += f"; {plural(dirty, 'run')} with uncommitted changes in the checkout" if dirty else ""
    return [["code of the runs", text]]


def method_rows(study: StudyData) -> list[list[str]]:
    """One row per method from its first run's args.json: loss, weights, settings, layer map, launcher."""
    rows = []
    for m in study.methods:
        r = next(iter(study.of(m, done_only=False)), None)
        if r is None or not r.args:
            rows.append([m, "n/a", "n/a", "n/a", "n/a"])
            continue
        a = r.args
        extra = [f"T={a.get('temperature')}"] if "kd" in str(a.get("loss")) else []
        if "wd" in str(a.get("loss")).split("+"):
            extra.append(f"critics {a.get('critic_optimizer')} lr {a.get('critic_lr')} x{a.get('n_critic')}, hidden "
                         f"{a.get('critic_hidden')}"
                         + (f", penalty {a['critic_penalty']}" if a.get("critic_penalty") else "")
                         + (f", {a['critic_pairing']}" if a.get("critic_pairing") else ""))
        label = (study.manifest.get("methods") or {}).get(m, {}).get("label", "")
        launcher = (study.manifest.get("methods") or {}).get(m, {}).get("launcher", "")
        rows.append([f"{m}" + (f" ({label})" if label else ""), f"`{a.get('loss')}`",
                     str(a.get("weights") or "equal"), "; ".join(extra) or "-",
                     f"{r.info.get('layer_map', 'n/a')}; `{launcher}`"])
    return rows


def setup_section(study: StudyData, stamp: dict) -> list[str]:
    lines = ["## Setup", ""]
    lines += table(["", ""], model_rows(study) + data_rows(study) + machine_rows(study, stamp))
    lines += ["", "Methods (each run's `args.json`):", ""]
    lines += table(["method", "loss", "weights", "settings", "layer map (student, teacher); launcher"],
                   method_rows(study))
    return lines


