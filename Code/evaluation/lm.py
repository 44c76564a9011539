"""The language-model evaluation of one checkpoint against its teacher, as named passes:

    load_models -> perplexity_pass (+ ood_pass) -> layer_pass (+ tsne_pass) -> cost_pass -> generation_pass
    -> write

Each pass fills its part of the metrics dict that lands in `<out-dir>/metrics.json`. Imports torch and
the models at module level: `Code.evaluation.runner` imports this only after the file-level checks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from Code.data_pipeline.lm_datasets import EvalWindows
from Code.evaluation.common import eval_device, eval_dtype, load_tokenizer_near, set_threads
from Code.evaluation.config import EvalConfig, MeasureConfig, RuntimeConfig
from Code.evaluation.cost import model_cost
from Code.evaluation.inputs import LmPlan, check_window, hidden_blocks, layer_map_for, ood_stream, token_stream
from Code.evaluation.metrics import METRIC_DEFINITIONS, layer_distances
from Code.evaluation.outputs import Written
from Code.evaluation.passes import PROMPTS, collect_hidden, generate_samples, perplexity
from Code.evaluation.plots import layer_plot, tsne_embed, tsne_plots
from Code.evaluation.summary import run_name, summary_markdown
from Code.modeling.families import context_length, hidden_size, num_layers
from Code.modeling.layer_map import validate_layer_map
from Code.modeling.loading import load_student, load_teacher
from Code.objectives.masking import label_mask
from Code.run_folder import write_eval
from Code.utils import seed_everything


@dataclass
class Models:
    student: torch.nn.Module
    teacher: torch.nn.Module
    tokenizer: object | None
    device: torch.device
    dtype: torch.dtype

    @property
    def context(self) -> int:
        return min(context_length(self.student.config), context_length(self.teacher.config))


def load_models(runtime: RuntimeConfig, plan: LmPlan) -> Models:
    """Seeds, threads, device; student, teacher and the tokenizer saved nearest to them."""
    seed_everything(runtime.seed)
    set_threads(runtime.threads)
    device = eval_device(runtime.device)
    dtype = eval_dtype(device)
    remote = runtime.trust_remote_code  # --trust-remote-code: models whose config.json names code may run it
    student = load_student(plan.model_dir, device=device, dtype=dtype, trust_remote_code=remote).eval()
    student.requires_grad_(False)
    teacher = load_teacher(plan.teacher_path, device=device, dtype=dtype, trust_remote_code=remote)
    data_tok = Path(plan.data_dir) / "tokenizer" if plan.data_dir else None
    tokenizer = load_tokenizer_near(plan.model_dir, data_tok, plan.teacher_path)
    return Models(student, teacher, tokenizer, device, dtype)


def _items(tokens: np.ndarray, window: int, stride: int | None) -> list[dict]:
    windows = EvalWindows(torch.from_numpy(tokens), window, stride)
    return [windows[i] for i in range(len(windows))]


def scored_bytes(items: list[dict], tokenizer) -> int | None:
    """UTF-8 bytes of the text that the scored tokens of `items` decode to (special tokens such as the
    end-of-text separator decode to nothing); None without a tokenizer. Scored = what `window_nll` counts:
    labels from each window's second position on that are not ignored."""
    if tokenizer is None:
        return None
    labels = torch.cat([item["labels"][1:] for item in items])
    ids = labels[label_mask(labels)].tolist()
    return len(tokenizer.decode(ids, skip_special_tokens=True).encode("utf-8"))


def add_bpb(scored: dict, n_bytes: int | None) -> dict:
    """`scored` (a `perplexity` result) with bits per byte: its summed NLL in nats over ln 2 x the bytes its
    tokens decode to, comparable across tokenizers (None without bytes)."""
    nats = scored["nll"] * scored["tokens"]
    return {**scored, "bpb": nats / (math.log(2) * n_bytes) if n_bytes else None}


