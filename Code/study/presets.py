"""What the study runs: the methods compared and the two presets (`cpu`, `gpu`), as plain data.

A method is a launcher plus the environment that picks its loss; every method of a preset gets the same
student initialization (teacher blocks `student_layers`), token budget (`train` flags) and seeds. A family
is one distillation term beside the same LM term, tuned over the term's weight: its grid points are methods
named `<family>_w<weight>`. The driver (`driver.py`) turns this into commands; nothing here runs anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Method:
    name: str
    launcher: str          # repo-relative script; falls back to Code/launch_common.sh when missing
    env: dict[str, str]    # LOSS / PRESET (always explicit, so the fallback runs the same recipe)
    label: str             # what the report calls it


# The generic launcher is used where the named one would add a preset (mse_stu_base.sh defaults to seed_mse):
# the pure comparisons (`mse`, `wd`) must carry no preset settings.
GENERIC = "Code/launch_common.sh"
# The study's stages, in the order they run (the report and the README follow it)
STAGES = ("tune", "test", "calibration", "budget")

METHODS: dict[str, Method] = {m.name: m for m in (
    Method("lm", "scripts/baseline_lm.sh", {"LOSS": "lm"}, "LM only (no distillation)"),
    Method("kd", "scripts/logit_kd/kd.sh", {"LOSS": "kd"}, "logit KD (forward KL)"),
    Method("mse", GENERIC, {"LOSS": "mse"}, "hidden-state MSE"),
    Method("wd", GENERIC, {"LOSS": "wd"}, "Wasserstein critics (WGAN-GP)"),
    Method("swd", "scripts/hidden/swd.sh", {"LOSS": "swd"}, "sliced Wasserstein (no critic)"),
    Method("seed_mse", "Code/mse_stu_base.sh", {"PRESET": "seed_mse"}, "seed preset MSE+KD+LM"),
    Method("seed_wd", "Code/wd_stu_base.sh", {"PRESET": "seed_wd"}, "seed preset WD+KD+LM"),
    Method("distilgpt2", "scripts/distilgpt2/train.sh", {"PRESET": "distilgpt2"}, "DistilGPT2 (KD+LM+cos)"),
)}




@dataclass(frozen=True)
class Family:
    """One distillation term beside the LM term (weight 0.5), tuned over the term's weight on validation PPL
    (a tuning seed that is no test seed); the test stage runs it at its validation-best weight."""
    name: str
    launcher: str
    term: str                  # the distillation term with its options: LOSS is f"{term}+lm"
    weights: tuple[str, ...]   # the term's weight grid
    kind: str                  # logit | paired (per token) | critic | critic-free (distribution, no critic)
    label: str
    env: dict[str, str] = field(default_factory=dict)

    def method(self, weight: str) -> Method:
        return Method(f"{self.name}_w{weight}", self.launcher,
                      {"LOSS": f"{self.term}+lm", "WEIGHTS": f"{weight},0.5", **self.env},
                      f"{self.label}, weight {weight}")


# Grids: 4 weights ~2.5-3x apart around the setting each term was first run at (kd, mse: 0.5 beside LM's 0.5;
# the critic's unweighted gradient at init is ~5x LM's, hence its lower grid; the critic-free distribution
# terms, in the critic's standardised units, span 0.1-3).
CRITIC_GRID = ("0.02", "0.05", "0.12", "0.3")
WIDE_GRID = ("0.1", "0.3", "1", "3")
SINKHORN_512 = "sinkhorn_max_samples=512"
FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("kd_lm", "scripts/logit_kd/kd.sh", "kd", ("0.25", "0.5", "1", "2"), "logit", "logit KD + LM"),
    Family("mse_lm", GENERIC, "mse", ("0.25", "0.5", "1.25", "3"), "paired", "hidden-state MSE + LM"),
    # the same positions on both sides: measured MSE-like (value ~ MSE/2), hence twice MSE's grid. Every
    # Sinkhorn term sees 512 positions per side, the critics' sample (--critic-samples 512); at the default
    # 1024 a paired run took 5x an MSE run here (its cost is quadratic in the positions)
    Family("sinkhorn_lm", GENERIC, f"sinkhorn[{SINKHORN_512}]", ("0.5", "1", "2.5", "6"), "paired",
           "Sinkhorn (same positions, blur 0.05) + LM"),
    Family("wd_lm", GENERIC, "wd", CRITIC_GRID, "critic", "critic WD, one-sided penalty (LP) + LM",
           {"CRITIC_PENALTY": "lp", "CRITIC_PAIRING": "paired"}),
    Family("wd_unpaired_lm", GENERIC, "wd", CRITIC_GRID, "critic", "critic WD, LP, unpaired + LM",
           {"CRITIC_PENALTY": "lp", "CRITIC_PAIRING": "unpaired"}),
    Family("sinkhorn_unpaired_lm", GENERIC, f"sinkhorn_unpaired[{SINKHORN_512}]", WIDE_GRID, "critic-free",
           "Sinkhorn unpaired (blur 0.05) + LM"),
    # a large blur moves the Sinkhorn divergence toward matching the first moments. Large against the data's
    # own scale: standardised 128-wide states lie ~16 apart, so blur 1.0 read within 0.5% of blur 0.05 (seed
    # 100, weight 0.1: 0.599 vs 0.601) and tuned to the same PPL; blur 10 (eps = 100) is past that scale
    Family("sinkhorn_unpaired_b10_lm", GENERIC, f"sinkhorn_unpaired[sinkhorn_blur=10.0,{SINKHORN_512}]",
           WIDE_GRID, "critic-free", "Sinkhorn unpaired (blur 10) + LM"),
    Family("gauss_w2_lm", GENERIC, "gauss_w2", WIDE_GRID, "critic-free", "Gaussian W2 (closed form) + LM"),
    Family("swd_lm", "scripts/hidden/swd.sh", "swd", WIDE_GRID, "critic-free", "sliced WD + LM"),
)}


def all_methods() -> dict[str, Method]:
    """Every runnable method by name: the fixed ones and every family's grid points."""
    grid = {m.name: m for f in FAMILIES.values() for m in (f.method(w) for w in f.weights)}
    return {**METHODS, **grid}


