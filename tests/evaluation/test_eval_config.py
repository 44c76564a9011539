"""evaluate_.py's typed config (every flag lands in EvalConfig, nothing past the command line sees a
Namespace), its refusal to replace earlier results without --overwrite, and the list of files it wrote."""

import ast
import dataclasses
import json
from pathlib import Path

import pytest

from tests.evaluation.eval_setup import FAST, REPO, run_cli, single_error_line

LIGHT = [*FAST, "--tsne-points", "0", "--gen-tokens", "0", "--hidden-tokens", "256", "--max-tokens", "1000"]


def _fields(obj, prefix: str = "") -> dict:
    """Every leaf field of a (nested) config dataclass: {'source.window': 3, ...}."""
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out.update(_fields(value, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = value
    return out


def test_every_flag_lands_in_the_config():
    """Each flag, given a value unlike its default, changes exactly one config field to that value: a flag
    added without its config field (or read from nowhere) fails here."""
    from Code.evaluate_ import build_parser
    from Code.evaluation.config import EvalConfig, from_namespace

    parser = build_parser()
    base = _fields(from_namespace(parser.parse_args([])))
    assert base == _fields(EvalConfig())  # the flags' defaults are the config's defaults
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        flag = action.option_strings[0]
        if action.nargs == 0:  # a switch
            argv, want = [flag], None
        elif action.choices:
            value = next(c for c in action.choices if c != action.default)
            argv, want = [flag, value], value
        elif action.type is int:
            argv, want = [flag, "7"], 7
        elif action.nargs == "+":
            argv, want = [flag, "a", "b"], ("a", "b")
        else:
            argv, want = [flag, "xyz"], "xyz"
        changed = {k: v for k, v in _fields(from_namespace(parser.parse_args(argv))).items() if v != base[k]}
        assert len(changed) == 1, (flag, changed)
        if want is not None:
            assert list(changed.values()) == [want], (flag, changed)


def test_no_namespace_past_the_command_line():
    """No evaluation function takes a Namespace (a parameter named `args` or annotated Namespace) but
    config.from_namespace, where the config is built; a module's own command line (`main(argv)`) may parse."""
    for path in sorted((REPO / "Code" / "evaluation").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            params = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
            assert "args" not in [a.arg for a in params], f"{path.name}: {node.name}(args)"
            takes_ns = any(a.annotation is not None and "Namespace" in ast.unparse(a.annotation) for a in params)
            assert not takes_ns or (path.name, node.name) == ("config.py", "from_namespace"), \
                f"{path.name}: {node.name} takes a Namespace"


def test_config_is_frozen_and_built_by_keyword():
    from Code.evaluation.config import EvalConfig, SourceConfig

    cfg = EvalConfig(ckpt="run", source=SourceConfig(window=32))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.source.window = 64
    assert cfg.measure.hidden_tokens == 4096 and cfg.runtime.progress and cfg.task == "lm"


def _listed(out: str) -> list[Path]:
    lines = out.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith("wrote ") and ln.endswith(":"))
    paths = [Path(ln.strip()) for ln in lines[head + 1:]]
    assert lines[head] == f"wrote {len(paths)} files:"
    return [p if p.is_absolute() else Path.cwd() / p for p in paths]


def test_refuses_to_overwrite_then_replaces_with_overwrite(setup, tmp_path, capsys):
    from Code.evaluate_ import main

    out = tmp_path / "eval"
    argv = ["--ckpt", str(setup["run"]), "--out-dir", str(out), *LIGHT]
    assert main(argv) == 0
    listed = _listed(capsys.readouterr().out)
    assert {p.name for p in listed} == {"metrics.json", "summary.md", "layers.png"}
    assert sorted(listed) == sorted(p for p in out.iterdir())  # everything listed exists, nothing unlisted
    first = (out / "metrics.json").read_text()
    (out / "metrics.json").write_text(first.replace('"seed": 0', '"seed": 0, "marker": 1'))

    assert main(argv) == 2  # refused before any model loads: nothing printed, nothing touched
    captured = capsys.readouterr()
    err = [ln for ln in captured.err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and "--overwrite" in err[0] and "metrics.json" in err[0]
    assert "student ppl" not in captured.out and '"marker": 1' in (out / "metrics.json").read_text()

    assert main([*argv, "--overwrite"]) == 0
    assert {p.name for p in _listed(capsys.readouterr().out)} == {"metrics.json", "summary.md", "layers.png"}
    again, before = json.loads((out / "metrics.json").read_text()), json.loads(first)
    assert "marker" not in again and again["student"] == before["student"] and again["layers"] == before["layers"]


def test_refusal_is_exit_code_2_on_the_command_line(setup, tmp_path):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "summary.md").write_text("an earlier evaluation\n")
    line = single_error_line(run_cli("--ckpt", str(setup["run"]), "--out-dir", str(out), *LIGHT))
    assert str(out) in line and "summary.md" in line and "--overwrite" in line
    assert (out / "summary.md").read_text() == "an earlier evaluation\n"


def test_compare_refuses_before_evaluating_any_run(setup, tmp_path, capsys):
    """A --compare whose table is already there is refused before the runs lacking eval/ are evaluated."""
    from Code.evaluate_ import main
    from Code.modeling.truncation import truncate_teacher

    other = tmp_path / "run_b"
    truncate_teacher(setup["teacher"], [1, 3]).save_pretrained(other / "final")
    (other / "final" / "distill_info.json").write_text(json.dumps(
        {"teacher": str(setup["root"] / "teacher"), "student_layers": [1, 3], "data_dir": str(setup["data"])}))
    cmp = tmp_path / "cmp"
    cmp.mkdir()
    (cmp / "compare.md").write_text("old table\n")
    assert main(["--compare", str(other), "--out-dir", str(cmp), *LIGHT]) == 2
    assert "--overwrite" in capsys.readouterr().err and not (other / "eval").exists()
    assert main(["--compare", str(other), "--out-dir", str(cmp), *LIGHT, "--overwrite"]) == 0
    listed = {p.resolve() for p in _listed(capsys.readouterr().out)}
    want = [other / "eval" / "metrics.json", cmp / "compare.md", cmp / "compare.json", cmp / "compare.png"]
    assert {p.resolve() for p in want} <= listed
    assert "run_b" in (cmp / "compare.md").read_text()


def test_earlier_results_are_per_task(tmp_path):
    """eval/ holds both tasks' files side by side: an LM evaluation does not block a dolly one, or back."""
    from Code.evaluation.common import EvalError
    from Code.evaluation.outputs import earlier_results, refuse_overwrite

    (tmp_path / "metrics.json").write_text("{}")
    (tmp_path / "tsne_s1_t1.png").write_bytes(b"png")
    (tmp_path / "notes.txt").write_text("the user's own file")
    assert [p.name for p in earlier_results(tmp_path, "lm")] == ["metrics.json", "tsne_s1_t1.png"]
    refuse_overwrite(tmp_path, "dolly", overwrite=False)  # no dolly results yet: fine
    refuse_overwrite(tmp_path / "missing", "lm", overwrite=False)
    refuse_overwrite(tmp_path, "lm", overwrite=True)
    with pytest.raises(EvalError, match="--overwrite"):
        refuse_overwrite(tmp_path, "lm", overwrite=False)


@pytest.mark.parametrize("flag,value", [("--hidden-tokens", "0"), ("--batch-size", "0"), ("--threads", "0"),
                                        ("--max-new-tokens", "0"), ("--max-examples", "0"), ("--tsne-points", "-1")])
def test_knob_checks_are_one_error_line(flag, value, tmp_path, capsys):
    """A value its knob's check refuses is one `error:` line naming the flag, before any file is read."""
    from Code.evaluate_ import main

    assert main(["--ckpt", str(tmp_path / "nope"), flag, value]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith(f"error: {flag} must be at least"), err


def test_a_bad_flag_is_one_line_without_the_usage_block():
    for argv, needle in ((["--window", "abc"], "--window: invalid int value"), (["--task", "x"], "invalid choice"),
                         (["--no-such-flag"], "unrecognized arguments")):
        assert needle in single_error_line(run_cli(*argv))


@pytest.mark.integration  # builds the dolly data folder with data_download.py in a child process
def test_dolly_task_on_the_config(corpus_dir, tmp_path, capsys):
    """--task dolly end to end: ROUGE-L files written and listed, a second run refused, --compare's table."""
    from Code.evaluate_ import main
    from Code.modeling.truncation import truncate_teacher
    from tests.evaluation.eval_setup import tiny_gpt2
    from tests.support.dolly_fixture import make_dolly_data

    data = make_dolly_data(corpus_dir, tmp_path, vocab=512)
    vocab = json.loads((data / "meta.json").read_text())["vocab_size"]
    teacher = tiny_gpt2(vocab, n_layer=2)
    teacher.save_pretrained(tmp_path / "teacher")
    run = tmp_path / "run_d"
    truncate_teacher(teacher, [0]).save_pretrained(run / "final")
    (run / "final" / "distill_info.json").write_text(json.dumps({"teacher": str(tmp_path / "teacher"),
                                                                  "data_dir": str(data)}))
    argv = ["--task", "dolly", "--ckpt", str(run), "--max-examples", "3", "--max-new-tokens", "4", "--no-progress",
            "--threads", "1"]
    assert main(argv) == 0
    assert {p.name for p in _listed(capsys.readouterr().out)} == {"dolly_metrics.json", "dolly_generations.jsonl"}
    metrics = json.loads((run / "eval" / "dolly_metrics.json").read_text())
    assert metrics["examples"] == 3 and metrics["max_new_tokens"] == 4 and 0 <= metrics["teacher"]["rougeL"] <= 100
    assert main(argv) == 2 and "--overwrite" in capsys.readouterr().err
    assert main(["--task", "dolly", "--compare", str(run), "--out-dir", str(tmp_path / "cmp")]) == 0
    assert "run_d" in (tmp_path / "cmp" / "compare_dolly.md").read_text()  # read, not evaluated again
    assert {p.name for p in _listed(capsys.readouterr().out)} == {"compare_dolly.md", "compare_dolly.json"}
