"""Evaluation's knobs, declared once (`EVALUATION`), and the typed config built from them once at the command
line of `Code/evaluate_.py`.

Each `Knob` (Code/knobs) is one flag of evaluate_.py and one field of a config section: `SourceConfig` (what
is scored), `MeasureConfig` (which layers, how much of each measurement), `RuntimeConfig` (where and how it
runs), `DollyConfig` (`--task dolly`'s decoding) and `EvalConfig` (what to evaluate, where results go, and
the sections). Past the command line nothing in `Code/evaluation/` reads an argparse Namespace: each
function takes the `EvalConfig` or the part of it it needs. Adding a flag: one `K(...)` below with its
section, then read it where it is used (`cfg.measure.<field>`). Light at import (no torch).
"""

from __future__ import annotations

import argparse
from dataclasses import field

from Code.evaluation.ood_format import FORMATS
from Code.knobs import Knob, Knobs, at_least


def _not(value: bool) -> bool:
    return not value


K = Knob
_WHAT, _SOURCE, _MEASURE, _RUNTIME = "what to evaluate", "what is scored", "measurements", "where and how"
_DOLLY = "--task dolly"

EVALUATION = Knobs([
    # ---------------------------------------------------------------------------------- what to evaluate
    K("ckpt", help="a save_pretrained student, or a run dir Code/output/<run> (uses best/, else final/)",
      group=_WHAT, section="eval"),
    K("compare", (), nargs="+", to_config=tuple, group=_WHAT, section="eval",
      help="runs to put in one table and plot (evaluated if they have no eval/metrics.json yet)"),
    K("task", "lm", choices=("lm", "dolly"), help="lm (default); dolly: instruction eval", group=_WHAT,
      section="eval"),
    K("out_dir", help="output folder (default: <ckpt>/eval; --compare: <runs' parent>/compare)", group=_WHAT,
      section="eval"),
    K("overwrite", False, switch=True, help="replace the results already in the output folder (default: refuse)",
      group=_WHAT, section="eval"),
    # ----------------------------------------------------------------------------------- what is scored
    K("teacher", help="teacher folder or hub name (default: the run's distill_info.json)", group=_SOURCE,
      section="source"),
    K("data_dir", help="Code/data/<name> (default: the run's distill_info.json)", group=_SOURCE, section="source"),
    K("split", "test", help="split of the indexed dataset (default: test)", group=_SOURCE, section="source"),
    K("text_file", help="score raw text instead of a split (uses the run's tokenizer)", group=_SOURCE,
      section="source"),
    K("ood_text", (), nargs="+", to_config=tuple, group=_SOURCE, section="source",
      help="also score out-of-domain text: files, or folders of .txt files (same tokenizer,\n"
           "window, stride; --max-tokens in all, shared between the files; Project Gutenberg\n"
           "header/footer cut off): student.ood_ppl, teacher.ood_ppl in metrics.json"),
    K("ood_format", "wikitext", choices=FORMATS, group=_SOURCE, section="source",
      help="--ood-text put into the training text's conventions first: wikitext (default: one paragraph\n"
           "per line, WikiText's spaced punctuation, @-@ @,@ @.@) or raw (as read); metrics.json ood.conventions"),
    # window and stride are checked against the models' context once they load (inputs.check_window)
    K("window", type=int, help="tokens per window (default: the models' context)", group=_SOURCE,
      section="source"),
    K("stride", type=int, help="sliding-window stride (default: non-overlapping windows)", group=_SOURCE,
      section="source"),
    K("max_tokens", type=int, help="score at most this many tokens (default: the whole split)", group=_SOURCE,
      section="source"),
    # ------------------------------------------------------------------------------------ measurements
    K("layer_map", help="s:t pairs or one teacher index per student layer (default: from the run)",
      group=_MEASURE, section="measure"),
    K("student_layers", help="teacher blocks the student was cut from, to derive the layer map", group=_MEASURE,
      section="measure"),
    K("hidden_tokens", 4096, int, help="token positions for layer metrics (4096)", check=at_least(1),
      group=_MEASURE, section="measure"),
    K("projections", 256, int, help="random projections for sliced WD (256)", check=at_least(1), group=_MEASURE,
      section="measure"),
    K("tsne_points", 400, int, help="token positions per model in t-SNE; 0 = off (400)", check=at_least(0),
      group=_MEASURE, section="measure"),
    K("gen_tokens", 32, int, help="new tokens per generation; 0 = off (32)", check=at_least(0), group=_MEASURE,
      section="measure"),
    K("cost_batch", 4, int, help="batch size for the timing pass (4)", check=at_least(1), group=_MEASURE,
      section="measure"),
    # ----------------------------------------------------------------------------------- where and how
    K("seed", 0, int, help="seeds sampling, projections, t-SNE (default 0)", group=_RUNTIME, section="runtime"),
    K("device", "auto", help="auto (cuda if present), cpu, cuda, cuda:N", group=_RUNTIME, section="runtime"),
    K("threads", type=int, help="CPU threads for torch (default: torch's choice)", check=at_least(1),
      group=_RUNTIME, section="runtime"),
    K("batch_size", 8, int, help="windows per forward pass (8)", check=at_least(1), group=_RUNTIME,
      section="runtime"),
    K("no_progress", False, switch=True, help="no progress bars", group=_RUNTIME, section="runtime",
      field="progress", to_config=_not),
    K("verbose", False, switch=True, group=_RUNTIME, section="runtime",
      help="let the libraries talk too: transformers' and the hub's progress bars and info logs (off by default)"),
    K("trust_remote_code", False, switch=True, help="run code config.json names", group=_RUNTIME, section="runtime"),
    # ------------------------------------------------------------------------------------- --task dolly
    K("max_examples", type=int, help="score the first N records of the split (default: all)", check=at_least(1),
      group=_DOLLY, section="dolly"),
    K("max_new_tokens", 256, int, help="response tokens per prompt (256)", check=at_least(1), group=_DOLLY,
      section="dolly"),
    K("max_prompt_len", 256, int, help="prompt tokens kept, the last ones (256)", check=at_least(1), group=_DOLLY,
      section="dolly"),
    K("sample", False, switch=True, help="sample (seeded by --seed) instead of greedy decoding", group=_DOLLY,
      section="dolly"),
])


@EVALUATION.section("source")
class SourceConfig:
    """What is scored: the teacher, the tokens (a data split or raw text), out-of-domain text, the windows."""


@EVALUATION.section("measure")
class MeasureConfig:
    """Which layers are compared and how much of each measurement is taken."""


@EVALUATION.section("runtime")
class RuntimeConfig:
    """Where and how the passes run."""


@EVALUATION.section("dolly")
class DollyConfig:
    """`--task dolly`: which prompts and how responses are decoded."""


@EVALUATION.section("eval")
class EvalConfig:
    """One `evaluate_.py` invocation: what to evaluate (one checkpoint or several runs), where results go."""

    source: SourceConfig = field(default_factory=SourceConfig)
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    dolly: DollyConfig = field(default_factory=DollyConfig)


def add_flags(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Every evaluate_.py flag, from the declarations above."""
    return EVALUATION.add_to(parser)


def from_namespace(ns: argparse.Namespace) -> EvalConfig:
    """The parsed flags as one EvalConfig, by keyword (the only place that reads the Namespace); a value that
    fails its knob's check is a ConfigError (one line, exit code 2)."""
    EVALUATION.check(ns)
    build = EVALUATION.build
    return build(EvalConfig, ns, source=build(SourceConfig, ns), measure=build(MeasureConfig, ns),
                 runtime=build(RuntimeConfig, ns), dolly=build(DollyConfig, ns))
