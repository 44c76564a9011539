"""evaluate_.py end to end on a tiny teacher, a truncated student and a small indexed dataset of real text."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

REPO = Path(__file__).resolve().parents[1]
EVALUATE = REPO / "Code" / "evaluate_.py"


def run_cli(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EVALUATE), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})


def tiny_gpt2(vocab: int, n_layer: int = 4, seed: int = 0, eos: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab, n_positions=64, n_embd=32, n_layer=n_layer, n_head=2,
                     bos_token_id=eos, eos_token_id=eos)
    return GPT2LMHeadModel(cfg).eval()


_BUILT: dict = {}


@pytest.fixture
def setup(corpus_dir, tmp_path_factory):
    """Data dir (BPE tokenizer + indexed valid/test splits of wikitext-2 valid text), teacher and a run dir.

    Built once per session (cached) since every test here only reads it.
    """
    if not _BUILT:
        _BUILT.update(_build(corpus_dir, tmp_path_factory.mktemp("eval")))
    return _BUILT


def _build(corpus: Path, root: Path) -> dict:
    from Code.indexed_dataset import IndexedDatasetBuilder, best_dtype
    from Code.modeling.layer_map import default_layer_map
    from Code.modeling.truncation import truncate_teacher
    from Code.tokenization import train_bpe_tokenizer

    lines = [ln.strip() for ln in (corpus / "wikitext-2" / "valid.txt").read_text().splitlines() if ln.strip()]
    lines = lines[:600]
    data = root / "data"
    tok = train_bpe_tokenizer(lines, 400, data / "tokenizer")
    eos = tok.eos_token_id
    meta = {"source": "wikitext-2 valid (test subset)", "tokenizer": str(data / "tokenizer"),
            "vocab_size": len(tok), "eos_id": eos, "dtype": str(best_dtype(len(tok))), "splits": {}}
    for split, chunk in (("valid", lines[:300]), ("test", lines[300:])):
        builder = IndexedDatasetBuilder(data / split, best_dtype(len(tok)))
        n_tokens = 0
        for line in chunk:
            ids = tok(line)["input_ids"] + [eos]
            builder.add_document(ids)
            n_tokens += len(ids)
        builder.finalize()
        meta["splits"][split] = {"tokens": n_tokens, "documents": len(chunk), "sha256": ""}
    (data / "meta.json").write_text(json.dumps(meta))

    teacher = tiny_gpt2(len(tok), n_layer=4, eos=eos)
    teacher.save_pretrained(root / "teacher")
    layers = [0, 2]
    student = truncate_teacher(teacher, layers)
    run = root / "run"
    student.save_pretrained(run / "best")
    tok.save_pretrained(run / "best")
    info = {"teacher": str(root / "teacher"), "student_layers": layers,
            "layer_map": [list(p) for p in default_layer_map(layers, 4)], "data_dir": str(data)}
    (run / "best" / "distill_info.json").write_text(json.dumps(info))
    return {"root": root, "data": data, "teacher": teacher, "run": run, "vocab": len(tok), "eos": eos}


# small everything; one thread because tiny models gain nothing from more and the CI box is shared
FAST = ["--max-tokens", "3000", "--hidden-tokens", "512", "--tsne-points", "60", "--gen-tokens", "6",
        "--projections", "64", "--no-progress", "--threads", "1"]


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_end_to_end_cli(setup):
    start = time.time()
    res = run_cli("--ckpt", str(setup["run"]), *FAST)
    elapsed = time.time() - start
    assert res.returncode == 0, res.stderr[-2000:]
    out = setup["run"] / "eval"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["student"]["ppl"] > 1 and metrics["teacher"]["ppl"] > 1
    assert metrics["student"]["tokens"] == metrics["teacher"]["tokens"] == 2999
    assert [(r["student_layer"], r["teacher_layer"]) for r in metrics["layers"]] == [(1, 1), (2, 4)]
    first = metrics["layers"][0]
    # student block 0 is teacher block 0: the first matched layer is identical
    assert first["sliced_wd"] == pytest.approx(0, abs=1e-9) and first["mse"] == pytest.approx(0, abs=1e-12)
    assert first["cka"] == pytest.approx(1, abs=1e-9)
    assert metrics["layers"][1]["mse"] > 0
    assert "SW_1" in metrics["definitions"]["sliced_wd"] and "variance" in metrics["definitions"]["mse_normalized"]
    assert metrics["cost"]["student"]["params"] < metrics["cost"]["teacher"]["params"]
    assert metrics["cost"]["student"]["size_bytes"] > 0 and metrics["cost"]["teacher"]["tokens_per_s"] > 0
    gens = metrics["generations"]
    assert len(gens["student"]) == len(gens["prompts"]) and {"greedy", "sampled"} <= set(gens["student"][0])
    for png in ("tsne_s1_t1.png", "tsne_s2_t4.png", "tsne_grid.png", "layers.png"):
        assert (out / png).stat().st_size > 1000
    summary = (out / "summary.md").read_text()
    assert "perplexity" in summary and "tsne_grid.png" in summary
    assert elapsed < 60, f"end-to-end evaluation took {elapsed:.1f}s"


def test_deterministic_and_sliding_window(setup, tmp_path):
    from Code.evaluate_ import main

    common = ["--ckpt", str(setup["run"]), *FAST, "--gen-tokens", "4"]
    assert main([*common, "--out-dir", str(tmp_path / "a"), "--stride", "16", "--tsne-points", "0"]) == 0
    assert main([*common, "--out-dir", str(tmp_path / "b"), "--stride", "16", "--tsne-points", "0"]) == 0
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in "ab")
    assert a["student"] == b["student"] and a["layers"] == b["layers"] and a["generations"] == b["generations"]
    assert a["student"]["tokens"] == 2999  # sliding windows still score every token once
    assert "ppl_nonoverlap" in a["student"]
    assert a["student"]["ppl"] != a["student"]["ppl_nonoverlap"]  # more context per token changes the score


def test_sliding_equals_nonoverlap_when_stride_is_window(setup):
    from Code.evaluation.passes import perplexity
    from Code.lm_datasets import EvalWindows, open_split

    torch.set_num_threads(1)  # restored by the autouse fixture
    tokens = torch.from_numpy(open_split(setup["data"], "test").tokens[:1500].astype("int64"))
    model = setup["teacher"]
    for window in (16, 64):
        flat = EvalWindows(tokens, window, None)
        slid = EvalWindows(tokens, window, window)
        a = perplexity(model, [flat[i] for i in range(len(flat))], progress=False)
        b = perplexity(model, [slid[i] for i in range(len(slid))], progress=False)
        assert a["tokens"] == b["tokens"] == 1499
        assert a["ppl"] == pytest.approx(b["ppl"], rel=1e-6)


def test_compare_two_runs(setup, tmp_path):
    from Code.evaluate_ import main
    from Code.modeling.truncation import truncate_teacher

    other = tmp_path / "run_last"
    truncate_teacher(setup["teacher"], [1, 3]).save_pretrained(other / "final")
    (other / "final" / "distill_info.json").write_text(json.dumps(
        {"teacher": str(setup["root"] / "teacher"), "student_layers": [1, 3], "data_dir": str(setup["data"])}))
    out = tmp_path / "cmp"
    assert main(["--compare", str(setup["run"]), str(other), "--out-dir", str(out), *FAST, "--tsne-points", "0"]) == 0
    table = (out / "compare.md").read_text()
    assert "run_last" in table and "| run |" in table
    assert (out / "compare.png").stat().st_size > 1000
    assert set(json.loads((out / "compare.json").read_text())) == {setup["run"].name, "run_last"}


def _single_error_line(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


def test_missing_checkpoint_is_one_line(tmp_path):
    line = _single_error_line(run_cli("--ckpt", str(tmp_path / "nope")))
    assert "not found" in line
    (tmp_path / "empty_run").mkdir()
    line = _single_error_line(run_cli("--ckpt", str(tmp_path / "empty_run")))
    assert "best/" in line


def test_vocab_mismatch_is_one_line(setup, tmp_path):
    small = tiny_gpt2(50, n_layer=2)  # the data's vocabulary is 400
    small.save_pretrained(tmp_path / "small")
    line = _single_error_line(run_cli("--ckpt", str(tmp_path / "small"), "--teacher", str(setup["root"] / "teacher"),
                                      "--data-dir", str(setup["data"])))
    assert "400 tokens" in line and "student has 50" in line


def test_no_teacher_is_one_line(setup, tmp_path):
    tiny_gpt2(setup["vocab"], n_layer=2).save_pretrained(tmp_path / "plain")
    line = _single_error_line(run_cli("--ckpt", str(tmp_path / "plain"), "--data-dir", str(setup["data"])))
    assert "--teacher" in line


def test_text_file_mode(setup, corpus_dir, tmp_path):
    from Code.evaluate_ import main

    text = tmp_path / "sample.txt"
    text.write_text("\n".join((corpus_dir / "wikitext-2" / "test.txt").read_text().splitlines()[:80]))
    out = tmp_path / "txt"
    assert main(["--ckpt", str(setup["run"]), "--text-file", str(text), "--out-dir", str(out), *FAST,
                 "--tsne-points", "0", "--gen-tokens", "0"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["source"].startswith("text file") and metrics["student"]["tokens"] > 100
    assert metrics["generations"]["student"] == []


@pytest.mark.parametrize("extra,needle", [
    (["--task", "dolly"], "--task dolly"),
    (["--window", "1000"], "--window 1000"),
    (["--stride", "0"], "--stride 0"),
    (["--device", "cuda:7"], "CUDA"),
    (["--device", "tpu"], "--device tpu"),
    (["--split", "nosuch"], "nosuch"),
])
def test_bad_options_end_in_one_error_line(setup, tmp_path, capsys, extra, needle):
    from Code.evaluate_ import main

    if "cuda" in extra[-1] and torch.cuda.is_available():
        pytest.skip("CUDA present")
    code = main(["--ckpt", str(setup["run"]), "--out-dir", str(tmp_path), *FAST, *extra])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert code == 2 and len(err) == 1 and needle in err[0]


def test_evaluation_modules_import_no_entry_script():
    """Code.evaluation.* never imports Code.evaluate_ (the thin entry): no import cycle, no private names."""
    code = ("import sys, Code.evaluation.dolly, Code.evaluation.runner, Code.evaluation.common, "
            "Code.evaluation.inputs; assert 'Code.evaluate_' not in sys.modules, sorted(sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert res.returncode == 0, res.stderr[-2000:]
    text = "\n".join(p.read_text() for p in (REPO / "Code" / "evaluation").glob("*.py"))
    assert "Code.evaluate_" not in text
