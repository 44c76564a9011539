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

import datetime as dt
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from Code import CODE_DIR as CODE
from Code import REPO
from Code.data_pipeline.data_layout import META
from Code.processes import child_env, cpu_seconds, free_port, last_line, load_average, run_logged
from Code.run_folder import is_trained, read_distill_info, read_eval
from Code.study.plan import (
    MAX_EXTEND,
    OOD_CONVENTIONS,
    Stage,
    StudyError,
    best_of_kind,
    check_settings,
    choose_weight,
    corpus_files,
    data_command,
    extended_grid,
    has_ood,
    launcher_path,
    launcher_vars,
    resolve_method,
    run_state,
    student_env,
)
from Code.study.presets import FAMILIES, METHODS, Method, Preset
from Code.utils import atomic_write_text


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
        self.running_stage: tuple[str, float] | None = None  # (key, start): saved as it goes, so a kill keeps it
        self.invocation = {"started": dt.datetime.now().astimezone().isoformat(timespec="seconds"), "stages": {},
                           "load_average_start": load_average(),
                           "trained": [], "resumed": [], "evaluated": [], "reused": [], "failed": []}

    def say(self, text: str) -> None:
        m, s = divmod(int(time.perf_counter() - self.t0), 60)
        print(f"[{m:02d}:{s:02d}] {text}", flush=True)

    def save(self) -> None:
        if self.dry_run:
            return
        with self.lock:
            stages = dict(self.invocation["stages"])
            if self.running_stage:
                key, started = self.running_stage
                stages[key] = round(stages.get(key, 0.0) + time.perf_counter() - started, 1)
            invocations = [*self.manifest["invocations"], {**self.invocation, "stages": stages, "cpu_s": cpu_seconds(),
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
        # every command imports this checkout's Code, like the launchers, whichever clone pip installed
        own = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        full = child_env(self.scrub, {"TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1", "PYTHONPATH": own,
                                      "OMP_NUM_THREADS": str(self.threads), "MASTER_PORT": free_port(),
                                      **self.extra_env, **env})
        done = run_logged(cmd, full, log, header=f"\n$ {shown}")
        if not done.ok:
            self.say(f"{what}: FAILED (exit {done.rc}, {done.seconds:.0f} s): {last_line(log)[:300]} -- see {log}")
        return done.ok, done.seconds

    # -------------------------------------------------------------------------------------- stages
    def data(self, data_dir: str | None, corpus: str | None, files: dict[str, str | None]) -> Path:
        if data_dir:
            path = Path(data_dir).resolve()
            if not (path / META).is_file() and not self.dry_run:
                raise StudyError(f"DATA_DIR {path} has no {META}: build it with python Code/data_download.py")
            self.manifest["data"] = {"dir": str(path), "source": "given"}
            return path
        out = self.root / "data"
        source = corpus_files(self.preset, corpus, files)
        origin = "local files" if source else f"hub {self.preset.hub_dataset}"
        self.manifest["data"] = {"dir": str(out), "source": origin, "files": source, "vocab": self.preset.vocab}
        if (out / META).is_file():
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

    def one_run(self, stage: Stage, method: Method, seed: int, teacher: str, data_dir: Path) -> None:
        if self.stop.is_set():
            return
        key = stage.key(method.name, seed)
        run_dir = stage.run_dir(self.root, method.name, seed)
        env = student_env(self.preset, method, seed, run_dir, teacher, data_dir, stage.train)
        ood_files = self.ood_files if stage.ood else None
        state = run_state(run_dir, ood_files)
        self.note(key, dir=str(run_dir.relative_to(self.root)), method=method.name, seed=seed, stage=stage.name)
        logs = self.root / "logs"
        log = f"{'' if stage.name == 'test' else stage.name + '_'}{method.name}_seed{seed}"
        if state == "done":
            self.note(key, ("reused",), status="done")  # finished by an invocation killed before it said so
            self.say(f"{key}: finished before, reused")
            return
        if state == "eval" and (run_dir / "eval" / "metrics.json").is_file():
            self.say(f"{key}: trained and evaluated before, without the out-of-domain PPL of these files (in "
                     f"{OOD_CONVENTIONS} conventions): evaluating again (not retraining)")
        if state in ("train", "resume"):
            if state == "resume":
                env["RESUME"] = "1"
            self.say(f"{key}: {'resuming' if state == 'resume' else 'training'}")
            cmd = ["bash", str(launcher_path(method.launcher)), *self.preset.train_flags,
                   *self.preset.method_flags.get(method.name, [])]
            ok, wall = self.execute(cmd, env, logs / f"{log}.train.log", f"{key} training")
            spent = self.manifest["runs"][key].get("train_wall_s", 0.0) + wall  # a resumed run adds up
            self.note(key, ("resumed" if state == "resume" else "trained",), train_wall_s=round(spent, 1))
            if not ok:
                self.note(key, ("failed",), status="failed training")
                self.save()
                return
        if self.stop.is_set():
            return
        cmd = [sys.executable, str(CODE / "evaluate_.py"), "--ckpt", str(run_dir / "final"), "--out-dir",
               str(run_dir / "eval"), "--seed", "0", "--threads", str(self.threads), *stage.eval_flags,
               "--overwrite"]  # a run reaches here to be (re-)evaluated: its earlier eval/ is replaced on purpose
        if self.ood and stage.ood:
            cmd += ["--ood-text", *self.ood]
        ok, wall = self.execute(cmd, {}, logs / f"{log}.eval.log", f"{key} evaluation")
        self.note(key, ("evaluated" if ok else "failed",), eval_wall_s=round(wall, 1),
                  status="done" if ok else "failed evaluation")
        if ok and not self.dry_run:
            train_s = self.manifest["runs"][key].get("train_wall_s", 0)
            self.say(f"{key}: done (train {train_s:.0f} s, eval {wall:.0f} s)")
        self.save()

    def runs(self, stage: Stage, methods: list[Method], seeds: list[int], teacher: str, data_dir: Path) -> None:
        # seed-major order: a study cut short still has every method at its first seeds
        todo = [(m, s) for s in seeds for m in methods]
        for m, s in todo:  # refuse a mixed-up study before any work starts
            run_dir = stage.run_dir(self.root, m.name, s)
            check_settings(run_dir, student_env(self.preset, m, s, run_dir, teacher, data_dir, stage.train))
        if not todo:
            return
        key = f"{stage.name}_s"  # the tuning stage calls this once per round of grid extensions: add up
        started = time.perf_counter()
        self.running_stage = (key, started)
        if self.jobs <= 1 or self.dry_run:
            for m, s in todo:
                self.one_run(stage, m, s, teacher, data_dir)
        else:
            pool = ThreadPoolExecutor(self.jobs)
            try:
                for future in [pool.submit(self.one_run, stage, m, s, teacher, data_dir) for m, s in todo]:
                    future.result()
            except BaseException:
                # Ctrl-C (or a crash): start nothing new; the running children got the same SIGINT
                self.stop.set()
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            pool.shutdown()
        with self.lock:
            self.running_stage = None
            spent = self.invocation["stages"].get(key, 0.0) + time.perf_counter() - started
            self.invocation["stages"][key] = round(spent, 1)

    # ------------------------------------------------------------------------------ tuning and choices
    def tuned(self, stage: Stage, families: list[str]) -> tuple[dict, dict]:
        """Each family's validation PPL per weight of its (extended) grid (None: not scored yet) and its chosen
        weight (None while a point is unscored)."""
        tuned: dict[str, dict[str, float | None]] = {}
        for name in families:
            family = FAMILIES[name]
            ppl = {w: self.valid_ppl(stage, family.method(w).name) for w in family.weights}

            def score(weight: str, family=family, ppl=ppl) -> float | None:
                if weight not in ppl:
                    ppl[weight] = self.valid_ppl(stage, family.method(weight).name)
                return ppl[weight]

            tuned[name] = {w: score(w) for w in extended_grid(family.weights, score)}
        chosen = {name: choose_weight(grid) for name, grid in tuned.items()}
        return tuned, chosen

    def valid_ppl(self, stage: Stage, method: str) -> float | None:
        metrics = read_eval(stage.run_dir(self.root, method, self.preset.tune_seed))
        return metrics["student"]["ppl"] if metrics else None

    def tune(self, stage: Stage, families: list[str], teacher: str, data_dir: Path) -> dict[str, str | None]:
        """The grids, then one weight past each edge that won, until every family's best is inside its grid (at
        most MAX_EXTEND more each); LM-only at the tuning seed is the reference (weight 0)."""
        if families:
            self.say(f"tune: {len(families)} families x their weights, seed {self.preset.tune_seed}, chosen by "
                     f"validation PPL (a best weight at a grid's edge adds one past it, at most {MAX_EXTEND})")
        for _ in range(MAX_EXTEND + 1):
            tuned, _ = self.tuned(stage, families)
            todo = [FAMILIES[f].method(w) for f in families for w, v in tuned[f].items() if v is None]
            if families and self.valid_ppl(stage, "lm") is None:
                todo.insert(0, METHODS["lm"])
            if not todo:
                break
            self.runs(stage, todo, [self.preset.tune_seed], teacher, data_dir)
            if self.dry_run:
                break
        tuned, chosen = self.tuned(stage, families)
        self.manifest["tuning"] = {"seed": self.preset.tune_seed, "split": "valid",
                                   "lm_valid_ppl": self.valid_ppl(stage, "lm"), "max_extend": MAX_EXTEND,
                                   "families": {f: {"label": FAMILIES[f].label, "kind": FAMILIES[f].kind,
                                                    "term": FAMILIES[f].term, "base": list(FAMILIES[f].weights),
                                                    "valid_ppl": tuned[f], "chosen": chosen[f]} for f in families}}
        for f in families:
            if chosen[f]:
                grid_text = ", ".join(f"{w}: {v:.2f}" for w, v in tuned[f].items())
                self.say(f"tune: {f} -> weight {chosen[f]} (validation PPL {grid_text})")
            else:
                self.say(f"tune: {f} has unfinished grid points: not chosen (run again to finish tuning)")
        return chosen

    def budget_methods(self, tune: Stage, families: list[str], chosen: dict[str, str | None]) -> dict[str, Method]:
        """role -> method of the budget point: named methods and families, `best:<kind>` resolved by validation."""
        tuned, _ = self.tuned(tune, families)
        out: dict[str, Method] = {}
        for role in self.preset.budget_methods:
            name = best_of_kind(role.split(":", 1)[1], families, tuned, chosen) if role.startswith("best:") else role
            method = resolve_method(name, chosen) if name else None
            if method is None:
                self.say(f"budget: {role} not chosen yet (its tuning is unfinished): skipped")
                continue
            out[role] = method
        return out

    def calibration(self, test: Stage, teacher: str, data_dir: Path, seed: int) -> None:
        """`python -m Code.evaluation.calibration` on the teacher's and the LM-only student's states: written
        once to calibration/calibration.json (delete it to measure again)."""
        out = self.root / "calibration" / "calibration.json"
        run = test.run_dir(self.root, "lm", seed)
        if out.is_file():
            self.say(f"calibration: reusing {out.relative_to(self.root)}")
            return
        if not self.dry_run and not is_trained(run):
            self.say(f"calibration: needs the finished LM-only run {run.relative_to(self.root)}: skipped")
            return
        pairs = read_distill_info(run / "final").get("layer_map") if not self.dry_run else None
        cmd = [sys.executable, "-m", "Code.evaluation.calibration", "--teacher", teacher, "--student",
               str(run / "final"), "--data-dir", str(data_dir), "--critic-lr", self.preset.train.get("CRITIC_LR",
               "1e-4"), "--out", str(out)]
        if pairs:
            cmd += ["--layer-map", ",".join(f"{a}:{b}" for a, b in pairs)]
        self.say("calibration: critic variants vs exact W1, Sinkhorn and sliced WD on fixed states")
        ok, wall = self.execute(cmd, {}, self.root / "logs" / "calibration.log", "calibration")
        self.invocation["stages"]["calibration_s"] = round(wall, 1)
        self.manifest["calibration"] = {"file": str(out.relative_to(self.root)), "student": str(
            (run / "final").relative_to(self.root)), "ok": ok}
        if not ok:
            self.invocation["failed"].append("calibration")


    def selfcheck(self, teacher: str, data_dir: Path, test_files: list[str]) -> None:
        """The teacher evaluated with the corpus's own test text as its out-of-domain text (selfcheck/eval):
        its out-of-domain PPL must reproduce its test-split PPL, or the out-of-domain path changes the text."""
        out = self.root / "selfcheck" / "eval"
        if not test_files:
            self.say("self-check: the corpus has no local test text: skipped")
            return
        self.manifest["selfcheck"] = {"dir": str(out.relative_to(self.root)), "ood_text": test_files}
        metrics = read_eval(out.parent)
        if metrics and has_ood(metrics, [str(Path(f).resolve()) for f in test_files]):
            self.say("self-check: reusing selfcheck/eval")
            return
        cmd = [sys.executable, str(CODE / "evaluate_.py"), "--ckpt", teacher, "--teacher", teacher, "--data-dir",
               str(data_dir), "--out-dir", str(out), "--seed", "0", "--threads", str(self.threads),
               *self.preset.eval_flags, "--tsne-points", "0", "--overwrite", "--ood-text", *test_files]
        ok, wall = self.execute(cmd, {}, self.root / "logs" / "selfcheck.log", "self-check")
        self.invocation["stages"]["selfcheck_s"] = round(wall, 1)
        if not ok:
            self.invocation["failed"].append("selfcheck")


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
