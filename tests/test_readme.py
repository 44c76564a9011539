"""The README's commands run verbatim: every ```bash block is parsed like the shell would split it, and
every repository path it names exists, every `--flag` is one its entry point's `--help` lists, every
environment variable put in front of a command is a declared launcher or script variable, and every run
folder it reads (`Code/output/<run>`) is one that a command of the README (or a launcher's defaults)
creates. Nothing is run but `--help`."""

from __future__ import annotations

import fnmatch
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

from Code.arguments import parse_config
from Code.knobs.scripts import SCRIPTS
from Code.knobs.training import TRAINING
from tests.support.tiny_setup import REPO, quiet_env

README = REPO / "README.md"
# Generic variables a command may set that belong to other programs (Python, the hub, torch), not to ours.
FOREIGN_VARS = {"OMP_NUM_THREADS", "HF_HUB_OFFLINE", "CUDA_VISIBLE_DEVICES", "PYTHONPATH", "TOKENIZERS_PARALLELISM"}
OURS = ("Code/", "scripts/", "bench/", "tests/", "data_samples/")
MADE_BY_RUNS = ("Code/data/", "Code/output/")  # folders that commands create, not ones the repository ships
OUT_FLAGS = {"--out-dir", "--study-dir", "--report-dir"}
SEPARATORS = {";", "&&", "||", "|", "&", "(", ")", "{", "}", "()"}


@dataclass
class Command:
    """One simple command: `VAR=value ... program arg ...`, with the README line it came from."""

    line: str
    block: int
    env: dict[str, str] = field(default_factory=dict)
    words: list[str] = field(default_factory=list)


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)


def commands(text: str) -> Iterator[Command]:
    """Simple commands of every bash block: continuation lines joined, comments dropped, split at ; && | ...,
    and the block's own shell variables (`O=Code/output/x` alone on a line) expanded in what follows."""
    for index, block in enumerate(bash_blocks(text)):
        shell_vars: dict[str, str] = {}

        def expand(token: str, known: dict[str, str] = shell_vars) -> str:
            return re.sub(r"\$\{?([A-Za-z_]\w*)\}?", lambda m: known.get(m.group(1), m.group(0)), token)

        for line in block.replace("\\\n", " ").splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|(){}")
            lexer.whitespace_split, lexer.commenters = True, "#"
            current = Command(line, index)
            for token in map(expand, lexer):
                if token in SEPARATORS:
                    if current.env or current.words:
                        yield current
                    if current.env and not current.words:
                        shell_vars.update(current.env)
                    current = Command(line, index)
                elif not current.words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", token):
                    name, value = token.split("=", 1)
                    current.env[name] = value
                else:
                    current.words.append(token)
            if current.env or current.words:
                yield current
            if current.env and not current.words:
                shell_vars.update(current.env)


def entry_of(words: list[str]) -> tuple[list[str], list[str]] | None:
    """(the command that prints the flags this command takes, its arguments), or None: not one of ours."""
    if not words:
        return None
    if words[0] in ("python", "python3") and len(words) > 2 and words[1] == "-m" and words[2].startswith("Code."):
        return [sys.executable, "-m", words[2]], words[3:]
    if words[0] in ("python", "python3") and len(words) > 1 and words[1].startswith(OURS) and words[1].endswith(".py"):
        return [sys.executable, words[1]], words[2:]
    script = words[1] if words[0] == "bash" and len(words) > 1 else words[0]
    if script.startswith(OURS) and script.endswith(".sh"):
        return script_entry(script), words[2 if words[0] == "bash" else 1:]
    return None


@cache
def script_entry(script: str) -> list[str]:
    """What a shell script passes "$@" to: train_related.py (or its TRAIN_SCRIPT) for a launcher, else the
    Python program it execs."""
    text = (REPO / script).read_text()
    if "launch_common.sh" in text:
        own = re.search(r"TRAIN_SCRIPT=.*?(Code/\w+\.py)", text)
        return [sys.executable, own.group(1) if own else "Code/train_related.py"]
    module = re.search(r"python3? -m (Code\.[\w.]+)", text)
    if module:
        return [sys.executable, "-m", module.group(1)]
    program = re.search(r"([\w/]+\.py)", text)
    assert program, f"{script}: no Python program found to check its flags against"
    name = Path(program.group(1)).name
    found = [p for p in ((REPO / script).parent / name, REPO / "Code" / name) if p.is_file()]
    assert found, f"{script} runs {name}, which is neither beside it nor in Code/"
    return [sys.executable, str(found[0].relative_to(REPO))]


