"""`--config run.yaml`: any flag from a file; precedence preset < file < command line; clear errors."""

from __future__ import annotations

import os

import pytest
import yaml

from Code import train_related
from Code.arguments import ConfigError, parse_args


def _yaml(path, **values):
    path.write_text(yaml.safe_dump(values))
    return str(path)


def test_config_sets_any_flag_with_dashes_or_underscores(tmp_path):
    cfg = _yaml(tmp_path / "run.yaml", **{"loss": "rkl+lm", "weights": "0.7,0.3", "seq-len": 64, "lr": 3e-4,
                                          "task": "dolly", "select_by": "rougeL", "mix_alpha": 0.3,
                                          "mse_normalize": True, "max_steps": 11})
    args = parse_args(["--config", cfg])
    assert (args.loss, args.weights, args.seq_len, args.lr) == ("rkl+lm", "0.7,0.3", 64, 3e-4)
    assert (args.task, args.select_by, args.mix_alpha, args.mse_normalize, args.max_steps) == \
        ("dolly", "rougeL", 0.3, True, 11)
    assert args.out_dir.endswith("rkl_lm_seed1234")  # derived after the file is applied


def test_command_line_wins_over_file_and_file_over_preset(tmp_path):
    cfg = _yaml(tmp_path / "run.yaml", preset="distilgpt2", temperature=4.0, seq_len=64, lr=1e-3)
    args = parse_args(["--config", cfg, "--lr", "2e-4"])
    assert args.lr == 2e-4                      # command line > file
    assert args.temperature == 4.0              # file > preset (distilgpt2 says 2.0)
    assert args.loss == "kd+lm+cos" and args.weights == "5.0,2.0,1.0"  # the preset the file named
    assert args.seq_len == 64
    # a loss given on the command line drops the preset's three weights
    assert parse_args(["--config", cfg, "--loss", "cos"]).weights is None
    # a preset on the command line replaces the file's
    assert parse_args(["--config", cfg, "--preset", "seed_mse"]).loss == "mse+kd+lm"


def test_flags_set_to_their_default_on_the_command_line_still_win(tmp_path):
    cfg = _yaml(tmp_path / "run.yaml", seq_len=64, task="dolly")
    args = parse_args(["--config", cfg, "--seq-len", "512", "--task", "lm"])
    assert (args.seq_len, args.task) == (512, "lm")


@pytest.mark.parametrize("content,match", [
    ("no_such_flag: 1\n", "unknown flags"),
    ("loss: [unclosed\n", "not valid YAML"),
    ("- a\n- b\n", "mapping"),
    ("select_by: rougeL\n", "--task prompt"),
    ("mix_alpha: 1.5\n", "--mix-alpha"),
])
def test_bad_config_is_one_clear_error(tmp_path, content, match):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=match):
        parse_args(["--config", str(path)])


def test_cli_reports_a_missing_config_in_one_line(tmp_path, capsys):
    saved = dict(os.environ)
    try:
        with pytest.raises(SystemExit) as exc:
            train_related.main(["--config", str(tmp_path / "missing.yaml")])
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert exc.value.code == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error: config file") and "--config" in err[0]


def test_typed_config_normalises_the_prompt_task_and_carries_per_term_options(tmp_path):
    from Code.arguments import parse_config

    cfg = parse_config(["--task", "dolly", "--loss", "kd[temperature=3]+lm", "--weights", "0.5,0.5",
                        "--temperature", "2"])
    assert cfg.data.task == "prompt" and cfg.data.prompt_masked
    kd, lm = cfg.losses
    assert kd.options.temperature == 3.0 and (kd.weight, lm.weight) == (0.5, 0.5)
    assert cfg.flags["task"] == "dolly"  # args.json keeps the flags as given


@pytest.mark.parametrize("loss", ["seed_wd", "wd+distilgpt2"])
def test_a_preset_named_as_a_loss_is_one_clear_error(loss):
    with pytest.raises(ConfigError, match="is a preset, not a loss: use --preset"):
        parse_args(["--loss", loss])


def test_yaml_values_are_parsed_as_their_flags_are(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("lr: 3e-4\nseq_len: '64'\n")  # YAML 1.1 reads 3e-4 (no dot) as a string
    args = parse_args(["--config", str(path)])
    assert (args.lr, args.seq_len) == (3e-4, 64)
    path.write_text("lr: fast\n")
    with pytest.raises(ConfigError, match="lr: 'fast' is not a float"):
        parse_args(["--config", str(path)])
