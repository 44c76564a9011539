"""Every knob of training (`train_related.py`, `train_minillm.py`) and its launchers, declared once.

The flags (`Code.arguments`), the config sections (`Code.config`), the launcher's variable map
(`Code/launch_common.sh`) and the lists of launcher variables (the GPU check's, the study's) derive from
`TRAINING`. Order here is the order of `--help`. Imports nothing heavy: the launcher reads this at start.
"""

from __future__ import annotations

from Code import CODE_DIR
from Code.knobs import Knob, Knobs, at_least, between

# name -> flag values. A preset is a bundle of knob values; flags given explicitly win over it.
PRESETS: dict[str, dict[str, object]] = {
    # The seed study's Wasserstein run: 0.3*WD + 0.4*KD(T=2) + 0.3*LM, RMSprop critics, cosine schedule,
    # and everything else as the seed study had it (bit for bit the code before the critic fixes): WD summed
    # over layers, raw critic inputs, no critic warm-up, Adam betas 0.5,0.9 (unused by RMSprop), a critic LR
    # decaying to 0, the student's dropout 0.1 against the teacher's eval mode.
    "seed_wd": {"loss": "wd+kd+lm", "weights": "0.3,0.4,0.3", "temperature": 2.0,
                "critic_optimizer": "rmsprop", "critic_lr": 1e-4, "critic_schedule": "cosine",
                "wd_reduce": "sum", "critic_standardize": False, "critic_warmup_steps": 0, "critic_betas": "0.5,0.9",
                "critic_min_lr_ratio": 0.0, "student_dropout": 0.1, "critic_penalty": "gp"},
    # The seed study's MSE run: 0.3*MSE + 0.3*KD(T=1) + 0.4*LM; "uniform" maps student hidden i to teacher
    # hidden i*T/S, which for 12 -> 6 layers is the seed's teacher 2,4,..,12 <- student 1..6. Student
    # dropout 0.1 as in the seed study (and as its seed_wd twin).
    "seed_mse": {"loss": "mse+kd+lm", "weights": "0.3,0.3,0.4", "temperature": 1.0,
                 "layer_map": "uniform", "student_dropout": 0.1},
    # Hugging Face DistilGPT2: alpha_ce 5, alpha_clm 2, alpha_cos 1, T=2, teacher layers 0,2,4,7,9,11.
    "distilgpt2": {"loss": "kd+lm+cos", "weights": "5.0,2.0,1.0", "temperature": 2.0,
                   "student_layers": "distilgpt2", "cos_last_only": True},
}

WHERE = "where to run"  # the group of the knobs that say where, not what: a study keeps them from its caller


def _betas(text: str) -> tuple[float, float]:
    try:
        betas = tuple(float(b) for b in str(text).split(","))
    except ValueError:
        betas = ()
    if len(betas) != 2:
        raise ValueError("must be two numbers like 0.0,0.9")
    return betas  # type: ignore[return-value]


def _not(value: bool) -> bool:
    return not value


K = Knob
_RUN, _MODELS, _DATA, _OPT, _LOSS = "run", "models", "data", "optimisation", "losses"
_CRITIC, _INSTR, _LOG = ("critic (wd)", "instruction data (--task dolly) and MiniLLM (train_minillm.py)",
                         "logging and checkpoints")

