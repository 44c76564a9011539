"""Run the whole distillation study: data, teacher, every method x seed through the launchers, evaluation.

    python -m Code.study --preset cpu                 # usually through scripts/run_study.sh cpu
    python -m Code.study --preset gpu --seeds 1,2,3 --dry-run

Layout of the study folder (default `study/<preset>`): `data/` (indexed corpus), `teacher/` (its
pretraining run, when the teacher is trained here), `runs/<method>/seed<k>/` (training run + `eval/`),
`logs/` (each command's output) and `study.json` (the plan, hardware, commit and wall times). Running it
again reuses what is finished: a run is finished when `final/` and `eval/metrics.json` exist (and, when
out-of-domain text is configured, that evaluation holds the out-of-domain PPL of those files); a run with
`args.json` but no `final/` resumes (`RESUME=1`); a trained run lacking that evaluation is only evaluated.
Never imports the training loop: every step is a command, as a user would type it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

from Code import CODE_DIR as CODE
from Code import REPO
from Code.cli import cli_main
from Code.knobs.training import LAUNCHER_VARS, WHERE_VARS
from Code.study.presets import GENERIC, METHODS, PRESETS, Method, Preset
from Code.utils import atomic_write_text

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


# ------------------------------------------------------------------------------------------ the plan
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


def has_ood(metrics_path: Path, files: list[str]) -> bool:
    """The evaluation holds the out-of-domain PPL of exactly these files."""
    try:
        metrics = json.loads(metrics_path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return (metrics.get("student", {}).get("ood_ppl") is not None
            and sorted(metrics.get("ood", {}).get("files", [])) == sorted(files))


def run_state(run_dir: Path, ood_files: list[str] | None = None) -> str:
    """done | eval (trained, not evaluated, or evaluated without the out-of-domain PPL of `ood_files`) |
    resume (started) | train (nothing yet)."""
    trained = (run_dir / "final" / "config.json").is_file()
    if trained:
        metrics = run_dir / "eval" / "metrics.json"
        if not metrics.is_file():
            return "eval"
        return "eval" if ood_files and not has_ood(metrics, ood_files) else "done"
    return "resume" if (run_dir / "args.json").is_file() else "train"


def student_env(preset: Preset, method: Method, seed: int, run_dir: Path, teacher: str, data_dir: Path) -> dict:
    return {**preset.train, **method.env, "SEED": str(seed), "TEACHER": teacher, "DATA_DIR": str(data_dir),
            "OUT_DIR": str(run_dir), "STUDENT_LAYERS": preset.student_layers}


def check_settings(run_dir: Path, env: dict[str, str]) -> None:
    """An existing run made with other settings must not be silently mixed into this study."""
    path = run_dir / "args.json"
    if not path.is_file():
        return
    have = json.loads(path.read_text())
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


# ------------------------------------------------------------------------------------------ running
def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def hardware() -> dict:
    info = {"machine": platform.machine(), "system": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(), "cpu_cores": os.cpu_count(), "cpu": platform.processor() or None}
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        kb = int(meminfo.read_text().split("MemTotal:", 1)[1].split()[0])
        info["memory_gb"] = round(kb / 2**20, 1)
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20)
        info["gpus"] = [g.strip() for g in out.stdout.splitlines() if g.strip()] if out.returncode == 0 else []
    except (OSError, subprocess.TimeoutExpired):
        info["gpus"] = []
    return info


def git_state() -> dict:
    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""
    return {"commit": git("rev-parse", "HEAD") or None,
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


class Study:
    def __init__(self, preset: Preset, root: Path, dry_run: bool, jobs: int, extra_env: dict[str, str]) -> None:
        self.preset, self.root, self.dry_run, self.jobs = preset, root, dry_run, jobs
        self.threads = max(1, (os.cpu_count() or 1) // jobs)
        self.extra_env = extra_env
        self.ood: list[str] = []        # evaluate_.py --ood-text arguments ([]: no out-of-domain pass)
        self.ood_files: list[str] = []  # the files they name, as evaluate_.py records them
        self.scrub = launcher_vars()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.t0 = time.perf_counter()
        path = root / "study.json"
        self.manifest = json.loads(path.read_text()) if path.is_file() else {}
        self.manifest.setdefault("runs", {})
        self.manifest.setdefault("invocations", [])
        self.invocation = {"started": dt.datetime.now().astimezone().isoformat(timespec="seconds"), "stages": {},
                           "load_average_start": _load(),
                           "trained": [], "resumed": [], "evaluated": [], "reused": [], "failed": []}

    def say(self, text: str) -> None:
        m, s = divmod(int(time.perf_counter() - self.t0), 60)
        print(f"[{m:02d}:{s:02d}] {text}", flush=True)

    def save(self) -> None:
        if self.dry_run:
            return
        with self.lock:
            invocations = [*self.manifest["invocations"], {**self.invocation, "cpu_s": _cpu_seconds(),
                                                          "wall_s": round(time.perf_counter() - self.t0, 1)}]
            # not sorted: the order of "methods" is the order the report shows them in
            text = json.dumps({**self.manifest, "invocations": invocations}, indent=2) + "\n"
            atomic_write_text(self.root / "study.json", text)

    def execute(self, cmd: list[str], env: dict[str, str], log: Path, what: str) -> tuple[bool, float]:
        """Run one command, its output to `log`; (succeeded, wall seconds)."""
        shown = " ".join(f"{k}={v}" for k, v in env.items()) + " " + " ".join(cmd)
        if self.dry_run:
            print(shown.replace(str(REPO) + "/", ""))
            return True, 0.0
        inherited = {k: v for k, v in os.environ.items() if k not in self.scrub}
        full = {**inherited, "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1",
                "OMP_NUM_THREADS": str(self.threads), "MASTER_PORT": free_port(), **self.extra_env, **env}
        log.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        with log.open("a") as handle:
            handle.write(f"\n$ {shown}\n")
            handle.flush()
            code = subprocess.run(cmd, env=full, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT).returncode
        wall = time.perf_counter() - start
        if code != 0:
            tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-1:] or ["(no output)"]
            self.say(f"{what}: FAILED (exit {code}, {wall:.0f} s): {tail[0][:300]} -- see {log}")
        return code == 0, wall

    # -------------------------------------------------------------------------------------- stages
    def data(self, data_dir: str | None, corpus: str | None, files: dict[str, str | None]) -> Path:
        if data_dir:
            path = Path(data_dir).resolve()
            if not (path / "meta.json").is_file() and not self.dry_run:
                raise StudyError(f"DATA_DIR {path} has no meta.json: build it with python Code/data_download.py")
            self.manifest["data"] = {"dir": str(path), "source": "given"}
            return path
        out = self.root / "data"
        source = corpus_files(self.preset, corpus, files)
        origin = "local files" if source else f"hub {self.preset.hub_dataset}"
        self.manifest["data"] = {"dir": str(out), "source": origin, "files": source, "vocab": self.preset.vocab}
        if (out / "meta.json").is_file():
            self.say(f"data: reusing {out}")
            return out
        self.say(f"data: building {out} from {'local files' if source else 'the hub'}")
        ok, wall = self.execute(data_command(self.preset, out, source), {}, self.root / "logs" / "data.log", "data")
        self.invocation["stages"]["data_s"] = round(wall, 1)
        if not ok:
            raise StudyError(f"data preparation failed: see {self.root / 'logs' / 'data.log'}")
        return out

    def teacher(self, given: str | None, data_dir: Path) -> str:
        if given:
            self.manifest["teacher"] = {"source": "given", "path": given}
            return str(Path(given).resolve()) if Path(given).exists() else given
        hub = self.preset.hub_teacher
        if hub and (self.dry_run or _hub_has(hub)):
            self.manifest["teacher"] = {"source": "hub", "path": hub}
            self.say(f"teacher: {hub} from the hub")
            return hub
        run = self.root / "teacher"
        final = run / "final"
        self.manifest["teacher"] = {"source": "pretrained here", "path": str(final), "run": str(run),
                                    "config": self.preset.teacher_config}
        state = run_state(run)
        if state in ("done", "eval"):
            self.say(f"teacher: reusing {final}")
            return str(final)
        self.say(f"teacher: pretraining {self.preset.teacher_config} ({state})")
        env = {**self.preset.teacher_train, "LOSS": "lm", "STUDENT_CONFIG": self.preset.teacher_config,
               "DATA_DIR": str(data_dir), "OUT_DIR": str(run)}
        if state == "resume":
            env["RESUME"] = "1"
        flags = ["--no-progress", "--no-tensorboard", "--num-workers", "0"] if self.preset.name == "cpu" else \
            ["--no-progress"]
        script = launcher_path("scripts/pretrain_teacher.sh")
        if script.name == "launch_common.sh":
            flags.insert(0, "--no-teacher")
        ok, wall = self.execute(["bash", str(script), *flags], env, self.root / "logs" / "teacher.log", "teacher")
        self.invocation["stages"]["teacher_s"] = round(wall, 1)
        if not ok:
            raise StudyError(f"teacher pretraining failed: see {self.root / 'logs' / 'teacher.log'}")
        return str(final)

    def note(self, key: str, lists: tuple[str, ...] = (), **fields) -> None:
        """Record a run's fields and events; worker threads share the manifest, so under the lock."""
        with self.lock:
            self.manifest["runs"].setdefault(key, {}).update(fields)
            for name in lists:
                self.invocation[name].append(key)

    def one_run(self, method: Method, seed: int, teacher: str, data_dir: Path) -> None:
        if self.stop.is_set():
            return
        key = f"{method.name}/seed{seed}"
        run_dir = self.root / "runs" / method.name / f"seed{seed}"
        env = student_env(self.preset, method, seed, run_dir, teacher, data_dir)
        state = run_state(run_dir, self.ood_files)
        self.note(key, dir=str(run_dir.relative_to(self.root)), method=method.name, seed=seed)
        logs = self.root / "logs"
        if state == "done":
            self.note(key, ("reused",))
            self.say(f"{key}: finished before, reused")
            return
        if state == "eval" and (run_dir / "eval" / "metrics.json").is_file():
            self.say(f"{key}: trained and evaluated before, without the out-of-domain PPL of these files: "
                     "evaluating again (not retraining)")
        if state in ("train", "resume"):
            if state == "resume":
                env["RESUME"] = "1"
            self.say(f"{key}: {'resuming' if state == 'resume' else 'training'}")
            cmd = ["bash", str(launcher_path(method.launcher)), *self.preset.train_flags,
                   *self.preset.method_flags.get(method.name, [])]
            ok, wall = self.execute(cmd, env, logs / f"{method.name}_seed{seed}.train.log", f"{key} training")
            spent = self.manifest["runs"][key].get("train_wall_s", 0.0) + wall  # a resumed run adds up
            self.note(key, ("resumed" if state == "resume" else "trained",), train_wall_s=round(spent, 1))
            if not ok:
                self.note(key, ("failed",), status="failed training")
                self.save()
                return
        if self.stop.is_set():
            return
        cmd = [sys.executable, str(CODE / "evaluate_.py"), "--ckpt", str(run_dir / "final"), "--out-dir",
               str(run_dir / "eval"), "--seed", "0", "--threads", str(self.threads), *self.preset.eval_flags,
               "--overwrite"]  # a run reaches here to be (re-)evaluated: its earlier eval/ is replaced on purpose
        if self.ood:
            cmd += ["--ood-text", *self.ood]
        ok, wall = self.execute(cmd, {}, logs / f"{method.name}_seed{seed}.eval.log", f"{key} evaluation")
        self.note(key, ("evaluated" if ok else "failed",), eval_wall_s=round(wall, 1),
                  status="done" if ok else "failed evaluation")
        if ok and not self.dry_run:
            train_s = self.manifest["runs"][key].get("train_wall_s", 0)
            self.say(f"{key}: done (train {train_s:.0f} s, eval {wall:.0f} s)")
        self.save()

    def runs(self, methods: list[Method], seeds: list[int], teacher: str, data_dir: Path) -> None:
        # seed-major order: a study cut short still has every method at its first seeds
        todo = [(m, s) for s in seeds for m in methods]
        for m, s in todo:  # refuse a mixed-up study before any work starts
            run_dir = self.root / "runs" / m.name / f"seed{s}"
            check_settings(run_dir, student_env(self.preset, m, s, run_dir, teacher, data_dir))
        if self.jobs <= 1 or self.dry_run:
            for m, s in todo:
                self.one_run(m, s, teacher, data_dir)
            return
        pool = ThreadPoolExecutor(self.jobs)
        try:
            for future in [pool.submit(self.one_run, m, s, teacher, data_dir) for m, s in todo]:
                future.result()
        except BaseException:
            # Ctrl-C (or a crash): start nothing new; the running children got the same SIGINT
            self.stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown()


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and all its finished descendants: unlike wall time, the
    same on a busy machine as on an idle one (up to contention overheads)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return round(own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime, 1)


