"""Evaluation's configuration as typed objects, built once from the command line of `Code/evaluate_.py`.

Past the command line nothing in `Code/evaluation/` reads an argparse Namespace: each function takes the
`EvalConfig` or the part of it it needs (`SourceConfig`: what is scored; `MeasureConfig`: how much of each
measurement; `RuntimeConfig`: where and how it runs; `DollyConfig`: `--task dolly`'s decoding).
Light at import (argparse and dataclasses only): the entry checks its inputs before torch loads.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SourceConfig:
    """What is scored: the teacher, the tokens (a data split or raw text), out-of-domain text, the windows."""

    teacher: str | None = None      # None: the run's distill_info.json
    data_dir: str | None = None     # None: the run's distill_info.json (or none with text_file)
    split: str = "test"
    text_file: str | None = None    # raw text instead of a split
    ood_text: tuple[str, ...] = ()  # files or folders of .txt scored as out-of-domain text
    window: int | None = None       # None: the models' shared context
    stride: int | None = None       # None: non-overlapping windows
    max_tokens: int | None = None   # None: the whole split / text


@dataclass(frozen=True)
class MeasureConfig:
    """Which layers are compared and how much of each measurement is taken."""

    layer_map: str | None = None       # None: the run's map, else derived from student_layers
    student_layers: str | None = None
    hidden_tokens: int = 4096          # token positions for the layer metrics
    projections: int = 256             # random projections of the sliced WD
    tsne_points: int = 400             # token positions per model in t-SNE; 0: off
    gen_tokens: int = 32               # new tokens per generated sample; 0: off
    cost_batch: int = 4                # batch of the timing pass


@dataclass(frozen=True)
class RuntimeConfig:
    """Where and how the passes run."""

    seed: int = 0
    device: str = "auto"
    threads: int | None = None  # None: torch's choice
    batch_size: int = 8         # windows (or prompts) per forward pass
    progress: bool = True


@dataclass(frozen=True)
class DollyConfig:
    """`--task dolly`: which prompts and how responses are decoded."""

    max_examples: int | None = None
    max_new_tokens: int = 256
    max_prompt_len: int = 256
    sample: bool = False  # seeded sampling instead of greedy decoding


TASKS = ("lm", "dolly")


@dataclass(frozen=True)
class EvalConfig:
    """One `evaluate_.py` invocation: what to evaluate (one checkpoint or several runs), where results go."""

    task: str = "lm"
    ckpt: str | None = None
    compare: tuple[str, ...] = ()
    out_dir: str | None = None  # None: <ckpt>/eval; --compare: <first run's parent>/compare
    overwrite: bool = False     # replace earlier results in the output folder
    source: SourceConfig = field(default_factory=SourceConfig)
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    dolly: DollyConfig = field(default_factory=DollyConfig)


def add_flags(p: argparse.ArgumentParser) -> None:
    """Every evaluate_.py flag; `from_namespace` turns the parsed flags into an EvalConfig."""
    p.add_argument("--ckpt", help="a save_pretrained student, or a run dir Code/output/<run> (uses best/, else final/)")
    p.add_argument("--teacher", help="teacher folder or hub name (default: the run's distill_info.json)")
    p.add_argument("--data-dir", help="Code/data/<name> (default: the run's distill_info.json)")
    p.add_argument("--split", default="test", help="split of the indexed dataset (default: test)")
    p.add_argument("--text-file", help="score raw text instead of a split (uses the run's tokenizer)")
    p.add_argument("--ood-text", nargs="+", metavar="PATH",
                   help="also score out-of-domain text: files, or folders of .txt files (same tokenizer,\n"
                        "window, stride; --max-tokens in all, shared between the files; Project Gutenberg\n"
                        "header/footer cut off): student.ood_ppl, teacher.ood_ppl in metrics.json")
    p.add_argument("--window", type=int, help="tokens per window (default: the models' context)")
    p.add_argument("--stride", type=int, help="sliding-window stride (default: non-overlapping windows)")
    p.add_argument("--max-tokens", type=int, help="score at most this many tokens (default: the whole split)")
    p.add_argument("--out-dir", help="output folder (default: <ckpt>/eval; --compare: <runs' parent>/compare)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results already in the output folder (default: refuse)")
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
    p.add_argument("--task", default="lm", choices=TASKS, help="lm (default); dolly: instruction eval")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    g = p.add_argument_group("--task dolly")
    g.add_argument("--max-examples", type=int, help="score the first N records of the split (default: all)")
    g.add_argument("--max-new-tokens", type=int, default=256, help="response tokens per prompt (256)")
    g.add_argument("--max-prompt-len", type=int, default=256, help="prompt tokens kept, the last ones (256)")
    g.add_argument("--sample", action="store_true", help="sample (seeded by --seed) instead of greedy decoding")


def from_namespace(ns: argparse.Namespace) -> EvalConfig:
    """The parsed flags as one EvalConfig (the only place that reads the Namespace)."""
    return EvalConfig(
        task=ns.task, ckpt=ns.ckpt, compare=tuple(ns.compare or ()), out_dir=ns.out_dir, overwrite=ns.overwrite,
        source=SourceConfig(teacher=ns.teacher, data_dir=ns.data_dir, split=ns.split, text_file=ns.text_file,
                            ood_text=tuple(ns.ood_text or ()), window=ns.window, stride=ns.stride,
                            max_tokens=ns.max_tokens),
        measure=MeasureConfig(layer_map=ns.layer_map, student_layers=ns.student_layers,
                              hidden_tokens=ns.hidden_tokens, projections=ns.projections,
                              tsne_points=ns.tsne_points, gen_tokens=ns.gen_tokens, cost_batch=ns.cost_batch),
        runtime=RuntimeConfig(seed=ns.seed, device=ns.device, threads=ns.threads, batch_size=ns.batch_size,
                              progress=not ns.no_progress),
        dolly=DollyConfig(max_examples=ns.max_examples, max_new_tokens=ns.max_new_tokens,
                          max_prompt_len=ns.max_prompt_len, sample=ns.sample),
    )
