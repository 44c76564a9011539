"""evaluate_.py end to end on a tiny teacher, a truncated student and a small indexed dataset of real text."""

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.evaluation.eval_setup import FAST, REPO, run_cli, single_error_line, tiny_gpt2


@pytest.mark.integration
def test_end_to_end_cli(setup):
    start = time.time()
    res = run_cli("--ckpt", str(setup["run"]), *FAST, "--overwrite")  # eval/ may hold another test's results
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
    from Code.data_pipeline.lm_datasets import EvalWindows, open_split
    from Code.evaluation.passes import perplexity

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


def test_missing_checkpoint_is_one_line(tmp_path):
    line = single_error_line(run_cli("--ckpt", str(tmp_path / "nope")))
    assert "not found" in line
    (tmp_path / "empty_run").mkdir()
    line = single_error_line(run_cli("--ckpt", str(tmp_path / "empty_run")))
    assert "best/" in line


def test_vocab_mismatch_is_one_line(setup, tmp_path):
    small = tiny_gpt2(50, n_layer=2)  # the data's vocabulary is 400
    small.save_pretrained(tmp_path / "small")
    line = single_error_line(run_cli("--ckpt", str(tmp_path / "small"), "--teacher", str(setup["root"] / "teacher"),
                                      "--data-dir", str(setup["data"])))
    assert "400 tokens" in line and "student has 50" in line


def test_no_teacher_is_one_line(setup, tmp_path):
    tiny_gpt2(setup["vocab"], n_layer=2).save_pretrained(tmp_path / "plain")
    line = single_error_line(run_cli("--ckpt", str(tmp_path / "plain"), "--data-dir", str(setup["data"])))
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


# ------------------------------------------------------------------------------------------ out-of-domain text
GUTENBERG_BOOK = """\ufeffThe Project Gutenberg EBook of A Small Book, by Nobody

This eBook is for the use of anyone anywhere at no cost and with almost no restrictions whatsoever.

*** START OF THIS PROJECT GUTENBERG EBOOK A SMALL BOOK ***

Produced by a volunteer.

CHAPTER I

It was a bright cold day in April, and the clocks were striking thirteen.
The hall smelt of boiled cabbage and old rag mats.

End of the Project Gutenberg EBook of A Small Book, by Nobody

*** END OF THIS PROJECT GUTENBERG EBOOK A SMALL BOOK ***

***** This file should be named 0000.txt or 0000.zip *****
Section 1. General Terms of Use and Redistributing Project Gutenberg-tm electronic works
"""


def test_gutenberg_boilerplate_is_stripped(tmp_path):
    from Code.evaluation.texts import read_text_file, read_texts, strip_gutenberg

    body, stripped = strip_gutenberg(GUTENBERG_BOOK)
    assert stripped and body.lstrip().startswith("Produced by") and body.rstrip().endswith("old rag mats.")
    assert "Project Gutenberg" not in body and "START OF" not in body and "General Terms" not in body
    plain = "A book without any licence.\n*** a scene break ***\nThe end.\n"
    assert strip_gutenberg(plain) == (plain, False)
    # only a footer (the offline corpus's chesterton-ball.txt): the text before it is kept whole
    footer_only = ("Chapter 1\nText.\n\nEnd of Project Gutenberg's X, by Y\n\n"
                   "*** END OF THE PROJECT GUTENBERG EBOOK X ***\n")
    assert strip_gutenberg(footer_only) == ("Chapter 1\nText.\n\n", True)
    # files: a UTF-8 byte-order mark and CRLF line ends go; Latin-1 (older Gutenberg files) is read as such
    path = tmp_path / "book.txt"
    path.write_bytes(GUTENBERG_BOOK.replace("\n", "\r\n").encode("utf-8"))
    (text,) = read_texts([path], "--ood-text")
    assert text.gutenberg_stripped and "\r" not in text.text and text.text == body
    latin = tmp_path / "latin.txt"
    latin.write_bytes("Ant. C\xe6sar, my Lord\n".encode("latin-1"))
    assert read_text_file(latin) == "Ant. C\xe6sar, my Lord\n"


def test_ood_token_cap_is_shared_between_files():
    from Code.evaluation.texts import fair_shares

    assert fair_shares([10, 500, 500], None) == [10, 500, 500]
    assert fair_shares([10, 500, 500], 300) == [10, 145, 145]     # the short file's leftover goes to the others
    assert fair_shares([1000, 1000, 1000], 300) == [100, 100, 100]
    assert sum(fair_shares([7, 3000, 40], 1001)) == 1001


