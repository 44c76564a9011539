"""Evaluate a distilled student against its teacher: perplexity, per-layer distances, t-SNE, cost, samples.

    python Code/evaluate_.py --ckpt Code/output/<run> [--teacher PATH] [--data-dir Code/data/<name>]
    python Code/evaluate_.py --compare Code/output/run_wd Code/output/run_mse --out-dir Code/output/compare

Reads only what training wrote (model folders, distill_info.json); never imports the training loop.
Writes `<out-dir>/metrics.json`, PNGs and `summary.md` (default out-dir: `<ckpt>/eval`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

# Heavy modules (torch, transformers, scikit-learn, matplotlib) are imported inside the functions that use
# them, so a bad path or a vocabulary mismatch is reported in about a second, not after 10 s of imports.
from Code import REPO


class EvalError(ValueError):
    """Bad evaluation input (no teacher, no data, bad window...)."""


class CheckpointNotFoundError(FileNotFoundError):
    """The --ckpt / --compare path holds no model."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--ckpt", help="a save_pretrained student, or a run dir Code/output/<run> (uses best/, else final/)")
    p.add_argument("--teacher", help="teacher folder or hub name (default: the run's distill_info.json)")
    p.add_argument("--data-dir", help="Code/data/<name> (default: the run's distill_info.json)")
    p.add_argument("--split", default="test", help="split of the indexed dataset (default: test)")
    p.add_argument("--text-file", help="score raw text instead of a split (uses the run's tokenizer)")
    p.add_argument("--window", type=int, help="tokens per window (default: the models' context)")
    p.add_argument("--stride", type=int, help="sliding-window stride (default: non-overlapping windows)")
    p.add_argument("--max-tokens", type=int, help="score at most this many tokens (default: the whole split)")
    p.add_argument("--out-dir", help="output folder (default: <ckpt>/eval; --compare: <runs' parent>/compare)")
    p.add_argument("--seed", type=int, default=0, help="seeds sampling, projections, t-SNE (default 0)")
    p.add_argument("--compare", nargs="+", metavar="RUN", help="runs to put in one table and plot (evaluated if "
                   "they have no eval/metrics.json yet)")
    p.add_argument("--layer-map", help="s:t pairs or one teacher index per student layer (default: from the run)")
    p.add_argument("--student-layers", help="teacher blocks the student was cut from, to derive the layer map")
    p.add_argument("--hidden-tokens", type=int, default=4096, help="token positions for layer metrics (4096)")
    p.add_argument("--projections", type=int, default=256, help="random projections for sliced WD (256)")
    p.add_argument("--tsne-points", type=int, default=400, help="token positions per model in t-SNE; 0 = off (400)")
    p.add_argument("--gen-tokens", type=int, default=32, help="new tokens per generation; 0 = off (32)")
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (8)")
    p.add_argument("--cost-batch", type=int, default=4, help="batch size for the timing pass (4)")
    p.add_argument("--device", default="auto", help="auto (cuda if present), cpu, cuda, cuda:N")
    p.add_argument("--task", default="lm", choices=["lm", "dolly"], help="lm (default); dolly: instruction eval")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    from Code.evaluation.dolly import add_arguments as add_dolly_arguments  # --task dolly's options (light import)

    add_dolly_arguments(p)
    return p


# ------------------------------------------------------------------------------------------- inputs
def resolve_checkpoint(path: str | Path) -> Path:
    """A model folder: the path itself if it holds config.json, else its best/, else its final/."""
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFoundError(f"checkpoint {path} not found; pass a save_pretrained folder or a run dir")
    if (path / "config.json").is_file():
        return path
    for sub in ("best", "final"):
        if (path / sub / "config.json").is_file():
            return path / sub
    raise CheckpointNotFoundError(f"{path} holds no model (no config.json, best/ or final/); has the run saved yet?")


def _existing(path: str) -> str:
    """Paths in distill_info.json may be relative to where training ran: try as given, then the repo root."""
    return path if Path(path).exists() or not (REPO / path).exists() else str(REPO / path)