@cache
def help_text(entry: tuple[str, ...]) -> str:
    proc = subprocess.run([*entry, "--help"], cwd=REPO, env=quiet_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(entry)} --help failed:\n{proc.stderr[-2000:]}"
    return proc.stdout


def values(cmd: Command) -> Iterator[tuple[str | None, str]]:
    """(the flag or variable it belongs to, value) for every word and variable value of a command."""
    previous = None
    for word in cmd.words:
        yield previous, word.split("=", 1)[-1] if word.startswith("--") else word
        previous = word if word.startswith("--") else None
    yield from cmd.env.items()


def readme_commands() -> list[Command]:
    return list(commands(README.read_text(encoding="utf-8")))


def test_parser_reads_blocks_as_the_shell_does():
    text = ("```bash\nA=1 B='x y' python Code/evaluate_.py --ckpt R \\\n  --seed 3  # note\nW=v\n"
            "run() { OMP_NUM_THREADS=1 python -m Code.train_related --lr 1 \"$@\"; }\n```\n```yaml\nx: 1\n```\n")
    got = [(c.env, c.words) for c in commands(text)]
    assert got == [({"A": "1", "B": "x y"}, ["python", "Code/evaluate_.py", "--ckpt", "R", "--seed", "3"]),
                   ({"W": "v"}, []), ({}, ["run"]),
                   ({"OMP_NUM_THREADS": "1"}, ["python", "-m", "Code.train_related", "--lr", "1", "$@"])]
    assert entry_of(got[0][1]) == ([sys.executable, "Code/evaluate_.py"], ["--ckpt", "R", "--seed", "3"])
    assert entry_of(["bash", "Code/wd_stu_base.sh", "--seq-len", "8"])[0] == [sys.executable, "Code/train_related.py"]
    assert entry_of(["bash", "scripts/dolly/minillm.sh"])[0] == [sys.executable, "Code/train_minillm.py"]
    assert entry_of(["bash", "scripts/run_study.sh", "cpu"])[0] == [sys.executable, "-m", "Code.study"]
    assert entry_of(["pip", "install", "x"]) is None


def test_readme_has_the_offline_demo_and_its_expected_numbers():
    text = README.read_text(encoding="utf-8")
    assert any(c.words[:2] == ["bash", "scripts/offline_demo.sh"] for c in commands(text))
    section = text.split("## Offline end to end", 1)[1].split("\n## ", 1)[0]
    assert re.search(r"teacher .*\d+ ± \d+", section), "the offline section gives no expected teacher PPL ± tolerance"


def test_every_path_the_readme_names_exists():
    missing = sorted({f"{value}   (in: {cmd.line.strip()[:90]})" for cmd in readme_commands()
                      for _, value in values(cmd)
                      if value.startswith(OURS) and not value.startswith(MADE_BY_RUNS)
                      and not (REPO / value.rstrip(",.:")).exists()})
    assert not missing, "README names files that are not in the repository:\n" + "\n".join(missing)


def test_every_variable_the_readme_sets_is_declared():
    declared = set(TRAINING.env_vars()) | set(SCRIPTS.env_vars()) | FOREIGN_VARS
    unknown = sorted({f"{name}   (in: {cmd.line.strip()[:90]})" for cmd in readme_commands() if cmd.words
                      for name in cmd.env if name not in declared})
    assert not unknown, "README sets variables no launcher reads (declare them in Code/knobs/):\n" + "\n".join(unknown)