def test_ood_text_scores_like_text_file(setup, corpus_dir, tmp_path):
    """--ood-text FILE --ood-format raw gives the number --text-file FILE gives: one tokenizer path, the same
    windows; bits per byte beside each perplexity."""
    from Code.evaluate_ import main

    gutenberg = corpus_dir / "gutenberg"
    if not gutenberg.is_dir():
        pytest.skip("no gutenberg/ in the offline corpus")
    book = tmp_path / "emma.txt"
    book.write_text("\n".join((gutenberg / "austen-emma.txt").read_text().splitlines()[:400]))
    light = [*FAST, "--tsne-points", "0", "--gen-tokens", "0", "--hidden-tokens", "256"]
    run = str(setup["run"])
    assert main(["--ckpt", run, "--ood-text", str(book), "--ood-format", "raw", "--out-dir", str(tmp_path / "ood"),
                 *light]) == 0
    assert main(["--ckpt", run, "--text-file", str(book), "--out-dir", str(tmp_path / "txt"), *light]) == 0
    ood, txt = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("ood", "txt"))
    for name in ("student", "teacher"):
        assert math.isfinite(ood[name]["ood_ppl"]) and ood[name]["ood_ppl"] > 1
        assert ood[name]["ood_ppl"] == txt[name]["ppl"]
        assert ood[name]["ood_bpb"] == txt[name]["bpb"] and txt[name]["bpb"] > 0 and ood[name]["bpb"] > 0
        assert ood[name]["ppl"] != ood[name]["ood_ppl"]  # the in-domain number is still the test split's
    assert ood["ood"]["files"] == [str(book.resolve())] and ood["ood"]["tokens"] == txt["student"]["tokens"] == 2999
    assert ood["ood"]["conventions"] == "raw"
    assert "ood" not in txt and "ood_ppl" not in txt["student"]  # without --ood-text nothing changes
    # a short text scored whole: its bytes, less the first token's (never scored), are the bytes per token's
    from transformers import AutoTokenizer

    short = tmp_path / "short.txt"
    short.write_text("\n".join(book.read_text().splitlines()[60:90]) + "\n")
    tok = AutoTokenizer.from_pretrained(setup["run"] / "best")
    first_bytes = len(tok.decode(tok.encode(short.read_text())[:1]).encode())
    assert main(["--ckpt", run, "--text-file", str(short), "--out-dir", str(tmp_path / "short"), *light]) == 0
    whole = json.loads((tmp_path / "short" / "metrics.json").read_text())["student"]
    assert whole["tokens"] < 2999 and whole["bpb"] == pytest.approx(
        whole["nll"] * whole["tokens"] / (math.log(2) * (len(short.read_text().encode()) - first_bytes)))
    summary = (tmp_path / "ood" / "summary.md").read_text()
    assert "out-of-domain PPL" in summary and "out-of-domain bits/byte" in summary and "emma.txt" in summary
    assert "out-of-domain" not in (tmp_path / "txt" / "summary.md").read_text()
    # a folder: its .txt files in name order, the cap shared between them, Gutenberg boilerplate cut off
    folder = tmp_path / "books"
    folder.mkdir()
    (folder / "a_small.txt").write_text(GUTENBERG_BOOK)
    (folder / "b_emma.txt").write_text(book.read_text())
    (folder / "notes.md").write_text("not text to score")
    assert main(["--ckpt", str(setup["run"]), "--ood-text", str(folder), "--out-dir", str(tmp_path / "dir"), *light,
                 "--max-tokens", "1000"]) == 0
    both = json.loads((tmp_path / "dir" / "metrics.json").read_text())["ood"]
    assert both["conventions"] == "wikitext"  # the default
    assert [Path(f).name for f in both["files"]] == ["a_small.txt", "b_emma.txt"]
    assert both["gutenberg_stripped"] == ["a_small.txt"]
    small, emma = both["tokens_per_file"]
    assert 10 < small < 200 and small + emma + 1 == 1000 and both["tokens"] == 999  # + the end-of-text between


def test_ood_text_missing_or_empty_is_one_error_line(setup, tmp_path, capsys):
    from Code.evaluate_ import main

    line = single_error_line(run_cli("--ckpt", str(setup["run"]), "--ood-text", str(tmp_path / "nope.txt"), *FAST))
    assert "--ood-text" in line and "not found" in line
    (tmp_path / "empty.txt").write_text("\n\n  \n")
    (tmp_path / "licence_only.txt").write_text("*** START OF THE PROJECT GUTENBERG EBOOK X ***\n\n"
                                               "*** END OF THE PROJECT GUTENBERG EBOOK X ***\nlicence\n")
    (tmp_path / "no_txt").mkdir()
    for bad, needle in (("empty.txt", "is empty"), ("licence_only.txt", "header and footer"),
                        ("no_txt", "without .txt files")):
        code = main(["--ckpt", str(setup["run"]), "--out-dir", str(tmp_path / "o"), *FAST, "--ood-text",
                     str(tmp_path / bad)])
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert not (tmp_path / "o" / "metrics.json").exists()
