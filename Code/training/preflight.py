"""Fail fast: validate a whole run's configuration in seconds, before any rank starts.

    python Code/train_related.py --check ...     # what the launchers run first (Code/launch_common.sh)

`check_run(cfg, world_size)` reads only small files: meta.json and the token indexes of the data folder,
the models' config.json (a local `save_pretrained` folder, the local Hugging Face cache, else the hub's
config when the hub answers), the student spec, the DeepSpeed JSON and the run folder's listing. It loads
no weights, starts no process group and imports neither deepspeed nor datasets. Each problem is one
`ConfigError` line naming it and its fix; the same checks guard the trainer, which calls `check_run` and
`check_run_dir` again inside the ranks.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from transformers import PretrainedConfig

from Code.arguments import parse_config
from Code.cli import first_line
from Code.config import RunConfig
from Code.data_pipeline.instruction_data import HOW as PROMPT_HOW
from Code.data_pipeline.instruction_data import prompt_lengths
from Code.data_pipeline.lm_datasets import check_data, check_vocab, load_meta, open_split
from Code.knobs import ConfigError
from Code.modeling.families import describe
from Code.modeling.generation import prompt_budget
from Code.modeling.loading import ModelLoadError, load_config
from Code.objectives.registry import LossPlan
from Code.run_folder import STARTED
from Code.training.model_plan import ModelPlan, plan_models
from Code.training.run_guard import check_same_run, refuse_if_locked
from Code.training.setup import check_train_blocks
from Code.training.teacher_targets import open_run_cache

WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
OFFLINE_FIX = "pass a local save_pretrained folder, e.g. one made by scripts/pretrain_teacher.sh"


@contextlib.contextmanager
def _one_line():
    """Any ValueError / FileNotFoundError of the checks below becomes a ConfigError of its first line."""
    try:
        yield
    except ConfigError:
        raise
    except (ValueError, FileNotFoundError, KeyError) as exc:
        raise ConfigError(first_line(exc)) from exc


# ------------------------------------------------------------------------------------------- run folder
def check_run_dir(out_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to mix a new run into a started one (metrics.jsonl, checkpoints/, best/ or final/).

    --resume or --overwrite lets it through; --resume without a checkpoint starts from step 0, as the
    trainer does. A folder holding only args.json (a run that failed before its first log line) may be
    retried as is. Reads the listing only: nothing is written.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out-dir {out} is a file, not a folder: pass another --out-dir or RUN_NAME")
    started = any((out / name).exists() for name in STARTED)
    if started and not (resume or overwrite):
        raise ConfigError(f"{out} already holds a run: pass --resume to continue it or --overwrite to start over")
    parent = out
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write the run folder {out} ({parent} is not writable): pass another --out-dir")
    refuse_if_locked(out)  # one run per folder (training/run_guard.py)


# ---------------------------------------------------------------------------------------------- models
def model_config(name_or_path: str, what: str, trust_remote_code: bool = False) -> PretrainedConfig:
    """A model's config, no weights, of a family Code.modeling.families knows: a local folder, else the local
    HF cache, else the hub if it answers (`Code.modeling.loading.load_config`, so what passes here loads there).
    """
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ConfigError(f"{what} folder {path} has no config.json; point at a folder written by save_pretrained")
        try:
            json.loads((path / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{what} {path / 'config.json'} is not valid JSON ({first_line(exc)}): "
                              "save the model again with save_pretrained") from None
        if not any((path / name).is_file() for name in WEIGHTS):
            raise ConfigError(f"{what} folder {path} has a config.json but no weights ({WEIGHTS[0]}): "
                              "save the model with save_pretrained")
    try:
        return load_config(name_or_path, what, trust_remote_code)
    except (ModelLoadError, TypeError) as exc:
        raise ConfigError(first_line(exc)) from None


def _models(cfg: RunConfig, meta: dict, needs_teacher: bool) -> ModelPlan:
    """The run's model plan (`model_plan.plan_models`, the one setup runs) on configs alone, no weights."""
    with _one_line():
        return plan_models(cfg.model, meta, needs_teacher,
                           lambda name, what: model_config(name, what, cfg.model.trust_remote_code),
                           loss=f"loss {cfg.loss_label!r}")


