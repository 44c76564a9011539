"""The README's one offline command, `bash scripts/offline_demo.sh`, from a fresh copy of the repository
with no `../shared` beside it and the hub switched off: data from the shipped book, a teacher, a WD and an
MSE student, both evaluated, the comparison printed. Fewer steps than the documented run (the DEMO_*
variables), so the numbers are not the README's; everything else is the same command."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess

import pytest

from Code.knobs.scripts import SCRIPTS
from Code.knobs.training import TRAINING
from tests.support.tiny_setup import REPO, quiet_env, run_ok

pytestmark = pytest.mark.integration


def fresh_copy(dest):
    """What a clone of this working tree holds: tracked and untracked-but-not-ignored files, nothing built."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).write_bytes(src.read_bytes())
            (dest / name).chmod(src.stat().st_mode)
    return dest


def table_rows(text: str) -> dict[str, list[str]]:
    """The comparison's first table: run -> its cells."""
    rows = {}
    for line in text.split("| run | student PPL |", 1)[1].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def test_offline_demo_from_a_fresh_copy(tmp_path):
    repo = fresh_copy(tmp_path / "repo")
    assert not (repo.parent / "shared").exists()
    # The developer's own launcher variables must not change the demo; the copy's Code/ is the one imported.
    env = {k: v for k, v in quiet_env().items() if k not in set(TRAINING.env_vars()) | set(SCRIPTS.env_vars())}
    env.update(PYTHONPATH=str(repo), HF_HUB_OFFLINE="1", DEMO_TEACHER_STEPS="20", DEMO_STUDENT_STEPS="6",
               DEMO_EVAL_TOKENS="2048", HF_HOME=str(tmp_path / "hf_home"))
    env.pop("VERBOSE", None)
    proc = run_ok(["bash", "scripts/offline_demo.sh"], env, timeout=900, cwd=repo)
    out = proc.stdout + proc.stderr

    demo = repo / "Code" / "output" / "offline_demo"
    meta = json.loads((demo / "data" / "meta.json").read_text())
    assert meta["vocab_size"] == 4096 and meta["splits"]["test"]["tokens"] > 10_000
    rows = table_rows(proc.stdout)
    assert set(rows) == {"wd", "mse"}, proc.stdout[-3000:]
    teacher = {float(cells[1]) for cells in rows.values()}
    assert len(teacher) == 1, "both students are compared with the same teacher"
    for run, cells in rows.items():
        metrics = json.loads((demo / run / "eval" / "metrics.json").read_text())
        assert math.isclose(float(cells[0]), metrics["student"]["ppl"], rel_tol=1e-3)
        assert 1 < metrics["student"]["ppl"] < 4096 and 1 < metrics["teacher"]["ppl"] < 4096
        assert json.loads((demo / run / "args.json").read_text())["teacher"].endswith("offline_demo/teacher/best")

    # Third-party noise is off by default: no DeepSpeed INFO lines or CPU-fallback warnings, no shm-build
    # message, no transformers progress bars.
    noise = re.compile(r"\[INFO\]|Setting accelerator to CPU|built successfully|Writing model shards|Loading weights")
    assert not noise.search(out), "\n".join(line for line in out.splitlines() if noise.search(line))
    # Validation perplexity is shown when it is computed.
    assert re.search(r"validation .*ppl", out), out[-3000:]
    assert os.access(repo / "scripts" / "offline_demo.sh", os.X_OK)