def layer_map_for(args, info: dict, s_layers: int, t_layers: int) -> tuple[list[tuple[int, int]], str]:
    from Code.modeling.layer_map import parse_layer_map, resolve_layer_map
    from Code.modeling.truncation import parse_student_layers

    if not args.layer_map and info.get("layer_map"):  # what the run trained with
        raw = info["layer_map"]
        pairs = parse_layer_map(raw, s_layers) if isinstance(raw, str) else [(int(s), int(t)) for s, t in raw]
        return pairs, "run"
    layers = args.student_layers or info.get("student_layers")
    if isinstance(layers, str):
        layers = parse_student_layers(layers, t_layers)
    return resolve_layer_map(args.layer_map, [int(i) for i in layers] if layers else None, s_layers, t_layers)


def token_stream(args, data_dir: str | None, tokenizer, vocab_sizes: dict[str, int]):
    """The 1-D int64 token array to score (capped by --max-tokens) and a description of its source."""
    import numpy as np

    from Code.lm_datasets import check_vocab, load_meta, open_split

    if args.text_file:
        path = Path(args.text_file)
        if not path.is_file():
            raise EvalError(f"--text-file {path} not found")
        if tokenizer is None:
            raise EvalError("--text-file needs a tokenizer: none in the checkpoint, and no --data-dir/tokenizer")
        for what, size in vocab_sizes.items():
            if len(tokenizer) > size:
                raise EvalError(f"tokenizer has {len(tokenizer)} tokens but the {what} only {size}; "
                                "use the tokenizer the models were trained with")
        tokens = np.asarray(tokenizer(path.read_text(encoding="utf-8"))["input_ids"], dtype=np.int64)
        source = f"text file {path}"
    else:
        if not data_dir:
            raise EvalError("no data: pass --data-dir Code/data/<name> (or --text-file FILE)")
        meta = load_meta(data_dir)
        for what, size in vocab_sizes.items():
            check_vocab(meta, size, what)
        tokens = open_split(data_dir, args.split).tokens
        source = f"{data_dir} split {args.split}"
    if args.max_tokens:
        tokens = tokens[: args.max_tokens]
    if len(tokens) < 2:
        raise EvalError(f"{source} has fewer than 2 tokens to score")
    return np.asarray(tokens, dtype=np.int64), source


def load_tokenizer_near(*folders: str | Path | None):
    """The first tokenizer saved in one of `folders` (run folders and data dirs keep one), else None."""
    from transformers import AutoTokenizer

    for folder in folders:
        if folder and (Path(folder) / "tokenizer_config.json").is_file():
            return AutoTokenizer.from_pretrained(str(folder))
    return None


def hidden_blocks(tokens, block_len: int, n_tokens: int, batch_size: int, seed: int) -> list:
    """Seeded random non-overlapping blocks of the stream, in stream order, batched: layer-metric inputs."""
    import numpy as np
    import torch

    n_avail = len(tokens) // block_len
    n_blocks = max(1, min(n_avail, math.ceil(n_tokens / block_len)))
    starts = np.sort(np.random.default_rng(seed).choice(n_avail, size=n_blocks, replace=False)) * block_len
    rows = [torch.from_numpy(tokens[s : s + block_len].copy()) for s in starts]
    return [torch.stack(rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)]


