"""One run per folder, and a resume continues the same run.

- The lock (`<run>/run.lock`: PID, host, start time) is taken by rank 0 when training starts and removed at
  exit. A second start into the folder while the holder lives is one `error:` line (the launcher's
  pre-flight and the ranks both check); a lock whose process is gone (kill -9, a crashed node on this host)
  is taken over with a note.
- `check_same_run`: on --resume, the settings that make a run what it is (data and its digest, tokenizer,
  sequence length, models, losses and weights, optimiser, world size: the per-rank states cannot be
  re-sharded) are compared with the saved args.json; a difference is one line naming the setting, its old and new value.
  Settings that may change (max steps, intervals, logging, ...) pass and are recorded in `resumes.jsonl`;
  args.json keeps what the run was started with.
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import os
import socket
from pathlib import Path
from typing import Any

from Code.knobs import ConfigError
from Code.run_folder import ARGS, checkpoint_dir, newest_whole, read_args

LOCK = "run.lock"
RESUMES = "resumes.jsonl"

# Settings a resume may change (how long, how often to log/evaluate/save, where output goes, speed knobs);
# every other flag (data, tokenizer, sequence length, models, losses and weights, optimiser, critics, seed, ...)
# makes the run what it is and must stay.
MAY_CHANGE = frozenset({"config", "preset", "run_name", "out_dir", "resume", "overwrite", "check", "max_steps",
                        "epochs", "log_interval", "grad_share_interval", "eval_interval", "eval_iters",
                        "save_interval", "save_every_minutes", "keep_checkpoints", "no_tensorboard", "no_progress",
                        "num_workers", "compile", "ds_config", "val_prompts", "max_new_tokens"})
RUN_KEY = "run"  # args.json's own section (world size, data digest, code origin): not a flag


# ------------------------------------------------------------------------------------------------ the lock
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def lock_holder(out_dir: str | Path) -> dict[str, Any] | None:
    """The lock's record when a live process on this host (or any process on another host) holds it."""
    path = Path(out_dir) / LOCK
    try:
        held = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(held, dict):
        return None
    if held.get("host") == socket.gethostname() and not _alive(int(held.get("pid", -1))):
        return None  # stale: its process is gone
    return held


def refuse_if_locked(out_dir: str | Path) -> None:
    """ConfigError when another live run holds the folder (this process's own lock passes)."""
    held = lock_holder(out_dir)
    if held is None or (held.get("pid") == os.getpid() and held.get("host") == socket.gethostname()):
        return
    raise ConfigError(f"{out_dir} is in use by run PID {held.get('pid')} on {held.get('host')} (started "
                      f"{held.get('started')}): wait for it, stop it (kill -TERM {held.get('pid')}: it saves and "
                      f"stops), or use another --out-dir; if that run is dead, delete {Path(out_dir) / LOCK}")


def take_lock(out_dir: str | Path, say: Any = print) -> Path:
    """Create the lock atomically (O_EXCL); a stale one is taken over with a note, a live one refused."""
    path = Path(out_dir) / LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                         "started": dt.datetime.now().astimezone().isoformat(timespec="seconds")})
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            refuse_if_locked(out_dir)
            try:
                stale = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                stale = {}
            say(f"note: taking over the lock of a run that is gone (PID {stale.get('pid')} on {stale.get('host')})")
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(record + "\n")
        atexit.register(release_lock, out_dir)  # any exit of this process (an error line too) frees the folder
        return path
    raise ConfigError(f"cannot take the lock {path}: another run started at the same moment; try again")


def release_lock(out_dir: str | Path) -> None:
    """Remove the lock if this process holds it."""
    path = Path(out_dir) / LOCK
    try:
        held = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if held.get("pid") == os.getpid() and held.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------- same run
def data_digest(data_dir: str | Path) -> dict[str, Any]:
    """What identifies a data folder's content: its splits' sha256 and its tokenizer's, from meta.json."""
    from Code.data_pipeline.lm_datasets import load_meta

    meta = load_meta(data_dir)
    return {"splits": {k: v.get("sha256") for k, v in sorted(meta.get("splits", {}).items())},
            "tokenizer": meta.get("tokenizer_sha256") or meta.get("tokenizer")}