TRAINING = Knobs([
    # ------------------------------------------------------------------------------------------ run
    K("config", help="YAML file of flags (command line overrides)", env="CONFIG"),
    K("preset", choices=tuple(sorted(PRESETS)), help="named recipe", env="PRESET"),
    K("run_name", help="run directory name under Code/output", env="RUN_NAME"),
    K("out_dir", help="run directory (default Code/output/<run>)", env="OUT_DIR", section="run"),
    K("seed", 1234, int, env="SEED", section="run"),
    K("resume", False, switch=True, help="continue from the latest checkpoint in out-dir", env="RESUME",
      section="run"),
    K("overwrite", False, switch=True, help="start over even if out-dir holds a run", env="OVERWRITE",
      section="run"),
    K("check", False, switch=True,
      help="validate the whole configuration (no weights loaded, no ranks started) and exit"),
    # --------------------------------------------------------------------------------------- models
    K("teacher", "gpt2", help="hub name or local save_pretrained dir", group=_MODELS, env="TEACHER",
      section="model"),
    K("no_teacher", False, switch=True, help="train with `lm` alone, no teacher loaded", group=_MODELS,
      env="NO_TEACHER", section="model"),
    K("student", help="start from this checkpoint (the teacher's family and vocabulary)", group=_MODELS,
      env="STUDENT", section="model"),
    K("student_config", help="random-init student: JSON file or key=value,... over the teacher's config "
      "(GPT-2: n_layer, n_embd, n_head, n_positions)", group=_MODELS, env="STUDENT_CONFIG", section="model"),
    K("trust_remote_code", False, switch=True, group=_MODELS, env="TRUST_REMOTE_CODE", section="model",
      help="let models whose config.json names code on the hub run that code (off: such models are refused)"),
    K("student_layers", "0,2,4,6,8,10", group=_MODELS, env="STUDENT_LAYERS", section="model",
      help="teacher blocks copied into the student: list, first:K, last:K or distilgpt2"),
    K("layer_map", group=_MODELS, env="LAYER_MAP", section="model",
      help="student hidden -> teacher hidden: 's:t,...', 't1,...,tL' for student 1..L, or uniform "
           "(student i -> teacher i*T/S); default: the truncation's own blocks"),
    K("compile", "auto", choices=("auto", "on", "off"), group=_MODELS, env="COMPILE", section="model",
      help="torch.compile the student (auto: on GPU only)"),
    K("student_dropout", None, float, group=_MODELS, env="STUDENT_DROPOUT", section="model",
      check=between(0, 1, high_open=True),
      help="the student's resid/embd/attn dropout. Default 0.0 with a teacher: the teacher runs in "
           "eval mode, so the student must too or every hidden-state term (and the critics) sees "
           "dropout noise as distance; with --no-teacher the model config's own (GPT-2: 0.1)"),
    # ----------------------------------------------------------------------------------------- data
    K("data_dir", str(CODE_DIR / "data" / "wikitext-103"), group=_DATA, env="DATA_DIR", section="data"),
    K("seq_len", 512, int, group=_DATA, env="SEQ_LEN", section="data", check=at_least(2)),
    K("num_workers", 1, int, group=_DATA, section="data", check=at_least(0)),
    K("task", "lm", choices=("lm", "prompt", "dolly"), group=_DATA, env="TASK", section="data",
      help="prompt: prompt/response records (dolly, cnn_dailymail), only the response is scored "
           "(dolly: the same, its old name)"),
    K("teacher_cache", group=_DATA, env="TEACHER_CACHE", section="data",
      help="folder (or header) of the teacher's top-k targets for the train split, made once by "
           "python Code/cache_teacher.py: kd reads them instead of running the teacher (top-k KD with the "
           "rest as one bucket); hidden-state terms still need the live teacher"),
    # --------------------------------------------------------------------------------- optimisation
    K("micro_batch_size", 8, int, group=_OPT, env="MICRO_BATCH", section="optim", check=at_least(1)),
    K("grad_accum", 1, int, group=_OPT, env="GRAD_ACCUM", section="optim", check=at_least(1)),
    K("lr", 5e-4, float, group=_OPT, env="LR", section="optim"),
    K("min_lr_ratio", 0.1, float, help="cosine floor as a fraction of lr", group=_OPT, section="optim"),
    K("warmup_steps", 100, int, group=_OPT, env="WARMUP_STEPS", section="optim", check=at_least(0)),
    K("weight_decay", 0.01, float, group=_OPT, section="optim"),
    K("clip_grad", 1.0, float, group=_OPT, section="optim"),
    K("max_steps", None, int, help="optimizer steps (wins over --epochs)", group=_OPT, env="MAX_STEPS",
      section="optim", check=at_least(1)),
    K("epochs", 1.0, float, group=_OPT, env="EPOCHS", section="optim"),
    K("zero_stage", 1, int, choices=(0, 1, 2), group=_OPT, env="ZERO_STAGE", section="optim"),
    K("precision", "bf16", choices=("bf16", "fp32"), group=_OPT, env="PRECISION", section="optim"),
    K("ds_config", str(CODE_DIR / "ds_config_bf16.json"), group=_OPT, section="optim"),
    # --------------------------------------------------------------------------------------- losses
    K("loss", "wd", group=_LOSS, env="LOSS",
      help="terms joined by '+': lm, kd, mse, wd, ...; per-term options as kd[temperature=2]; "
           "a config file may give a list of {name, weight, option: value}"),
    K("weights", help="comma list, one per term (default equal)", group=_LOSS, env="WEIGHTS"),
    K("temperature", 1.0, float, help="logit-distillation temperature", group=_LOSS, env="TEMPERATURE"),
    K("kd_topk", 0, int, help="the teacher's top-k tokens plus the rest as one bucket (0 = all)", group=_LOSS,
      env="KD_TOPK"),
    K("skew_alpha", 0.1, float, help="mixing coefficient of skl / jsd", group=_LOSS),
    K("jsd_beta", 0.5, float, help="jsd mixing coefficient (0.5 = symmetric)", group=_LOSS),
    K("cos_last_only", False, switch=True, help="cos on the last matched layer only (Hugging Face DistilGPT2)",
      group=_LOSS),
    K("mse_normalize", False, switch=True, group=_LOSS,
      help="divide each dimension by the teacher's std (GPT-2 has huge outlier dims)"),
    K("swd_projections", 128, int, group=_LOSS),
    K("wd_reduce", "mean", choices=("mean", "sum"), group=_LOSS, env="WD_REDUCE",
      help="wd over matched layers: mean (as mse/cos/swd) or sum (the seed study)"),
    # ----------------------------------------------------------------------------------- critic (wd)
    K("n_critic", 5, int, help="critic updates per student step", group=_CRITIC, env="N_CRITIC",
      section="critic", check=at_least(1)),
    K("critic_hidden", 256, int, group=_CRITIC, section="critic", field="hidden", check=at_least(1)),
    K("critic_optimizer", "adam", choices=("adam", "rmsprop"), group=_CRITIC, env="CRITIC_OPTIMIZER",
      section="critic", field="optimizer"),
    K("critic_lr", 1e-4, float, group=_CRITIC, env="CRITIC_LR", section="critic", field="lr"),
    K("critic_betas", "0.0,0.9", help="critic Adam betas (WGAN-GP's 0,0.9)", group=_CRITIC, env="CRITIC_BETAS",
      section="critic", field="betas", to_config=_betas),
    K("critic_schedule", "constant", choices=("constant", "cosine"), group=_CRITIC, section="critic",
      field="schedule"),
    K("critic_min_lr_ratio", 0.1, float, group=_CRITIC, env="CRITIC_MIN_LR_RATIO", section="critic",
      field="min_lr_ratio", check=between(0, 1),
      help="cosine critic schedule floor as a fraction of --critic-lr (0: decays to 0)"),
    K("critic_standardize", True, switch=True, negatable=True, group=_CRITIC, env="NO_CRITIC_STANDARDIZE",
      section="critic", field="standardize",
      help="critic inputs standardised per dimension by the teacher's running mean/std"),
    K("critic_warmup_steps", 100, int, group=_CRITIC, env="CRITIC_WARMUP_STEPS", section="critic",
      field="warmup_steps", check=at_least(0),
      help="extra critic updates on a fresh run's first batch, before the student first moves (100: "
           "at critic LR 1e-3 the estimate reaches ~90% of its plateau, about 5 student steps' work)"),
    K("gp_lambda", 10.0, float, group=_CRITIC, section="critic"),
    K("critic_penalty", "lp", choices=("gp", "lp"), group=_CRITIC, env="CRITIC_PENALTY", section="critic",
      field="penalty",
      help="gp: WGAN-GP, (|grad f| - 1)^2 (Gulrajani et al. 2017); lp: one-sided WGAN-LP, max(0, |grad f| - 1)^2 "
           "(Petzka et al. 2018), so a critic may go flat where the distributions agree; weight --gp-lambda. "
           "Default lp: as accurate on a known W1, a ~4x smaller push into a student already on the teacher's "
           "distribution (tests/objectives/test_estimators.py)"),
    K("critic_pairing", "paired", choices=("paired", "unpaired"), group=_CRITIC, env="CRITIC_PAIRING",
      section="critic", field="pairing",
      help="paired: each critic step compares teacher and student states at the same sampled positions; "
           "unpaired: at disjoint halves of the positions (only the distributions can match)"),
    K("critic_samples", 2048, int, help="token positions per step the critics see (subsampled)", group=_CRITIC,
      section="critic", field="max_samples", check=at_least(1)),
    # -------------------------------------------------------------------- instruction data, MiniLLM
    K("select_by", "loss", choices=("loss", "rougeL"), group=_INSTR, env="SELECT_BY", section="select",
      help="best/ by lowest validation loss, or by highest ROUGE-L on --val-prompts prompts"),
    K("val_prompts", 32, int, help="validation prompts scored for --select-by rougeL", group=_INSTR,
      section="select", check=at_least(1)),
    K("max_new_tokens", 128, int, help="response tokens generated per prompt", group=_INSTR, section="select",
      check=at_least(1)),
    K("max_prompt_len", 256, int, help="prompt tokens kept (the last ones)", group=_INSTR, section="select",
      check=at_least(1)),
    K("mix_alpha", 0.2, float, group=_INSTR, section="minillm", check=between(0, 1, high_open=True),
      help="MiniLLM teacher-mixed sampling: draw from a*teacher + (1-a)*student (0.2 in the MiniLLM paper)"),
    K("pt_weight", 1.0, float, help="MiniLLM: weight of the LM (pretraining) term", group=_INSTR,
      section="minillm", check=at_least(0)),
    K("pt_data_dir", help="MiniLLM: data dir of the LM term (default --data-dir, prompts masked)", group=_INSTR,
      section="minillm"),
    K("no_length_norm", False, switch=True, group=_INSTR, section="minillm", field="length_norm", to_config=_not,
      help="MiniLLM: sum future rewards instead of averaging them (the paper's ablation)"),
    # -------------------------------------------------------------------------- logging, checkpoints
    K("log_interval", 10, int, group=_LOG, env="LOG_INTERVAL", section="log", check=at_least(1)),
    K("grad_share_interval", None, int, group=_LOG, env="GRAD_SHARE_INTERVAL", section="log", check=at_least(0),
      help="every N steps (at the first micro-batch of each log interval by default: N = --log-interval) log "
           "grad_norm/<term> and grad_share/<term> of each weighted term's gradient over the student's "
           "parameters; 0 = off"),
    K("eval_interval", 200, int, group=_LOG, env="EVAL_INTERVAL", section="log", check=at_least(1)),
    K("eval_iters", 20, int, help="validation batches per evaluation", group=_LOG, section="log",
      check=at_least(1)),
    K("save_interval", 500, int, group=_LOG, env="SAVE_INTERVAL", section="log", check=at_least(1)),
    K("keep_checkpoints", 2, int, group=_LOG, section="log", check=at_least(1)),
    K("save_every_minutes", 10.0, float, group=_LOG, env="SAVE_EVERY_MINUTES", section="log", check=at_least(0),
      help="also save a checkpoint when this many minutes passed since the last save (bounds what a hard kill "
           "loses; SIGTERM/Ctrl-C save anyway); 0 = off"),
    K("no_tensorboard", False, switch=True, group=_LOG, section="log", field="tensorboard", to_config=_not),
    K("no_progress", False, switch=True, help="plain log lines instead of a bar", group=_LOG, section="log",
      field="progress", to_config=_not),
    K("verbose", False, switch=True, group=_LOG, env="VERBOSE", section="log",
      help="let the libraries talk too: DeepSpeed's launcher and accelerator lines, transformers' and the hub's "
           "progress bars and info logs (off by default: they break the progress bar)"),
    # ----------------------------------------------------- where to run (a study keeps these from its caller)
    K("launcher", "deepspeed", choices=("deepspeed", "torchrun"), group=WHERE, env="LAUNCHER", section="optim",
      help="deepspeed engine, or plain PyTorch DDP with autocast (torchrun)"),
    K("num_gpus", group=WHERE, env="NUM_GPUS", flag=False,
      help="ranks per node: all visible GPUs by default; with none, CPU ranks (1 unless set)"),
    K("nnodes", group=WHERE, env="NNODES", flag=False, help="nodes (torchrun; default 1)"),
    K("node_rank", group=WHERE, env="NODE_RANK", flag=False, help="this node's rank (torchrun, or NO_SSH=1)"),
    K("hostfile", group=WHERE, env="HOSTFILE", flag=False, help="DeepSpeed hostfile: 'host slots=N' per node"),
    K("no_ssh", group=WHERE, env="NO_SSH", flag=False,
      help="1: start the same command on every node with its NODE_RANK (no passwordless ssh)"),
    K("master_addr", group=WHERE, env="MASTER_ADDR", flag=False, help="rendezvous host (default 127.0.0.1)"),
    K("master_port", group=WHERE, env="MASTER_PORT", flag=False, help="rendezvous port (default 29500)"),
    # ------------------------------------------------------------------- read by the launcher itself
    K("train_script", group="launcher", env="TRAIN_SCRIPT", flag=False,
      help="the entry the launcher starts (default Code/train_related.py; MiniLLM: Code/train_minillm.py)"),
    K("skip_check", group="launcher", env="SKIP_CHECK", flag=False, help="1: skip the --check pre-flight"),
    K("check_world_size", group="launcher", env="CHECK_WORLD_SIZE", flag=False,
      help="ranks the pre-flight checks for (set by the launcher: NUM_GPUS per node x NNODES, or auto)"),
    K("ds_accelerator", group=WHERE, env="DS_ACCELERATOR", flag=False,
      help="DeepSpeed's own accelerator choice; with no GPU (and no VERBOSE=1) the launcher sets cpu, so DeepSpeed "
           "does not warn in every process it starts that it fell back to the CPU"),
    K("distill_launch_script", group="launcher", env="DISTILL_LAUNCH_SCRIPT", flag=False,
      help="the launcher script a stopped run's resume hint names (set by the launcher: the script it ran as)"),
])

# Every variable the training launchers read; those that only say where to run.
LAUNCHER_VARS: tuple[str, ...] = TRAINING.env_vars()
WHERE_VARS: frozenset[str] = frozenset(k.env for k in TRAINING if k.env and k.group == WHERE)