def _check_seq_len(seq_len: int, models: ModelPlan) -> None:
    contexts = models.contexts
    limit = min(n for _, n in contexts)
    if seq_len > limit:
        have = " and ".join(f"the {name}'s {n}" for name, n in contexts)
        raise ConfigError(f"--seq-len {seq_len} is longer than the models' context ({have} positions): lower "
                          f"SEQ_LEN/--seq-len to at most {limit}, or use a model with a longer context")


def _check_generation(cfg: RunConfig, models: ModelPlan, minillm: bool) -> None:
    """Rollouts (MiniLLM) and ROUGE-L selection generate `--max-new-tokens` after a prompt."""
    if not (minillm or cfg.select.select_by == "rougeL"):
        return
    for config in (models.student, models.teacher if minillm else None):
        if config is not None:
            with _one_line():
                prompt_budget(_HasConfig(config), cfg.select.max_new_tokens, cfg.select.max_prompt_len)


@dataclass(frozen=True)
class _HasConfig:  # prompt_budget reads model.config only
    config: PretrainedConfig


# ------------------------------------------------------------------------------------------------ data
def _data(data_dir: str) -> dict:
    with _one_line():
        meta = load_meta(data_dir)
    for key in ("vocab_size", "eos_id"):
        if key not in meta:
            raise ConfigError(f"{Path(data_dir) / 'meta.json'} has no {key}: re-run the conversion "
                              "(python Code/data_download.py ... --overwrite)")
    return meta


def _split(data_dir: str, split: str, seq_len: int, task: str) -> tuple[int, int]:
    """(blocks of seq_len + 1 tokens, documents) of a split; prompt data also needs its prompt lengths."""
    with _one_line():
        data = open_split(data_dir, split)
        if task == "prompt":
            lengths = prompt_lengths(data_dir, split, len(data))
            if np.any(lengths > np.asarray(data.sizes)):
                raise ConfigError(f"a prompt length of split {split!r} exceeds its document's length: "
                                  f"{PROMPT_HOW} --overwrite")
    blocks = max(0, (data.num_tokens - 1) // seq_len)
    if blocks < 1:
        raise ConfigError(f"{split} split of {data_dir} holds {data.num_tokens} tokens, fewer than one block of "
                          f"--seq-len {seq_len} + 1: lower SEQ_LEN/--seq-len or add data")
    return blocks, len(data)


def _check_ds_config(cfg: RunConfig) -> None:
    if cfg.optim.launcher != "deepspeed":
        return
    path = Path(cfg.optim.ds_config)
    if not path.is_file():
        raise ConfigError(f"DeepSpeed config {path} not found: pass --ds-config PATH (e.g. Code/ds_config_bf16.json)")
    try:
        ok = isinstance(json.loads(path.read_text(encoding="utf-8")), dict)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"DeepSpeed config {path} is not valid JSON ({first_line(exc)}): fix it") from None
    if not ok:
        raise ConfigError(f"DeepSpeed config {path} must hold a JSON object")