@dataclass(frozen=True)
class Preset:
    name: str
    # data: a local corpus folder with train.txt/valid.txt/test.txt, else the hub dataset
    corpus: str | None                     # repo-relative default corpus folder (used when present)
    hub_dataset: str                       # data_download.py --dataset when no local corpus is given
    vocab: int | None                      # train a byte-level BPE of this size (None: GPT-2's tokenizer)
    # teacher: a hub name tried first (None: always pretrain here), else pretrained with this config
    hub_teacher: str | None
    teacher_config: str                    # --student-config of scripts/pretrain_teacher.sh
    teacher_train: dict[str, str]          # launcher env of the teacher pretraining
    student_layers: str                    # teacher blocks copied into every student
    train: dict[str, str]                  # launcher env shared by every student run (the token budget)
    train_flags: list[str]                 # extra flags shared by every student run
    method_flags: dict[str, list[str]]     # extra flags of one method (e.g. a layer map that fits)
    eval_flags: list[str]                  # evaluate_.py flags
    # out-of-domain text every run is also scored on (evaluate_.py --ood-text): repo-relative folder of .txt
    # files, used when present (the study's --ood-text / OOD_TEXT overrides it)
    ood_corpus: str | None = None
    seeds: tuple[int, ...] = (1, 2, 3)
    methods: tuple[str, ...] = tuple(METHODS)  # test stage: method or family names (a family: its chosen weight)
    families: tuple[str, ...] = ()             # tuned on validation before the test stage
    tune_seed: int = 100                       # the tuning runs' seed: never a test seed
    tune_eval_flags: tuple[str, ...] = ()      # evaluate_.py flags of a tuning run (validation PPL only)
    budget_steps: int = 0                      # the budget point: steps of its runs (0: none)
    budget_seeds: tuple[int, ...] = ()
    budget_methods: tuple[str, ...] = ()       # names, or "best:<kind>" (the kind's validation-best family)
    budget_train: dict[str, str] = field(default_factory=dict)  # launcher env over `train` for those runs
    jobs: int = 1                          # runs side by side (CPU: one per core, one thread each)
    notes: list[str] = field(default_factory=list)


