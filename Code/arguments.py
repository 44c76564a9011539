"""Every knob of training, with its default: the single source the launchers and configs map onto.

A YAML file given with `--config` may set any flag (dashes or underscores); the command line wins.
Presets (`--preset seed_wd`) fill the loss, weights and critic settings of a named recipe, and flags
given explicitly still win over the preset.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from Code import CODE_DIR
from Code.config import RunConfig, from_namespace
from Code.data_pipeline.instruction_data import PROMPT_TASKS
from Code.objectives.registry import LossSpecError

# name -> flag values; kept here (not in losses.py) because a preset is a bundle of flags.
PRESETS: dict[str, dict[str, object]] = {
    # The seed study's Wasserstein run: 0.3*WD + 0.4*KD(T=2) + 0.3*LM, RMSprop critics, cosine schedule,
    # and everything else as the seed study had it (bit for bit the code before the critic fixes): WD summed
    # over layers, raw critic inputs, no critic warm-up, Adam betas 0.5,0.9 (unused by RMSprop), a critic LR
    # decaying to 0, the student's dropout 0.1 against the teacher's eval mode.
    "seed_wd": {"loss": "wd+kd+lm", "weights": "0.3,0.4,0.3", "temperature": 2.0,
                "critic_optimizer": "rmsprop", "critic_lr": 1e-4, "critic_schedule": "cosine",
                "wd_reduce": "sum", "critic_standardize": False, "critic_warmup_steps": 0, "critic_betas": "0.5,0.9",
                "critic_min_lr_ratio": 0.0, "student_dropout": 0.1},
    # The seed study's MSE run: 0.3*MSE + 0.3*KD(T=1) + 0.4*LM; "uniform" maps student hidden i to teacher
    # hidden i*T/S, which for 12 -> 6 layers is the seed's teacher 2,4,..,12 <- student 1..6. Student
    # dropout 0.1 as in the seed study (and as its seed_wd twin).
    "seed_mse": {"loss": "mse+kd+lm", "weights": "0.3,0.3,0.4", "temperature": 1.0,
                 "layer_map": "uniform", "student_dropout": 0.1},
    # Hugging Face DistilGPT2: alpha_ce 5, alpha_clm 2, alpha_cos 1, T=2, teacher layers 0,2,4,7,9,11.
    "distilgpt2": {"loss": "kd+lm+cos", "weights": "5.0,2.0,1.0", "temperature": 2.0,
                   "student_layers": "distilgpt2", "cos_last_only": True},
}


class ConfigError(ValueError):
    """A bad flag value or config file, reported as one line."""


def build_parser() -> argparse.ArgumentParser:
    """Every flag with its default, in groups. One flat list on purpose (over the ~60-line rule): a reader
    finds any knob, its default and its help in one place, which splitting would scatter."""
    p = argparse.ArgumentParser(description="Distil a GPT-2 teacher into a smaller student.")
    add = p.add_argument
    g = p.add_argument_group("run")
    g.add_argument("--config", type=str, default=None, help="YAML file of flags (command line overrides)")
    g.add_argument("--preset", type=str, default=None, choices=sorted(PRESETS), help="named recipe")
    g.add_argument("--run-name", type=str, default=None, help="run directory name under Code/output")
    g.add_argument("--out-dir", type=str, default=None, help="run directory (default Code/output/<run>)")
    g.add_argument("--seed", type=int, default=1234)
    g.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in out-dir")
    g.add_argument("--overwrite", action="store_true", help="start over even if out-dir holds a run")
    g.add_argument("--check", action="store_true",
                   help="validate the whole configuration (no weights loaded, no ranks started) and exit")

    g = p.add_argument_group("models")
    g.add_argument("--teacher", type=str, default="gpt2", help="hub name or local save_pretrained dir")
    g.add_argument("--no-teacher", action="store_true", help="train with `lm` alone, no teacher loaded")
    g.add_argument("--student", type=str, default=None, help="start from this GPT-2 checkpoint")
    g.add_argument("--student-config", type=str, default=None,
                   help="random-init student: JSON file or key=value,... over GPT2Config")
    g.add_argument("--student-layers", type=str, default="0,2,4,6,8,10",
                   help="teacher blocks copied into the student: list, first:K, last:K or distilgpt2")
    g.add_argument("--layer-map", type=str, default=None,
                   help="student hidden -> teacher hidden: 's:t,...', 't1,...,tL' for student 1..L, or uniform "
                        "(student i -> teacher i*T/S); default: the truncation's own blocks")
    g.add_argument("--compile", type=str, default="auto", choices=["auto", "on", "off"],
                   help="torch.compile the student (auto: on GPU only)")
    g.add_argument("--student-dropout", type=float, default=None,
                   help="the student's resid/embd/attn dropout. Default 0.0 with a teacher: the teacher runs in "
                        "eval mode, so the student must too or every hidden-state term (and the critics) sees "
                        "dropout noise as distance; with --no-teacher the model config's own (GPT-2: 0.1)")

    g = p.add_argument_group("data")
    g.add_argument("--data-dir", type=str, default=str(CODE_DIR / "data" / "wikitext-103"))
    g.add_argument("--seq-len", type=int, default=512)
    g.add_argument("--num-workers", type=int, default=1)
    g.add_argument("--task", type=str, default="lm", choices=["lm", "prompt", "dolly"],
                   help="prompt: prompt/response records (dolly, cnn_dailymail), only the response is scored "
                        "(dolly: the same, its old name)")

    g = p.add_argument_group("optimisation")
    g.add_argument("--micro-batch-size", type=int, default=8)
    g.add_argument("--grad-accum", type=int, default=1)
    g.add_argument("--lr", type=float, default=5e-4)
    g.add_argument("--min-lr-ratio", type=float, default=0.1, help="cosine floor as a fraction of lr")
    g.add_argument("--warmup-steps", type=int, default=100)
    g.add_argument("--weight-decay", type=float, default=0.01)
    g.add_argument("--clip-grad", type=float, default=1.0)
    g.add_argument("--max-steps", type=int, default=None, help="optimizer steps (wins over --epochs)")
    g.add_argument("--epochs", type=float, default=1.0)
    g.add_argument("--zero-stage", type=int, default=1, choices=[0, 1, 2])
    g.add_argument("--precision", type=str, default="bf16", choices=["bf16", "fp32"])
    g.add_argument("--ds-config", type=str, default=str(CODE_DIR / "ds_config_bf16.json"))
    g.add_argument("--launcher", type=str, default="deepspeed", choices=["deepspeed", "torchrun"],
                   help="deepspeed engine, or plain PyTorch DDP with autocast (torchrun)")

    g = p.add_argument_group("losses")
    g.add_argument("--loss", type=str, default="wd",
                   help="terms joined by '+': lm, kd, mse, wd, ...; per-term options as kd[temperature=2]; "
                        "a config file may give a list of {name, weight, option: value}")
    g.add_argument("--weights", type=str, default=None, help="comma list, one per term (default equal)")
    g.add_argument("--temperature", type=float, default=1.0, help="logit-distillation temperature")
    g.add_argument("--kd-topk", type=int, default=0, help="only the teacher's top-k tokens (0 = all)")
    g.add_argument("--skew-alpha", type=float, default=0.1, help="mixing coefficient of skl / jsd")
    g.add_argument("--jsd-beta", type=float, default=0.5, help="jsd mixing coefficient (0.5 = symmetric)")
    g.add_argument("--cos-last-only", action="store_true",
                   help="cos on the last matched layer only (Hugging Face DistilGPT2)")
    g.add_argument("--mse-normalize", action="store_true",
                   help="divide each dimension by the teacher's std (GPT-2 has huge outlier dims)")
    g.add_argument("--swd-projections", type=int, default=128)
    g.add_argument("--wd-reduce", type=str, default="mean", choices=["mean", "sum"],
                   help="wd over matched layers: mean (as mse/cos/swd) or sum (the seed study)")

    g = p.add_argument_group("critic (wd)")
    g.add_argument("--n-critic", type=int, default=5, help="critic updates per student step")
    g.add_argument("--critic-hidden", type=int, default=256)
    g.add_argument("--critic-optimizer", type=str, default="adam", choices=["adam", "rmsprop"])
    g.add_argument("--critic-lr", type=float, default=1e-4)
    g.add_argument("--critic-betas", type=str, default="0.0,0.9", help="critic Adam betas (WGAN-GP's 0,0.9)")
    g.add_argument("--critic-schedule", type=str, default="constant", choices=["constant", "cosine"])
    g.add_argument("--critic-min-lr-ratio", type=float, default=0.1,
                   help="cosine critic schedule floor as a fraction of --critic-lr (0: decays to 0)")
    g.add_argument("--critic-standardize", action=argparse.BooleanOptionalAction, default=True,
                   help="critic inputs standardised per dimension by the teacher's running mean/std")
    g.add_argument("--critic-warmup-steps", type=int, default=100,
                   help="extra critic updates on a fresh run's first batch, before the student first moves (100: "
                        "at critic LR 1e-3 the estimate reaches ~90%% of its plateau, about 5 student steps' work)")
    g.add_argument("--gp-lambda", type=float, default=10.0)
    g.add_argument("--critic-samples", type=int, default=2048,
                   help="token positions per step the critics see (subsampled)")

    g = p.add_argument_group("instruction data (--task dolly) and MiniLLM (train_minillm.py)")
    g.add_argument("--select-by", type=str, default="loss", choices=["loss", "rougeL"],
                   help="best/ by lowest validation loss, or by highest ROUGE-L on --val-prompts prompts")
    g.add_argument("--val-prompts", type=int, default=32, help="validation prompts scored for --select-by rougeL")
    g.add_argument("--max-new-tokens", type=int, default=128, help="response tokens generated per prompt")
    g.add_argument("--max-prompt-len", type=int, default=256, help="prompt tokens kept (the last ones)")
    g.add_argument("--mix-alpha", type=float, default=0.2,
                   help="MiniLLM teacher-mixed sampling: draw from a*teacher + (1-a)*student")
    g.add_argument("--pt-weight", type=float, default=1.0, help="MiniLLM: weight of the LM (pretraining) term")
    g.add_argument("--pt-data-dir", type=str, default=None,
                   help="MiniLLM: data dir of the LM term (default --data-dir, prompts masked)")
    g.add_argument("--no-length-norm", action="store_true",
                   help="MiniLLM: sum future rewards instead of averaging them (the paper's ablation)")

    g = p.add_argument_group("logging and checkpoints")
    g.add_argument("--log-interval", type=int, default=10)
    g.add_argument("--grad-share-interval", type=int, default=None,
                   help="every N steps (at the first micro-batch of each log interval by default: N = "
                        "--log-interval) log grad_norm/<term> and grad_share/<term> of each weighted term's "
                        "gradient over the student's parameters; 0 = off")
    g.add_argument("--eval-interval", type=int, default=200)
    g.add_argument("--eval-iters", type=int, default=20, help="validation batches per evaluation")
    g.add_argument("--save-interval", type=int, default=500)
    g.add_argument("--keep-checkpoints", type=int, default=2)
    g.add_argument("--no-tensorboard", action="store_true")
    g.add_argument("--no-progress", action="store_true", help="plain log lines instead of a bar")
    del add
    return p


def _config_defaults(parser: argparse.ArgumentParser, path: str) -> dict[str, object]:
    import yaml

    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config file {path} not found: pass an existing YAML file to --config")
    try:
        raw = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML ({exc.__class__.__name__}): fix it") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must be a mapping of flag: value")
    known = {a.dest for a in parser._actions}
    values = {str(k).replace("-", "_"): v for k, v in raw.items()}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"config file {path} sets unknown flags {unknown}: see --help for the names")
    return values


def _explicit_dests(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """Which options the command line itself set (so presets and configs do not override them)."""
    flags = {opt: a.dest for a in parser._actions for opt in a.option_strings}
    dests = set()
    for token in argv:
        name = token.split("=", 1)[0]
        if name in flags:
            dests.add(flags[name])
    return dests


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    # DeepSpeed's launcher appends --local_rank=N; LOCAL_RANK in the environment says the same.
    argv = [a for a in argv if not a.startswith("--local_rank")]
    parser = build_parser()
    first = parser.parse_args(argv)
    explicit = _explicit_dests(parser, argv)
    layered: dict[str, object] = {}
    if first.config:
        layered.update(_config_defaults(parser, first.config))
    preset = layered.get("preset", first.preset) if "preset" not in explicit else first.preset
    if preset:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}: choose one of {sorted(PRESETS)}")
        # preset < config file < command line
        layered = {**PRESETS[preset], **layered}
        if "loss" in explicit and "weights" not in explicit:
            layered.pop("weights", None)  # LOSS=wd alone must not inherit the preset's three weights
    args = parser.parse_args(argv)
    for key, value in layered.items():
        if key not in explicit:
            setattr(args, key, value)
    validate(args)
    return args


def validate(args: argparse.Namespace) -> None:
    if args.seq_len < 2:
        raise ConfigError(f"--seq-len must be at least 2, got {args.seq_len}")
    if args.micro_batch_size < 1 or args.grad_accum < 1:
        raise ConfigError("--micro-batch-size and --grad-accum must be positive")
    if args.max_steps is not None and args.max_steps < 1:
        raise ConfigError(f"--max-steps must be positive, got {args.max_steps}")
    if args.student and args.student_config:
        raise ConfigError("give either --student or --student-config, not both")
    if args.select_by == "rougeL" and args.task not in PROMPT_TASKS:
        raise ConfigError("--select-by rougeL scores responses to prompts: use it with --task prompt")
    if args.max_new_tokens < 1 or args.val_prompts < 1 or args.max_prompt_len < 1:
        raise ConfigError("--max-new-tokens, --val-prompts and --max-prompt-len must be positive")
    if not 0 <= args.mix_alpha < 1:
        raise ConfigError(f"--mix-alpha must be in [0, 1) (0.2 in the MiniLLM paper), got {args.mix_alpha}")
    if args.pt_weight < 0:
        raise ConfigError(f"--pt-weight must be >= 0, got {args.pt_weight}")
    if args.student_dropout is None and not args.no_teacher:
        args.student_dropout = 0.0  # the teacher's eval mode (see --help); args.json records the value
    if args.student_dropout is not None and not 0 <= args.student_dropout < 1:
        raise ConfigError(f"--student-dropout must be in [0, 1), got {args.student_dropout}")
    if args.critic_warmup_steps < 0:
        raise ConfigError(f"--critic-warmup-steps must be >= 0, got {args.critic_warmup_steps}")
    if not 0 <= args.critic_min_lr_ratio <= 1:
        raise ConfigError(f"--critic-min-lr-ratio must be in [0, 1], got {args.critic_min_lr_ratio}")
    if args.grad_share_interval is None:
        args.grad_share_interval = args.log_interval
    if args.grad_share_interval < 0:
        raise ConfigError(f"--grad-share-interval must be >= 0 (0 = off), got {args.grad_share_interval}")
    try:
        betas = tuple(float(b) for b in str(args.critic_betas).split(","))
    except ValueError as exc:
        raise ConfigError(f"--critic-betas must be two numbers like 0.0,0.9, got {args.critic_betas}") from exc
    if len(betas) != 2:
        raise ConfigError(f"--critic-betas must be two numbers like 0.0,0.9, got {args.critic_betas}")
    args.critic_betas = ",".join(str(b) for b in betas)
    for name in _loss_names(args.loss):
        if name in PRESETS:
            preset = PRESETS[name]
            raise ConfigError(f"'{name}' is a preset, not a loss: use --preset {name} "
                              f"(= --loss {preset['loss']} --weights {preset['weights']} and more)")
    if args.out_dir is None:
        name = args.run_name or f"{'_'.join(_loss_names(args.loss))}_seed{args.seed}"
        args.out_dir = str(CODE_DIR / "output" / name)


def _loss_names(loss: object) -> list[str]:
    """The term names of `--loss` (a `+` string with optional [options], or a config file's list)."""
    if isinstance(loss, str):
        return [part.split("[", 1)[0].strip() for part in loss.split("+")]
    return [str(item.get("name", "")) if isinstance(item, dict) else str(item) for item in loss or []]


def parse_config(argv: list[str] | None = None) -> RunConfig:
    """Command line (and config file, preset) -> the typed `RunConfig` every other module reads."""
    try:
        return from_namespace(parse_args(argv))
    except LossSpecError as exc:
        raise ConfigError(str(exc)) from None