# --------------------------------------------------------------------------------------------- the check
def check_run(cfg: RunConfig, world_size: int = 1, *, minillm: bool = False) -> str:
    """Validate the run `cfg` for `world_size` ranks; a one-line summary, or ConfigError naming problem and fix.

    `minillm`: the run is `train_minillm.py` (prompt data, a teacher, prompts per rank, rollout room).
    """
    if world_size < 1:
        raise ConfigError(f"world size must be at least 1, got {world_size}")
    data_dir, seq_len, task = cfg.data.data_dir, cfg.data.seq_len, cfg.data.task
    batch = cfg.optim.micro_batch_size
    if minillm and task != "prompt":
        raise ConfigError("MiniLLM samples responses to prompts: pass --task prompt (TASK=prompt) with a data dir "
                          "converted by python Code/data_download.py --dataset dolly")
    # a teacher cache (--teacher-cache) stands in for the teacher's logits: kd alone then needs no teacher
    needs_teacher = True if minillm else LossPlan.from_terms(cfg.losses, bool(cfg.data.teacher_cache)).needs_teacher
    if cfg.model.no_teacher and needs_teacher and minillm:
        raise ConfigError("MiniLLM needs a teacher (reverse KL to it): drop --no-teacher (NO_TEACHER)")

    meta = _data(data_dir)
    models = _models(cfg, meta, needs_teacher)
    with _one_line():  # the files match meta.json's digests; no token id beyond either model's vocabulary
        check_data(data_dir, [c.vocab_size for c in (models.teacher, models.student) if c is not None])
    with _one_line():
        open_run_cache(cfg)  # sizes, data, teacher, seq_len, temperature, k; the arrays' sha256 at setup
    _check_seq_len(seq_len, models)
    train_blocks, train_docs = _split(data_dir, "train", seq_len, task)
    if minillm:
        if train_docs // world_size < batch:
            raise ConfigError(f"{train_docs} training prompts give each of {world_size} ranks fewer than one batch "
                              f"of {batch}: lower --micro-batch-size")
        pt_dir = cfg.minillm.pt_data_dir or data_dir
        same = Path(pt_dir).resolve() == Path(data_dir).resolve()
        if not same:
            pt_meta = _data(pt_dir)
            with _one_line():
                check_vocab(pt_meta, models.student.vocab_size, what="student")
        pt_blocks, _ = _split(pt_dir, "train", seq_len, task if same else "lm")
        check_train_blocks(pt_dir, pt_blocks, seq_len, batch, world_size)
    else:
        check_train_blocks(data_dir, train_blocks, seq_len, batch, world_size)
    valid_blocks, _ = _split(data_dir, "valid", seq_len, task)
    if valid_blocks < world_size:
        raise ConfigError(f"valid split of {data_dir} holds {valid_blocks} blocks of {seq_len} tokens, fewer than "
                          f"one per rank ({world_size}): lower --seq-len, use fewer ranks or add validation data")
    _check_generation(cfg, models, minillm)
    if cfg.select.select_by == "rougeL" and not (Path(data_dir) / "tokenizer").is_dir():
        raise ConfigError(f"--select-by rougeL decodes generations, but {data_dir} has no tokenizer/ folder: "
                          "reconvert the data with python Code/data_download.py")
    _check_ds_config(cfg)
    check_run_dir(cfg.out_dir, cfg.resume, cfg.overwrite)
    check_same_run(cfg.out_dir, cfg.flags, world_size, cfg.resume)  # a resume continues the same run

    teacher = "none" if models.teacher is None else (
        f"{cfg.model.teacher} ({describe(models.teacher)})")
    s = models.student
    state = "resume" if cfg.resume else "overwrite" if cfg.overwrite else "new"
    loss = "minillm" if minillm else cfg.loss_label
    return (f"check ok: teacher {teacher}; student {models.describe(cfg.model)} ({describe(s)}); loss {loss}; "
            f"layer map {models.layer_map}; data {data_dir} (train {train_blocks} blocks of {seq_len}, "
            f"{train_blocks // (batch * world_size)} batches of {batch} per rank x {world_size}); "
            f"out {cfg.out_dir} ({state})")


def _world_size() -> int:
    """Ranks the launcher will start: CHECK_WORLD_SIZE (set by Code/launch_common.sh), else WORLD_SIZE, else 1.

    CHECK_WORLD_SIZE is a whole number or a product like `auto*2`, where `auto` is the launcher's default
    ranks per node: the visible GPUs, else 1.
    """
    for var in ("CHECK_WORLD_SIZE", "WORLD_SIZE"):
        value = os.environ.get(var, "").strip()
        if not value:
            continue
        n = 1
        for part in value.split("*"):
            part = part.strip()
            if part == "auto":
                import torch

                n *= torch.cuda.device_count() or 1
                continue
            try:
                n *= int(part)
            except ValueError:
                raise ConfigError(f"{var}={value!r} is not a number of ranks (e.g. 2, auto or auto*2)") from None
        if n < 1:
            raise ConfigError(f"{var}={value!r}: the number of ranks must be at least 1")
        return n
    return 1


def _parse(argv: list[str] | None) -> RunConfig:
    """parse_config, with argparse's usage + `prog: error:` turned into one ConfigError line."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            return parse_config(argv)
    except SystemExit as exc:
        if exc.code in (0, None):  # --help
            raise
        lines = [line for line in captured.getvalue().splitlines() if line.strip()]
        message = lines[-1].split(": error: ", 1)[-1] if lines else f"bad command line (exit {exc.code})"
        raise ConfigError(f"{message} (see --help)") from None


def run_check(argv: list[str] | None = None, *, minillm: bool = False) -> int:
    """`--check`: parse the command line, check the run, print the summary (exit 0) or one `error:` line (2)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        cfg = _parse(argv)
        summary = check_run(cfg, _world_size(), minillm=minillm)
    except (ValueError, FileNotFoundError) as exc:  # ConfigError is a ValueError
        print(f"error: {first_line(exc)}", file=sys.stderr, flush=True)
        return 2
    print(summary, flush=True)
    return 0