# ------------------------------------------------------------------------------------------ evaluate
def evaluate(args: argparse.Namespace, ckpt: str | Path, out_dir: Path | None = None) -> dict:
    """Evaluate one checkpoint against its teacher; writes metrics.json, PNGs and summary.md; returns metrics."""
    model_dir = resolve_checkpoint(ckpt)
    out_dir = Path(out_dir or args.out_dir or Path(ckpt) / "eval")
    info_path = model_dir / "distill_info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    if args.task == "dolly":  # instruction following: ROUGE-L of generated responses (Code/eval_dolly.py)
        from Code.evaluation.dolly import evaluate_dolly

        return evaluate_dolly(args, model_dir, info, out_dir, _existing)
    teacher_path = args.teacher or info.get("teacher")
    if not teacher_path:
        raise EvalError(f"no teacher known for {model_dir} (no distill_info.json): pass --teacher PATH")
    teacher_path = _existing(str(teacher_path))
    data_dir = args.data_dir or (None if args.text_file else info.get("data_dir"))
    data_dir = _existing(data_dir) if data_dir else None
    if args.task != "lm":
        raise EvalError(f"--task {args.task} is not available yet; use --task lm")
    # the student's vocabulary is checked from its config before any model is loaded
    s_vocab = json.loads((model_dir / "config.json").read_text()).get("vocab_size", 0)
    if data_dir and not args.text_file:
        from Code.lm_datasets import check_vocab, load_meta

        check_vocab(load_meta(data_dir), s_vocab, "student")

    import numpy as np
    import torch

    from Code.evaluation.cost import model_cost
    from Code.evaluation.metrics import layer_distances
    from Code.evaluation.passes import PROMPTS, collect_hidden, generate_samples, perplexity
    from Code.evaluation.plots import layer_plot, tsne_embed, tsne_plots
    from Code.evaluation.summary import run_name, summary_markdown
    from Code.lm_datasets import EvalWindows
    from Code.modeling.layer_map import validate_layer_map
    from Code.modeling.loading import load_student, load_teacher
    from Code.utils import atomic_write_json, atomic_write_text, seed_everything

    seed_everything(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EvalError(f"--device {args.device}: CUDA is not available here; use --device cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    student = load_student(model_dir, device=device, dtype=dtype).eval().requires_grad_(False)
    teacher = load_teacher(teacher_path, device=device, dtype=dtype)
    tokenizer = load_tokenizer_near(model_dir, Path(data_dir) / "tokenizer" if data_dir else None, teacher_path)
    tokens, source = token_stream(args, data_dir, tokenizer, {"student": s_vocab,
                                                              "teacher": teacher.config.vocab_size})

    window = args.window or min(student.config.n_positions, teacher.config.n_positions)
    if not 2 <= window <= min(student.config.n_positions, teacher.config.n_positions):
        raise EvalError(f"--window {window} must be in 2..{min(student.config.n_positions, teacher.config.n_positions)}"
                        " (the models' context)")
    if args.stride is not None and not 1 <= args.stride <= window:
        raise EvalError(f"--stride {args.stride} must be in 1..{window} (the window)")
    progress = not args.no_progress
    kw = {"device": device, "batch_size": args.batch_size, "progress": progress}
    result: dict = {"checkpoint": str(model_dir), "teacher_path": str(teacher_path), "seed": args.seed,
                    "device": device.type, "dtype": str(dtype).replace("torch.", ""), "notes": []}
    windows = EvalWindows(torch.from_numpy(tokens), window, args.stride)
    items = [windows[i] for i in range(len(windows))]
    result["teacher"] = perplexity(teacher, items, desc="teacher ppl", **kw)
    result["student"] = perplexity(student, items, desc="student ppl", **kw)
    if args.stride is not None and args.stride < window - 1:  # window-1 is already non-overlapping
        flat = EvalWindows(torch.from_numpy(tokens), window, None)
        flat_items = [flat[i] for i in range(len(flat))]
        result["teacher"]["ppl_nonoverlap"] = perplexity(teacher, flat_items, desc="teacher ppl/flat", **kw)["ppl"]
        result["student"]["ppl_nonoverlap"] = perplexity(student, flat_items, desc="student ppl/flat", **kw)["ppl"]
    result["data"] = {"source": source, "tokens_scored": result["student"]["tokens"], "window": window,
                      "stride": args.stride, "max_tokens": args.max_tokens}

    # ---- layer by layer
    s_n, t_n = student.config.n_layer, teacher.config.n_layer
    pairs, map_source = layer_map_for(args, info, s_n, t_n)
    validate_layer_map(pairs, s_n, t_n, student.config.n_embd, teacher.config.n_embd)
    result["layer_map_source"] = map_source
    block_len = min(window, max(2, len(tokens) // 2), 256)
    blocks = hidden_blocks(tokens, block_len, args.hidden_tokens, args.batch_size, args.seed)
    s_hidden = collect_hidden(student, blocks, [s for s, _ in pairs], device, "student hidden", progress)
    t_hidden = collect_hidden(teacher, blocks, [t for _, t in pairs], device, "teacher hidden", progress)
    result["hidden_tokens"] = int(s_hidden[0].shape[0])
    result["layers"] = [
        {"student_layer": s, "teacher_layer": t, **layer_distances(sh, th, args.projections, args.seed)}
        for (s, t), sh, th in zip(pairs, s_hidden, t_hidden, strict=True)
    ]
    images = [layer_plot(result["layers"], out_dir / "layers.png", run_name(Path(ckpt))).name]
    if student.config.n_embd != teacher.config.n_embd:
        result["notes"].append("student and teacher widths differ: sliced WD, MSE and t-SNE need equal widths "
                               "and are skipped; CKA compares the raw features")
    elif args.tsne_points > 0:
        n_pts = min(args.tsne_points, result["hidden_tokens"])
        pick = np.sort(np.random.default_rng(args.seed).choice(result["hidden_tokens"], n_pts, replace=False))
        embeds = []
        for (s, t), sh, th in zip(pairs, s_hidden, t_hidden, strict=True):
            te, se = tsne_embed(th[pick].numpy(), sh[pick].numpy(), seed=args.seed)
            embeds.append((f"s{s}_t{t}", te, se))
        images += [p.name for p in tsne_plots(embeds, out_dir)]
    del s_hidden, t_hidden

    # ---- cost: same batch and device for both, after warm-up
    cost_len = min(window, 256, len(tokens) // max(1, args.cost_batch)) or min(window, len(tokens))
    batch = torch.from_numpy(tokens[: cost_len * args.cost_batch].copy()).view(-1, cost_len)
    teacher_dir = teacher_path if Path(teacher_path).is_dir() else None
    cost = {"teacher": model_cost(teacher, teacher_dir, batch, device),
            "student": model_cost(student, model_dir, batch, device)}
    cost["speedup"] = cost["student"]["tokens_per_s"] / cost["teacher"]["tokens_per_s"]
    cost["param_ratio"] = cost["student"]["params"] / cost["teacher"]["params"]
    result["cost"] = cost

    # ---- generations
    result["generations"] = {"prompts": list(PROMPTS), "max_new_tokens": args.gen_tokens, "teacher": [],
                             "student": []}
    if args.gen_tokens > 0 and tokenizer is not None:
        for name, model in (("teacher", teacher), ("student", student)):
            result["generations"][name] = generate_samples(model, tokenizer, PROMPTS, args.gen_tokens, args.seed,
                                                           device)
    elif args.gen_tokens > 0:
        result["notes"].append("no tokenizer saved with the checkpoint or data: generations skipped")

    atomic_write_json(out_dir / "metrics.json", result)
    atomic_write_text(out_dir / "summary.md", summary_markdown(result, images))
    print(f"wrote {out_dir}/metrics.json: student ppl {result['student']['ppl']:.3f}, "
          f"teacher ppl {result['teacher']['ppl']:.3f}")
    return result


def compare(args: argparse.Namespace) -> Path:
    """Evaluate runs lacking eval/metrics.json, then one markdown table, one JSON and one plot."""
    from Code.evaluation.plots import compare_plot
    from Code.evaluation.summary import compare_markdown, run_name
    from Code.utils import atomic_write_json, atomic_write_text

    runs = ([args.ckpt] if args.ckpt else []) + list(args.compare)
    loaded = []
    for run in runs:
        metrics_path = Path(run) / "eval" / "metrics.json"
        if metrics_path.is_file():
            metrics = json.loads(metrics_path.read_text())
        else:
            metrics = evaluate(args, run, Path(run) / "eval")
        loaded.append((run_name(Path(run)), metrics))
    out_dir = Path(args.out_dir) if args.out_dir else Path(runs[0]).resolve().parent / "compare"
    image = compare_plot(loaded, out_dir / "compare.png").name
    atomic_write_text(out_dir / "compare.md", compare_markdown(loaded, image))
    atomic_write_json(out_dir / "compare.json", {name: m for name, m in loaded})
    return out_dir


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.compare and args.task == "dolly":
            from Code.evaluation.dolly import compare_dolly

            print(f"wrote {compare_dolly(args, evaluate)}/compare_dolly.md")
        elif args.compare:
            out = compare(args)
            print(f"wrote {out}/compare.md")
        elif args.ckpt:
            evaluate(args, args.ckpt)
        else:
            raise EvalError("nothing to evaluate: pass --ckpt DIR or --compare RUN ...")
    except (ValueError, FileNotFoundError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"error: {message}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
