"""Each knob declared once (Code/knobs/): its flag, config field, launcher variable and check derive from it."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from Code.arguments import ConfigError, build_parser, parse_args, parse_config
from Code.config import CriticConfig, OptimConfig
from Code.knobs import Knob, Knobs, at_least
from Code.knobs.scripts import SCRIPTS
from Code.knobs.training import TRAINING
from tests.support.tiny_setup import CODE, REPO, quiet_env

VAR = re.compile(r"\$\{([A-Z_][A-Z0-9_]*):-")


def test_every_launcher_variable_in_every_script_is_declared():
    scripts = sorted({*REPO.glob("scripts/**/*.sh"), *CODE.glob("*.sh"), *REPO.glob("bench/*.sh")})
    assert CODE / "launch_common.sh" in scripts and len(scripts) > 10
    declared = set(TRAINING.env_vars()) | set(SCRIPTS.env_vars())
    missing = {f"{v} ({p.relative_to(REPO)})" for p in scripts for v in VAR.findall(p.read_text()) if v not in declared}
    assert not missing, f"undeclared launcher variables {sorted(missing)}: add a Knob in Code/knobs/training.py " \
                        "(a training flag) or Code/knobs/scripts.py (a script's own)"


def _launcher_argv(tmp_path, **env: str) -> list[str]:
    """The flags Code/launch_common.sh passes for `env`: a stand-in TRAIN_SCRIPT records them at --check."""
    record = tmp_path / "argv.json"
    fake = tmp_path / "fake_train.py"
    fake.write_text(f"import json, sys\njson.dump(sys.argv[1:], open({str(record)!r}, 'w'))\nsys.exit(3)\n")
    base = {k: v for k, v in quiet_env().items() if k not in TRAINING.env_vars()}
    proc = subprocess.run(["bash", str(CODE / "launch_common.sh")], env={**base, **env, "TRAIN_SCRIPT": str(fake)},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr  # stopped at the check: no rank started
    return json.loads(record.read_text())


def _sample(knob: Knob) -> tuple[str, object]:
    """A value for the knob's variable unlike its default, and the parsed flag value it must give."""
    if knob.switch:
        return "1", not knob.default
    if knob.choices:
        value = next(c for c in reversed(knob.choices) if c != knob.default)
        return str(value), value
    return {int: ("7", 7), float: ("0.25", 0.25)}.get(knob.type, ("x_" + knob.name, "x_" + knob.name))


def test_each_launcher_variable_reaches_its_flag_through_the_launcher(tmp_path):
    mapped = [k for k in TRAINING if k.env and k.flag]
    assert len(mapped) >= 44
    samples = {k.name: _sample(k) for k in mapped}
    argv = _launcher_argv(tmp_path, **{k.env: samples[k.name][0] for k in mapped})
    assert argv[0] == "--check"
    args = build_parser().parse_args(argv[1:])
    wrong = {name: (getattr(args, name), want) for name, (_, want) in samples.items() if getattr(args, name) != want}
    assert not wrong
    # unset variables pass nothing: the declared defaults apply
    assert _launcher_argv(tmp_path) == ["--check", "--launcher", "deepspeed"]


