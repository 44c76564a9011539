"""Code/processes.py: the commit stamp that the study, the report and the GPU check write."""

from __future__ import annotations

import subprocess
from pathlib import Path

from Code.processes import GENERATED, git_state


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def test_rewriting_the_committed_report_leaves_the_code_clean(tmp_path):
    git(tmp_path, "init", "-q")
    report, code = tmp_path / GENERATED[0] / "report.md", tmp_path / "Code" / "x.py"
    for path in (report, code):
        path.parent.mkdir(parents=True)
        path.write_text("one\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    assert git_state(tmp_path)["dirty"] is False
    report.write_text("two\n")  # the study rewrote its report: the code that made it is unchanged
    assert git_state(tmp_path)["dirty"] is False
    code.write_text("two\n")
    state = git_state(tmp_path)
    assert state["dirty"] is True and len(state["commit"]) == 40