PRESETS: dict[str, Preset] = {
    # The whole study on a 2-core CPU, offline: a 6-layer, 128-wide teacher pretrained on WikiText-2 with a
    # 4096-token BPE long enough to be clearly better than its students; 2-layer students (teacher blocks 0
    # and 3); 100 steps of 8 x 128 tokens each; 5 seeds (3 cannot take the exact Wilcoxon test below 0.25).
    # Calibrated here (seed 1, test PPL on 32,768 tokens): a 4x128 teacher after 300 steps (the old preset)
    # was barely better than its LM-only student (184 vs 186); 1500 steps gave 4x128 82.5 vs LM-only
    # (blocks 0,2, 100 steps) 94.2 = 1.14x, and 6x128 83.7 vs LM-only (blocks 0,3) 101.2 = 1.21x, KD+LM 95.4.
    # 3000 steps of the 6-layer teacher widen that gap. fp32: this CPU has no bf16 units.
    "cpu": Preset(
        name="cpu",
        corpus="../shared/corpus/wikitext-2",
        hub_dataset="wikitext-2",
        vocab=4096,
        hub_teacher=None,
        teacher_config="n_layer=6,n_embd=128,n_head=4,n_positions=128",
        # two CPU ranks of one thread each: OpenMP threads on a busy 2-core machine spin (measured 5x the
        # CPU time per step of one thread), data-parallel ranks do not. 8 x 2 ranks = 16 sequences a step.
        teacher_train={"MAX_STEPS": "3000", "SEQ_LEN": "128", "MICRO_BATCH": "8", "NUM_GPUS": "2", "LR": "2e-3",
                       "WARMUP_STEPS": "30", "EVAL_INTERVAL": "500", "SAVE_INTERVAL": "500",
                       "LOG_INTERVAL": "10", "PRECISION": "fp32", "ZERO_STAGE": "0", "SEED": "0"},
        student_layers="0,3",
        # gradient shares every 25 steps: a probe step costs about one more step
        train={"MAX_STEPS": "100", "SEQ_LEN": "128", "MICRO_BATCH": "8", "GRAD_ACCUM": "1", "LR": "1e-3",
               "WARMUP_STEPS": "10", "EVAL_INTERVAL": "25", "SAVE_INTERVAL": "50", "LOG_INTERVAL": "5",
               "PRECISION": "fp32", "ZERO_STAGE": "0", "GRAD_SHARE_INTERVAL": "25", "CRITIC_LR": "1e-3"},
        # Critic LR (CRITIC_LR above, so a method's env can change it) = the students' LR (1e-3), not the flag
        # default 1e-4 (tuned for GPT-2 fine-tuning LRs): a critic 10x slower than its student lags, and the
        # student chases its stale gradient. Measured here (wd, seed 1, 100 steps, before the critic fixes):
        # validation PPL 1748 with critic lr 1e-4, 215 with 1e-3 (mse: 200).
        train_flags=["--eval-iters", "4", "--critic-hidden", "128", "--critic-samples", "512",
                     "--no-progress", "--no-tensorboard", "--num-workers", "0"],
        # every hidden-state method on the same layer map, the truncation's own (student 1 <- teacher 1,
        # student 2 <- teacher 6); seed_mse's "uniform" would map student 1 to teacher 3
        method_flags={"seed_mse": ["--layer-map", "1:1,2:6"]},
        eval_flags=["--max-tokens", "32768", "--hidden-tokens", "2048", "--projections", "128",
                    "--tsne-points", "150", "--gen-tokens", "0", "--batch-size", "16", "--no-progress"],
        ood_corpus="../shared/corpus/gutenberg",  # 13 public-domain books: a domain other than Wikipedia
        # 8 test seeds: the exact two-sided Wilcoxon test can then reach p = 0.0078 (5 seeds: never below 0.0625)
        seeds=(1, 2, 3, 4, 5, 6, 7, 8),
        methods=("lm", *FAMILIES),
        families=tuple(FAMILIES),
        tune_eval_flags=("--split", "valid", "--max-tokens", "32768", "--hidden-tokens", "256", "--tsne-points",
                         "0", "--gen-tokens", "0", "--batch-size", "16", "--no-progress"),
        # 10x the steps (1,024,000 tokens): does the ranking hold as training goes on?
        budget_steps=1000,
        budget_seeds=(1, 2, 3),
        budget_methods=("lm", "kd_lm", "mse_lm", "best:critic", "best:critic-free"),
        budget_train={"SAVE_INTERVAL": "250", "GRAD_SHARE_INTERVAL": "100"},
        jobs=2,
        notes=["every family is one distillation term beside the same LM term (weight 0.5), at the weight its "
               "validation PPL chose (tuning seed 100, never a test seed): the same layer map, temperature 1, "
               "no dropout on either side, the same student initialization and token budget"],
    ),
    # GPT-2 124M -> 6-layer student (blocks 0,2,...,10) on WikiText-103, BF16, one or many GPUs (NUM_GPUS).
    "gpu": Preset(
        name="gpu",
        corpus=None,
        hub_dataset="wikitext-103",
        vocab=None,
        hub_teacher="gpt2",
        teacher_config="n_layer=12,n_embd=768,n_head=12",
        teacher_train={"MAX_STEPS": "20000", "SEQ_LEN": "512", "MICRO_BATCH": "16", "LR": "6e-4",
                       "WARMUP_STEPS": "500", "EVAL_INTERVAL": "1000", "SAVE_INTERVAL": "1000",
                       "LOG_INTERVAL": "50", "SEED": "0"},
        student_layers="0,2,4,6,8,10",
        train={"MAX_STEPS": "2000", "SEQ_LEN": "512", "MICRO_BATCH": "8", "GRAD_ACCUM": "4", "LR": "5e-4",
               "WARMUP_STEPS": "100", "EVAL_INTERVAL": "500", "SAVE_INTERVAL": "500", "LOG_INTERVAL": "10",
               "CRITIC_LR": "5e-4", "GRAD_SHARE_INTERVAL": "100"},  # critic LR = the students' LR, as in `cpu`
        train_flags=["--no-progress"],
        methods=("lm", "kd_lm", "mse_lm", "wd_lm", "sinkhorn_unpaired_lm", "gauss_w2_lm", "seed_mse", "seed_wd",
                 "distilgpt2"),
        families=("kd_lm", "mse_lm", "wd_lm", "sinkhorn_unpaired_lm", "gauss_w2_lm"),
        tune_eval_flags=("--split", "valid", "--window", "1024", "--stride", "512", "--tsne-points", "0",
                         "--gen-tokens", "0", "--no-progress"),
        method_flags={},
        eval_flags=["--window", "1024", "--stride", "512", "--no-progress"],
        ood_corpus="../shared/corpus/gutenberg",  # when this checkout has it (else --ood-text / OOD_TEXT)
        jobs=1,
        notes=["distilgpt2 uses the same student (teacher blocks 0,2,4,6,8,10) as every method: its loss "
               "recipe, not its layer pick 0,2,4,7,9,11, so that only the loss differs"],
    ),
}