def test_a_new_knob_declared_once_is_a_flag_a_config_field_and_a_launcher_variable(tmp_path):
    new = Knob("critic_dropout", 0.0, float, help="dropout in the critics", group="critic (wd)", env="CRITIC_DROPOUT",
               section="critic", field="dropout", check=at_least(0))
    knobs = Knobs([*TRAINING, new])

    @knobs.section("critic")
    class Critic:
        pass

    # the flag, with its default and help
    parser = knobs.add_to(__import__("argparse").ArgumentParser())
    assert "--critic-dropout" in parser.format_help() and "dropout in the critics" in parser.format_help()
    args = parser.parse_args(["--critic-dropout", "0.3"])
    # the config field, built by keyword from the flags, defaulting to the knob's default
    assert knobs.build(Critic, args).dropout == 0.3 and Critic().dropout == 0.0
    # its check, on the flags and on the config
    with pytest.raises(ConfigError, match="--critic-dropout must be at least 0, got -1"):
        knobs.check(parser.parse_args(["--critic-dropout", "-1"]))
    with pytest.raises(ConfigError, match=r"Critic.dropout \(--critic-dropout\) must be at least 0"):
        Critic(dropout=-1.0)
    # the launcher variable: the map line, run by the launcher's own flag() helper
    line = 'flag --critic-dropout "${CRITIC_DROPOUT:-}"'
    assert line in knobs.launcher_map().splitlines() and "CRITIC_DROPOUT" in knobs.env_vars()
    helpers = "\n".join(re.findall(r"^(?:flag|switch)\(\) \{.*\}$", (CODE / "launch_common.sh").read_text(), re.M))
    script = f'flags=()\n{helpers}\neval "$1"\nprintf "%s\\n" "${{flags[@]}}"'
    out = subprocess.run(["bash", "-c", script, "bash", knobs.launcher_map()], capture_output=True, text=True,
                         env={"CRITIC_DROPOUT": "0.5", "PATH": "/usr/bin:/bin"}, check=True).stdout.split()
    assert out == ["--critic-dropout", "0.5"]


def test_checks_live_on_the_knobs_and_run_on_flags_and_configs():
    with pytest.raises(ConfigError, match="--n-critic must be at least 1, got 0"):
        parse_args(["--n-critic", "0"])
    with pytest.raises(ConfigError, match=r"CriticConfig.n_critic \(--n-critic\) must be at least 1"):
        CriticConfig(n_critic=0)
    with pytest.raises(ConfigError, match="--critic-betas '0.9': must be two numbers"):
        parse_args(["--critic-betas", "0.9"])
    with pytest.raises(ConfigError, match="must be bf16 or fp32"):
        OptimConfig(precision="fp16")
    with pytest.raises(ConfigError, match="either --student or --student-config"):
        parse_config(["--student", "a", "--student-config", "n_layer=2"])
    with pytest.raises(ValueError, match="declared twice"):
        Knobs([Knob("a", env="A"), Knob("b", env="A")])


def test_config_sections_are_built_by_keyword_from_their_knobs():
    cfg = parse_config(["--critic-hidden", "32", "--critic-samples", "64", "--no-progress",
                        "--critic-betas", "0.5,0.99", "--no-critic-standardize"])
    assert (cfg.critic.hidden, cfg.critic.max_samples, cfg.critic.betas, cfg.critic.standardize) == \
        (32, 64, (0.5, 0.99), False)
    assert cfg.log.progress is False and cfg.log.tensorboard is True
    assert cfg.flags["critic_betas"] == "0.5,0.99" and cfg.flags["no_progress"] is True  # args.json: the flags
    with pytest.raises(TypeError):
        CriticConfig(5)  # keyword only
    assert CriticConfig().n_critic == TRAINING["n_critic"].default


def test_the_launcher_map_needs_no_torch():
    code = ("import sys, io, contextlib\nfrom Code.knobs.__main__ import main\nout = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n    assert main(['launcher-map']) == 0\n"
            "assert 'torch' not in sys.modules and 'numpy' not in sys.modules, 'heavy import on the launcher path'\n"
            "print(out.getvalue())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert 'flag --micro-batch-size "${MICRO_BATCH:-}"' in proc.stdout
    assert 'switch --no-critic-standardize "${NO_CRITIC_STANDARDIZE:-0}"' in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "Code.knobs", "nonsense"], capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and len(bad.stderr.splitlines()) == 1


def test_run_study_maps_its_variables_to_the_study_knobs():
    from Code.knobs.study import STUDY
    from Code.study.command import build_parser as study_parser

    assert {a.dest for a in study_parser()._actions} - {"help"} == {k.name for k in STUDY}
    env = {k: v for k, v in quiet_env(DRY_RUN="1", JOBS="0").items() if k not in SCRIPTS.env_vars() or k in
           ("DRY_RUN", "JOBS")}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "run_study.sh"), "cpu"], env=env, capture_output=True,
                          text=True, timeout=120, cwd=REPO)
    assert (proc.returncode, proc.stderr.strip()) == (2, "error: --jobs must be at least 1, got 0")