def perplexity_pass(cfg: EvalConfig, models: Models, tokens: np.ndarray, window: int) -> dict:
    """Teacher and student perplexity on the same windows (and on non-overlapping ones with a short stride)."""
    stride = cfg.source.stride
    kw = {"device": models.device, "batch_size": cfg.runtime.batch_size, "progress": cfg.runtime.progress}
    items = _items(tokens, window, stride)
    n_bytes = scored_bytes(items, models.tokenizer)
    out = {"teacher": add_bpb(perplexity(models.teacher, items, desc="teacher ppl", **kw), n_bytes),
           "student": add_bpb(perplexity(models.student, items, desc="student ppl", **kw), n_bytes)}
    if stride is not None and stride < window - 1:  # window-1 is already non-overlapping
        flat = _items(tokens, window, None)
        for name in ("teacher", "student"):
            model = getattr(models, name)
            out[name]["ppl_nonoverlap"] = perplexity(model, flat, desc=f"{name} ppl/flat", **kw)["ppl"]
    return out


def ood_pass(cfg: EvalConfig, models: Models, tokens: np.ndarray, window: int) -> dict:
    """Teacher and student perplexity on the out-of-domain tokens: the same windows, stride and batches as
    the in-domain pass, so the two numbers differ only in the text."""
    kw = {"device": models.device, "batch_size": cfg.runtime.batch_size, "progress": cfg.runtime.progress}
    items = _items(tokens, window, cfg.source.stride)
    n_bytes = scored_bytes(items, models.tokenizer)
    return {name: add_bpb(perplexity(getattr(models, name), items, desc=f"{name} ood ppl", **kw), n_bytes)
            for name in ("teacher", "student")}