def _load() -> list[float] | None:
    """1, 5 and 15 minute load averages: timings on a shared machine mean little without them."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _hub_has(name: str) -> bool:
    """The hub teacher can be had: cached locally, or the hub answers."""
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(name, "config.json"), str):
            return True
    except ImportError:
        pass
    from Code.hub import hub_reachable

    return hub_reachable()


# ------------------------------------------------------------------------------------------ CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    p.add_argument("--study-dir", help="study folder (default study/<preset>)")
    p.add_argument("--methods", help=f"comma list (default all: {','.join(METHODS)})")
    p.add_argument("--seeds", help="comma list of seeds, or a count N meaning 1..N (default 1,2,3)")
    p.add_argument("--jobs", type=int, help="runs side by side (default: the preset's)")
    p.add_argument("--data-dir", help="an existing indexed data folder (skips data preparation)")
    p.add_argument("--corpus", help="folder with train.txt, valid.txt, test.txt "
                   "(cpu default ../shared/corpus/wikitext-2)")
    for split in ("train", "valid", "test"):
        p.add_argument(f"--{split}-files", help=f"{split} text files, ':'-separated")
    p.add_argument("--teacher", help="a teacher folder or hub name (skips pretraining)")
    p.add_argument("--ood-text", default=os.environ.get("OOD_TEXT"),
                   help="out-of-domain text every run is also scored on: ':'-separated .txt files or folders, "
                        "or none (default: $OOD_TEXT, else ../shared/corpus/gutenberg when present)")
    p.add_argument("--max-steps", type=int, help="optimizer steps of every student run (default: the preset's)")
    p.add_argument("--teacher-steps", type=int, help="optimizer steps of the teacher pretraining (preset's)")
    p.add_argument("--report-dir", help="where make_report.py writes (default Individual-Final-Project-Report[/gpu])")
    p.add_argument("--no-report", action="store_true", help="do not run make_report.py at the end")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    return p


def parse_seeds(text: str | None, default: tuple[int, ...]) -> list[int]:
    if not text:
        return list(default)
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise StudyError(f"--seeds {text!r}: give a count like 3 or a list like 1,2,3") from None
    if len(values) == 1 and "," not in text:
        values = list(range(1, values[0] + 1))
    if not values:
        raise StudyError("--seeds is empty: give a count like 3 or a list like 1,2,3")
    return values


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return cli_main(lambda: run_study(args), (ValueError, FileNotFoundError),
                    "run the same command again to resume (finished runs are reused)")


def run_study(args) -> int:
    """Data, teacher, every method x seed, evaluation, then the report; 0 when every run finished."""
    preset = PRESETS[args.preset]
    if args.max_steps:
        preset = replace(preset, train={**preset.train, "MAX_STEPS": str(args.max_steps)})
    if args.teacher_steps:
        preset = replace(preset, teacher_train={**preset.teacher_train, "MAX_STEPS": str(args.teacher_steps)})
    names = [m.strip() for m in (args.methods or ",".join(preset.methods)).split(",") if m.strip()]
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise StudyError(f"unknown methods {unknown}: choose from {','.join(METHODS)}")
    seeds = parse_seeds(args.seeds, preset.seeds)
    root = Path(args.study_dir or REPO / "study" / preset.name).resolve()
    extra = {"HF_HUB_OFFLINE": "1"} if preset.name == "cpu" and "HF_HUB_OFFLINE" not in os.environ else {}
    study = Study(preset, root, args.dry_run, max(1, args.jobs or preset.jobs), extra)
    study.ood = ood_text(preset, args.ood_text)
    study.ood_files = ood_file_list(study.ood)
    study.manifest.update(preset=preset.name, preset_config=asdict(preset), seeds=seeds, methods={
        n: {"label": METHODS[n].label, "launcher": str(launcher_path(METHODS[n].launcher).relative_to(REPO)),
            "env": METHODS[n].env, "flags": preset.method_flags.get(n, [])} for n in names},
        hardware=hardware(), git=git_state(), jobs=study.jobs, threads_per_job=study.threads,
        ood={"text": study.ood, "files": study.ood_files} if study.ood else None)
    study.say(f"study {preset.name}: {len(names)} methods x {len(seeds)} seeds in {root} "
              f"({study.jobs} at a time, {study.threads} thread(s) each)")
    study.say(f"out-of-domain text: {len(study.ood_files)} file(s) from {', '.join(study.ood)}" if study.ood else
              "out-of-domain text: none (set OOD_TEXT or --ood-text to score one)")
    files = {"train": args.train_files, "valid": args.valid_files, "test": args.test_files}
    data_dir = study.data(args.data_dir, args.corpus, files)
    teacher = study.teacher(args.teacher, data_dir)
    study.save()
    study.runs([METHODS[n] for n in names], seeds, teacher, data_dir)
    failed = list(study.invocation["failed"])
    study.invocation["finished"] = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    study.invocation["load_average_end"] = _load()
    study.save()
    study.say(f"runs: {len(study.invocation['reused'])} reused, {len(study.invocation['trained'])} trained, "
              f"{len(study.invocation['resumed'])} resumed, {len(study.invocation['evaluated'])} evaluated, "
              f"{len(failed)} failed")
    if not args.no_report and not args.dry_run:
        out = args.report_dir or str(REPO / "Individual-Final-Project-Report" / ("" if preset.name == "cpu" else
                                                                              preset.name))
        ok, _ = study.execute([sys.executable, str(CODE / "make_report.py"), "--study-dir", str(root),
                               "--out-dir", out], {}, root / "logs" / "report.log", "report")
        study.say(f"report: {out}/report.md" if ok else "report: FAILED")
        if not ok:
            return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