@pytest.mark.integration  # starts every entry point once for its --help (~40 s on 2 cores)
def test_every_flag_the_readme_passes_exists():
    unknown = []
    for cmd in readme_commands():
        found = entry_of(cmd.words)
        if found is None:
            continue
        entry, args = found
        text = help_text(tuple(entry))
        for arg in args:
            flag = arg.split("=", 1)[0]
            if flag.startswith("--") and not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text):
                unknown.append(f"{flag} of {' '.join(entry[1:])}   (in: {cmd.line.strip()[:90]})")
    assert not unknown, "README passes flags its programs do not have:\n" + "\n".join(sorted(set(unknown)))


def launcher_defaults(script: str) -> dict[str, str]:
    """The `VAR="${VAR:-default}"` defaults a thin launcher sets before sourcing launch_common.sh."""
    text = (REPO / script).read_text()
    return dict(re.findall(r'^(\w+)="\$\{\1:-([^}]*)\}"', text, flags=re.M))


def run_folder(env: dict[str, str]) -> str:
    """The run folder training gives these launcher variables, as the README would write it
    (`Code/output/<name>`, or OUT_DIR as given); Code.arguments names it, not this test."""
    argv = ["--no-teacher"] if env.get("NO_TEACHER") == "1" else []
    for var, flag in (("PRESET", "--preset"), ("LOSS", "--loss"), ("RUN_NAME", "--run-name"), ("SEED", "--seed"),
                      ("WEIGHTS", "--weights")):
        if env.get(var):
            argv += [flag, env[var]]
    if env.get("OUT_DIR"):
        return env["OUT_DIR"].rstrip("/")
    return f"Code/output/{Path(parse_config(argv).out_dir).name}"


def test_every_run_folder_the_readme_reads_is_one_a_launcher_creates():
    """A run folder a command reads (`--ckpt`, `--compare`, `TEACHER=`, ...) is made by a launcher's defaults
    or by a launcher command of the same block: not, say, by `LOSS=wd` in another section."""
    cmds = readme_commands()
    defaults = set()
    for script in [str(p.relative_to(REPO)) for p in [*REPO.glob("Code/*.sh"), *REPO.glob("scripts/**/*.sh")]]:
        if "launch_common.sh" in (REPO / script).read_text() and not script.endswith("launch_common.sh"):
            defaults.add(run_folder(launcher_defaults(script)))
    created: dict[int, set[str]] = {}
    for cmd in cmds:  # what each block makes: its launchers' run folders, and any --out-dir (data, comparisons)
        created.setdefault(cmd.block, set()).update(value.rstrip("/") for owner, value in values(cmd)
                                                    if owner in OUT_FLAGS and cmd.words)
        found = entry_of(cmd.words)
        if found and found[0][-1].endswith(("train_related.py", "train_minillm.py")) and cmd.words[0] == "bash":
            created.setdefault(cmd.block, set()).add(run_folder({**launcher_defaults(cmd.words[1]), **cmd.env}))
    unknown = []
    for cmd in cmds:
        if not cmd.words:  # `T=Code/output/run/best` alone defines a shell variable; its uses are checked
            continue
        runs = defaults | created.get(cmd.block, set())
        for owner, value in values(cmd):
            if (value.startswith("Code/output/") and owner not in OUT_FLAGS and owner != "OUT_DIR"
                    and not any(value == run or value.startswith(run + "/") or fnmatch.fnmatch(run, value)
                                for run in runs)):
                unknown.append(f"{value}   (in: {cmd.line.strip()[:90]})")
    assert not unknown, (f"README reads run folders no launcher creates there (defaults: {sorted(defaults)}):\n"
                         + "\n".join(sorted(set(unknown))))


def test_run_folder_names_come_from_training():
    """The names the check above compares against: the WD launcher's default run is `wd_kd_lm_seed1234`
    (not the `wd_seed1234` the README once named), `LOSS=wd` makes `wd_seed1234`."""
    assert run_folder(launcher_defaults("Code/wd_stu_base.sh")) == "Code/output/wd_kd_lm_seed1234"
    assert run_folder({**launcher_defaults("Code/wd_stu_base.sh"), "LOSS": "wd", "SEED": "7"}) == "Code/output/wd_seed7"
    assert run_folder(launcher_defaults("scripts/pretrain_teacher.sh")) == "Code/output/pretrain_teacher"
    assert run_folder({"OUT_DIR": "Code/output/x/wd/"}) == "Code/output/x/wd"