def layer_pass(cfg: EvalConfig, plan: LmPlan, models: Models, tokens: np.ndarray, window: int,
               out_dir: Path) -> tuple[dict, list[Path], list[str]]:
    """Per matched layer: sliced WD, CKA, MSE, normalised MSE; the layer plot and the t-SNE figures.

    Returns (metrics part, image paths, notes).
    """
    measure, seed = cfg.measure, cfg.runtime.seed
    s_cfg, t_cfg = models.student.config, models.teacher.config
    (s_n, s_w), (t_n, t_w) = ((num_layers(c), hidden_size(c)) for c in (s_cfg, t_cfg))
    pairs, map_source = layer_map_for(measure, plan.info, s_n, t_n)
    validate_layer_map(pairs, s_n, t_n, s_w, t_w)
    block_len = min(window, max(2, len(tokens) // 2), 256)
    blocks = hidden_blocks(tokens, block_len, measure.hidden_tokens, cfg.runtime.batch_size, seed)
    progress = cfg.runtime.progress
    s_hidden = collect_hidden(models.student, blocks, [s for s, _ in pairs], models.device, "student hidden",
                              progress)
    t_hidden = collect_hidden(models.teacher, blocks, [t for _, t in pairs], models.device, "teacher hidden",
                              progress)
    part = {"layer_map_source": map_source, "hidden_tokens": int(s_hidden[0].shape[0]),
            "layers": [{"student_layer": s, "teacher_layer": t,
                        **layer_distances(sh, th, measure.projections, seed)}
                       for (s, t), sh, th in zip(pairs, s_hidden, t_hidden, strict=True)]}
    images = [layer_plot(part["layers"], out_dir / "layers.png", run_name(plan.ckpt))]
    notes = []
    if s_w != t_w:
        notes.append("student and teacher widths differ: sliced WD, MSE and t-SNE need equal widths "
                     "and are skipped; CKA compares the raw features")
    elif measure.tsne_points > 0:
        images += tsne_pass(pairs, s_hidden, t_hidden, measure.tsne_points, seed, out_dir)
    return part, images, notes


def tsne_pass(pairs, s_hidden, t_hidden, points: int, seed: int, out_dir: Path) -> list[Path]:
    """One joint t-SNE per matched layer on the same seeded token positions; the PNG paths."""
    n_tokens = int(s_hidden[0].shape[0])
    pick = np.sort(np.random.default_rng(seed).choice(n_tokens, min(points, n_tokens), replace=False))
    embeds = []
    for (s, t), sh, th in zip(pairs, s_hidden, t_hidden, strict=True):
        te, se = tsne_embed(th[pick].numpy(), sh[pick].numpy(), seed=seed)
        embeds.append((f"s{s}_t{t}", te, se))
    return list(tsne_plots(embeds, out_dir))


def cost_pass(measure: MeasureConfig, plan: LmPlan, models: Models, tokens: np.ndarray, window: int) -> dict:
    """Parameters, size on disk and forward timing: same batch and device for both models, after warm-up."""
    cost_len = min(window, 256, len(tokens) // max(1, measure.cost_batch)) or min(window, len(tokens))
    batch = torch.from_numpy(tokens[: cost_len * measure.cost_batch].copy()).view(-1, cost_len)
    teacher_dir = plan.teacher_path if Path(plan.teacher_path).is_dir() else None
    cost = {"teacher": model_cost(models.teacher, teacher_dir, batch, models.device),
            "student": model_cost(models.student, plan.model_dir, batch, models.device)}
    cost["speedup"] = cost["student"]["tokens_per_s"] / cost["teacher"]["tokens_per_s"]
    cost["param_ratio"] = cost["student"]["params"] / cost["teacher"]["params"]
    return cost


def generation_pass(gen_tokens: int, seed: int, models: Models) -> tuple[dict, list[str]]:
    """Greedy and sampled continuations of the fixed prompts by both models; (generations, notes)."""
    gens = {"prompts": list(PROMPTS), "max_new_tokens": gen_tokens, "teacher": [], "student": []}
    if gen_tokens <= 0:
        return gens, []
    if models.tokenizer is None:
        return gens, ["no tokenizer saved with the checkpoint or data: generations skipped"]
    for name in ("teacher", "student"):
        gens[name] = generate_samples(getattr(models, name), models.tokenizer, PROMPTS, gen_tokens, seed,
                                      models.device)
    return gens, []


def evaluate_lm(cfg: EvalConfig, plan: LmPlan, out_dir: Path, written: Written) -> dict:
    """Every pass in order; writes metrics.json and summary.md (PNGs are written by the passes), each file
    recorded in `written`."""
    src = cfg.source
    models = load_models(cfg.runtime, plan)
    vocab_sizes = {"student": plan.student_vocab, "teacher": models.teacher.config.vocab_size}
    tokens, source = token_stream(src, plan.data_dir, models.tokenizer, vocab_sizes)
    ood_tokens, ood = (ood_stream(src.max_tokens, plan.ood, models.tokenizer, vocab_sizes) if plan.ood
                       else (None, None))
    window = check_window(src, models.context)
    result: dict = {"checkpoint": str(plan.model_dir), "teacher_path": str(plan.teacher_path),
                    "seed": cfg.runtime.seed, "device": models.device.type,
                    "dtype": str(models.dtype).replace("torch.", ""), "notes": [],
                    "definitions": dict(METRIC_DEFINITIONS)}
    result.update(perplexity_pass(cfg, models, tokens, window))
    result["data"] = {"source": source, "tokens_scored": result["student"]["tokens"], "window": window,
                      "stride": src.stride, "max_tokens": src.max_tokens}
    if ood is not None:  # out-of-domain perplexity beside the in-domain one
        scored = ood_pass(cfg, models, ood_tokens, window)
        for name in ("teacher", "student"):
            result[name]["ood_ppl"] = scored[name]["ppl"]
            result[name]["ood_nll"] = scored[name]["nll"]
            result[name]["ood_bpb"] = scored[name]["bpb"]
        result["ood"] = {**ood, "tokens": scored["student"]["tokens"], "window": window, "stride": src.stride}
    part, images, notes = layer_pass(cfg, plan, models, tokens, window, out_dir)
    written.add(*images)
    result.update(part)
    result["notes"] += notes
    result["cost"] = cost_pass(cfg.measure, plan, models, tokens, window)
    result["generations"], notes = generation_pass(cfg.measure.gen_tokens, cfg.runtime.seed, models)
    result["notes"] += notes
    written.add(write_eval(out_dir, result))
    written.text(out_dir / "summary.md", summary_markdown(result, [p.name for p in images]))
    ood_note = (f"; out-of-domain: student {result['student']['ood_ppl']:.3f}, teacher "
                f"{result['teacher']['ood_ppl']:.3f}" if ood is not None else "")
    print(f"{run_name(plan.ckpt)}: student ppl {result['student']['ppl']:.3f}, "
          f"teacher ppl {result['teacher']['ppl']:.3f}{ood_note}")
    return result