def saved_world_size(out_dir: str | Path, saved: dict[str, Any]) -> int | None:
    """World size the run was saved with: args.json's record, else the rank states of its newest checkpoint."""
    if isinstance(saved.get(RUN_KEY), dict) and saved[RUN_KEY].get("world_size"):
        return int(saved[RUN_KEY]["world_size"])
    tag = newest_whole(checkpoint_dir(out_dir))
    if tag is None:
        return None
    ranks = list((checkpoint_dir(out_dir) / tag).glob("rank*_state.pt"))
    return len(ranks) or None


def _same(old: Any, new: Any, key: str) -> bool:
    if key in ("data_dir", "teacher", "student", "pt_data_dir") and old and new and Path(str(old)).exists():
        return Path(str(old)).resolve() == Path(str(new)).resolve()
    return old == new


def run_differences(out_dir: str | Path, flags: dict[str, Any], world_size: int) -> tuple[list[str], dict]:
    """(the run-defining settings that differ, as lines; the allowed changes {flag: [old, new]})."""
    saved = read_args(out_dir)
    if not saved:
        return [], {}
    problems = []
    for key in sorted(set(saved) & set(flags) - MAY_CHANGE - {RUN_KEY}):
        if not _same(saved[key], flags[key], key):
            problems.append(f"{key}: {saved[key]!r} -> {flags[key]!r}")
    run = saved.get(RUN_KEY) if isinstance(saved.get(RUN_KEY), dict) else {}
    if run.get("data") and flags.get("data_dir"):
        try:
            now = data_digest(flags["data_dir"])
        except FileNotFoundError:
            now = None
        if now is not None and now != run["data"]:
            problems.append(f"data content of {flags['data_dir']}: its meta.json digests changed since the run "
                            "started (the folder was converted again)")
    was = saved_world_size(out_dir, saved)
    if was is not None and was != world_size:
        problems.append(f"world size: {was} -> {world_size} (each rank's saved state cannot be re-sharded: "
                        f"resume with {was} ranks, NUM_GPUS={was})")
    allowed = {k: [saved[k], v] for k, v in flags.items()
               if k in saved and k in MAY_CHANGE - {"resume", "overwrite", "check"} and saved[k] != v}
    return problems, allowed


def check_same_run(out_dir: str | Path, flags: dict[str, Any], world_size: int, resume: bool) -> None:
    """On --resume of a started run: ConfigError naming the first setting that differs (old and new value)."""
    if not resume or not (Path(out_dir) / ARGS).is_file():
        return
    problems, _ = run_differences(out_dir, flags, world_size)
    if problems:
        raise ConfigError(f"--resume of {out_dir} with other settings than it was started with: {problems[0]}"
                          f"{f' (and {len(problems) - 1} more)' if len(problems) > 1 else ''}; resume with the "
                          "original settings, or start a new run (another --out-dir, or --overwrite)")


def record_start(out_dir: str | Path, flags: dict[str, Any], world_size: int, resume: bool,
                 code: dict[str, Any]) -> None:
    """A new run: args.json (flags + the run section). A resume: args.json stays; a line in resumes.jsonl."""
    from Code.run_folder import write_args
    from Code.utils import atomic_write_text

    out = Path(out_dir)
    saved = read_args(out)
    now = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    if resume and saved:
        _, allowed = run_differences(out, flags, world_size)
        record = {"at": now, "world_size": world_size, "changed": allowed, "code": code}
        old = (out / RESUMES).read_text(encoding="utf-8") if (out / RESUMES).is_file() else ""
        atomic_write_text(out / RESUMES, old + json.dumps(record, sort_keys=True) + "\n")
        return
    run = {"world_size": world_size, "started": now, "code": code}
    try:
        run["data"] = data_digest(flags["data_dir"])
    except (FileNotFoundError, KeyError, TypeError):
        pass
    write_args(out, {**flags, RUN_KEY: run})
