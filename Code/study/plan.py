"""The study's plan, from files only: its corpus and data command, the launchers, the out-of-domain text,
each run's state and settings (read through Code.run_folder).
"""

from __future__ import annotations

import sys
from pathlib import Path

from Code import CODE_DIR as CODE
from Code import REPO
from Code.knobs.training import LAUNCHER_VARS, WHERE_VARS
from Code.run_folder import ARGS, is_trained, read_args, read_eval
from Code.study.presets import GENERIC, Method, Preset

# launcher env -> args.json key: the settings that must match for an existing run to be reused
CHECKED = {"SEED": "seed", "MAX_STEPS": "max_steps", "SEQ_LEN": "seq_len", "MICRO_BATCH": "micro_batch_size",
           "GRAD_ACCUM": "grad_accum", "LR": "lr", "STUDENT_LAYERS": "student_layers", "TEACHER": "teacher",
           "DATA_DIR": "data_dir", "LOSS": "loss", "PRESET": "preset"}


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
    from Code.evaluation.inputs import ood_files

    return [str(p.resolve()) for p in ood_files(paths)] if paths else []


def has_ood(metrics: dict, files: list[str]) -> bool:
    """The evaluation (eval/metrics.json) holds the out-of-domain PPL of exactly these files."""
    return (metrics.get("student", {}).get("ood_ppl") is not None
            and sorted(metrics.get("ood", {}).get("files", [])) == sorted(files))


def run_state(run_dir: Path, ood_files: list[str] | None = None) -> str:
    """done | eval (trained, not evaluated, or evaluated without the out-of-domain PPL of `ood_files`) |
    resume (started) | train (nothing yet)."""
    if is_trained(run_dir):
        metrics = read_eval(run_dir)
        if metrics is None:
            return "eval"
        return "eval" if ood_files and not has_ood(metrics, ood_files) else "done"
    return "resume" if (run_dir / ARGS).is_file() else "train"


def student_env(preset: Preset, method: Method, seed: int, run_dir: Path, teacher: str, data_dir: Path) -> dict:
    return {**preset.train, **method.env, "SEED": str(seed), "TEACHER": teacher, "DATA_DIR": str(data_dir),
            "OUT_DIR": str(run_dir), "STUDENT_LAYERS": preset.student_layers}


def check_settings(run_dir: Path, env: dict[str, str]) -> None:
    """An existing run made with other settings must not be silently mixed into this study."""
    have = read_args(run_dir)
    for key, field in CHECKED.items():
        if key not in env or field not in have:
            continue
        want, got = env[key], have[field]
        if field in ("teacher", "data_dir") and Path(str(got)).exists():
            same = Path(str(got)).resolve() == Path(want).resolve()
        elif isinstance(got, int | float) and not isinstance(got, bool):
            same = float(got) == float(want)
        else:
            same = str(got) == want
        if not same:
            raise StudyError(f"{run_dir} was made with {field}={got!r}, this study asks {want!r}: delete that run "
                             "or use another STUDY_DIR")
