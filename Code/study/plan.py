"""The study's plan, from files only: its corpus and data command, the launchers, the out-of-domain text,
each run's state and settings (read through Code.run_folder).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from Code import CODE_DIR as CODE
from Code import REPO
from Code.knobs.training import LAUNCHER_VARS, WHERE_VARS
from Code.run_folder import ARGS, is_trained, read_args, read_eval
from Code.study.presets import FAMILIES, GENERIC, Method, Preset, all_methods

# launcher env -> args.json key: the settings that must match for an existing run to be reused
CHECKED = {"SEED": "seed", "MAX_STEPS": "max_steps", "SEQ_LEN": "seq_len", "MICRO_BATCH": "micro_batch_size",
           "GRAD_ACCUM": "grad_accum", "LR": "lr", "STUDENT_LAYERS": "student_layers", "TEACHER": "teacher",
           "DATA_DIR": "data_dir", "LOSS": "loss", "PRESET": "preset", "WEIGHTS": "weights",
           "CRITIC_PENALTY": "critic_penalty", "CRITIC_PAIRING": "critic_pairing"}
# the conventions evaluate_.py puts out-of-domain text into (--ood-format): a run scored otherwise is re-scored
OOD_CONVENTIONS = "wikitext"


@dataclass(frozen=True)
class Stage:
    """One pass over methods x seeds: `tune` (each family's weight grid, tuning seed, validation PPL),
    `test` (each method at its chosen weight, the test seeds) or `budget` (a few methods at more steps)."""
    name: str
    folder: str                                  # under the study folder
    train: dict[str, str]                        # launcher env over the preset's `train`
    eval_flags: tuple[str, ...]
    ood: bool                                    # also score the out-of-domain text
    env: dict[str, str] = field(default_factory=dict)

    def key(self, method: str, seed: int) -> str:
        """The run's key in study.json (test runs keep the plain `method/seed<k>`)."""
        return f"{method}/seed{seed}" if self.name == "test" else f"{self.name}/{method}/seed{seed}"

    def run_dir(self, root: Path, method: str, seed: int) -> Path:
        return root / self.folder / method / f"seed{seed}"


def stages(preset: Preset, budget_steps: int) -> dict[str, Stage]:
    budget = {**preset.train, **preset.budget_train, "MAX_STEPS": str(budget_steps)}
    return {"tune": Stage("tune", "tune", dict(preset.train), preset.tune_eval_flags, ood=False),
            "test": Stage("test", "runs", dict(preset.train), tuple(preset.eval_flags), ood=True),
            "budget": Stage("budget", "budget", budget, tuple(preset.eval_flags), ood=True)}


def choose_weight(valid_ppl: dict[str, float | None]) -> str | None:
    """The grid weight with the lowest validation PPL (the first on a tie); None while any point is missing."""
    if not valid_ppl or any(v is None for v in valid_ppl.values()):
        return None
    return min(valid_ppl, key=lambda w: valid_ppl[w])


# At most this many weights past a grid's edge: a family whose best weight is its grid's smallest or largest
# gets one more at the same ratio beyond that edge, until the best is inside (the same rule for every family).
MAX_EXTEND = 2


def extended_grid(base: tuple[str, ...], ppl: Callable[[str], float | None], max_extend: int = MAX_EXTEND) -> list[str]:
    """A family's weights in increasing order: its base grid, then while the validation-best weight is at an edge
    (every point so far scored), the next weight past that edge (edge^2 / its neighbour). The last weight may be
    unscored yet: it is the run to do next."""
    grid = sorted(base, key=float)
    for _ in range(max_extend):
        best = choose_weight({w: ppl(w) for w in grid})
        if best is None or len(grid) < 2 or best not in (grid[0], grid[-1]):
            break
        edge, neighbour = (grid[-1], grid[-2]) if best == grid[-1] else (grid[0], grid[1])
        nxt = f"{float(edge) ** 2 / float(neighbour):.3g}"
        if best == grid[-1]:
            grid.append(nxt)
        else:
            grid.insert(0, nxt)
    return grid


def resolve_method(name: str, chosen: dict[str, str | None]) -> Method | None:
    """A method by name; a family name is its grid point at the chosen weight (None: not chosen yet)."""
    if name in FAMILIES:
        weight = chosen.get(name)
        return FAMILIES[name].method(weight) if weight else None
    methods = all_methods()
    if name not in methods:
        raise StudyError(f"unknown method {name!r}: choose a family ({', '.join(FAMILIES)}), a grid point "
                         f"like mse_lm_w3, or a recipe ({', '.join(m for m in methods if m not in all_grid())})")
    return methods[name]


def all_grid() -> set[str]:
    return {f.method(w).name for f in FAMILIES.values() for w in f.weights}


def best_of_kind(kind: str, families: list[str], tuned: dict[str, dict[str, float | None]],
                 chosen: dict[str, str | None]) -> str | None:
    """The family of `kind` whose chosen weight has the lowest validation PPL (budget's `best:<kind>`)."""
    scored = {f: tuned[f][chosen[f]] for f in families
              if FAMILIES[f].kind == kind and chosen.get(f) and tuned.get(f, {}).get(chosen[f]) is not None}
    return min(scored, key=lambda f: scored[f]) if scored else None


def launcher_vars() -> set[str]:
    """The launcher variables a study drops from the caller's environment: every declared one
    (Code/knobs/training.py) except those that say where to run, not what (NUM_GPUS, MASTER_PORT, ...), so a
    stray LOSS=wd or MAX_STEPS in the caller's shell cannot change one method's recipe or budget behind the
    study's back."""
    return set(LAUNCHER_VARS) - WHERE_VARS


class StudyError(ValueError):
    """A study that cannot be run as asked (bad preset, no corpus, a run made with other settings)."""


def corpus_files(preset: Preset, corpus: str | None, files: dict[str, str | None]) -> dict[str, list[str]] | None:
    """Local text files per split, or None (the hub). Explicit files win, then --corpus, then the preset's.
    Splits without files are carved from train by data_download.py."""
    if files.get("train"):
        return {s: [str(Path(p).resolve()) for p in files[s].split(":")] for s in ("train", "valid", "test")
                if files.get(s)}
    folder = Path(corpus) if corpus else (REPO / preset.corpus if preset.corpus else None)
    if folder is None:
        return None
    found = {s: folder / f"{s}.txt" for s in ("train", "valid", "test")}
    if not found["train"].is_file():
        if corpus:  # asked for explicitly: say what is missing
            raise StudyError(f"corpus {folder} has no train.txt: give a folder with train/valid/test.txt "
                             "or TRAIN_FILES=a.txt:b.txt")
        return None
    return {s: [str(p.resolve())] for s, p in found.items() if p.is_file()}


def data_command(preset: Preset, out_dir: Path, files: dict[str, list[str]] | None) -> list[str]:
    cmd = [sys.executable, str(CODE / "data_download.py"), "--out-dir", str(out_dir)]
    if files:
        cmd += ["--dataset", "text"]
        for split, paths in files.items():
            cmd += [f"--{split}", *paths]
    else:
        cmd += ["--dataset", preset.hub_dataset]
    if preset.vocab:
        cmd += ["--train-tokenizer", str(preset.vocab)]
    return cmd


def launcher_path(name: str) -> Path:
    """The named launcher, or the generic body when another engineer's script is not there (same env)."""
    path = REPO / name
    return path if path.is_file() else REPO / GENERIC


def ood_text(preset: Preset, given: str | None) -> list[str]:
    """The out-of-domain text every run is scored on (evaluate_.py --ood-text), as absolute paths: the
    ':'-separated files/folders given (OOD_TEXT / --ood-text; `none` turns it off), else the preset's
    folder when this checkout has it, else nothing."""
    if given and given.strip():
        if given.strip().lower() in ("none", "off", "0"):
            return []
        paths = [Path(p).expanduser().resolve() for p in given.split(":") if p.strip()]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise StudyError(f"out-of-domain text {', '.join(missing)} not found: OOD_TEXT / --ood-text takes "
                             "':'-separated .txt files or folders of them (or none)")
        return [str(p) for p in paths]
    folder = (REPO / preset.ood_corpus).resolve() if preset.ood_corpus else None
    return [str(folder)] if folder and folder.is_dir() else []


def ood_file_list(paths: list[str]) -> list[str]:
    """The files evaluate_.py will read for --ood-text PATHS (its own resolver), resolved."""
    from Code.evaluation.texts import ood_files

    return [str(p.resolve()) for p in ood_files(paths)] if paths else []


def has_ood(metrics: dict, files: list[str]) -> bool:
    """The evaluation (eval/metrics.json) holds the out-of-domain PPL of exactly these files."""
    ood = metrics.get("ood", {})
    return (metrics.get("student", {}).get("ood_ppl") is not None and sorted(ood.get("files", [])) == sorted(files)
            and ood.get("conventions") == OOD_CONVENTIONS)


def run_state(run_dir: Path, ood_files: list[str] | None = None) -> str:
    """done | eval (trained, not evaluated, or evaluated without the out-of-domain PPL of `ood_files`) |
    resume (started) | train (nothing yet)."""
    if is_trained(run_dir):
        metrics = read_eval(run_dir)
        if metrics is None:
            return "eval"
        return "eval" if ood_files and not has_ood(metrics, ood_files) else "done"
    return "resume" if (run_dir / ARGS).is_file() else "train"


def student_env(preset: Preset, method: Method, seed: int, run_dir: Path, teacher: str, data_dir: Path,
                train: dict[str, str] | None = None) -> dict:
    return {**(preset.train if train is None else train), **method.env, "SEED": str(seed), "TEACHER": teacher,
            "DATA_DIR": str(data_dir), "OUT_DIR": str(run_dir), "STUDENT_LAYERS": preset.student_layers}


def check_settings(run_dir: Path, env: dict[str, str]) -> None:
    """An existing run made with other settings must not be silently mixed into this study."""
    have = read_args(run_dir)
    for key, name in CHECKED.items():
        if key not in env or name not in have:
            continue
        want, got = env[key], have[name]
        if name in ("teacher", "data_dir") and Path(str(got)).exists():
            same = Path(str(got)).resolve() == Path(want).resolve()
        elif isinstance(got, int | float) and not isinstance(got, bool):
            same = float(got) == float(want)
        else:
            same = str(got) == want
        if not same:
            raise StudyError(f"{run_dir} was made with {name}={got!r}, this study asks {want!r}: delete that run "
                             "or use another STUDY_DIR")
