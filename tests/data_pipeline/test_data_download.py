"""`python Code/data_download.py` end to end on real text, offline: files, counts, reruns, errors."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from Code.data_download import main
from Code.data_pipeline.corpus_sources import read_text_documents, split_documents
from Code.data_pipeline.corpus_splits import carve_indices
from Code.data_pipeline.indexed_dataset import IndexedDataset
from Code.data_pipeline.lm_datasets import VocabMismatchError, check_vocab, load_meta, open_split
from Code.data_pipeline.tokenization import load_tokenizer

SCRIPT = Path(__file__).resolve().parents[2] / "Code" / "data_download.py"
WIKI = " = First Article = \n \n Intro line . \n \n = = Section = = \n \n Body , text . \n \n = Second = \n \n Two . \n"


def cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "TOKENIZERS_PARALLELISM": "true", **env}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=full_env,
                          timeout=300)


def test_split_documents_wikitext_articles_and_blank_line_blocks():
    docs = split_documents(WIKI.splitlines(keepends=True))
    assert docs == [" = First Article = \n \n Intro line . \n \n = = Section = = \n \n Body , text . \n",
                    " = Second = \n \n Two . \n"]
    assert split_documents("para one\nstill one\n\n\npara two\n".splitlines(keepends=True)) == [
        "para one\nstill one\n", "para two\n"]


def test_carving_is_deterministic_and_disjoint():
    a = carve_indices(1000, ["valid", "test"], 0.05, seed=7)
    b = carve_indices(1000, ["valid", "test"], 0.05, seed=7)
    assert all(np.array_equal(a[k], b[k]) for k in a) and len(a["valid"]) == len(a["test"]) == 50
    assert sorted(np.concatenate(list(a.values())).tolist()) == list(range(1000))
    assert not np.array_equal(carve_indices(1000, ["valid"], 0.05, seed=8)["valid"], a["valid"])
    with pytest.raises(ValueError, match="too few"):
        carve_indices(2, ["valid", "test"], 0.1, seed=0)


@pytest.mark.integration
def test_wikitext2_conversion_end_to_end(corpus_dir, tmp_path, capsys):
    wiki = corpus_dir / "wikitext-2"
    out = tmp_path / "w2"
    args = ["--dataset", "text", "--train", str(wiki / "valid.txt"), "--test", str(wiki / "test.txt"),
            "--valid-fraction", "0.05", "--seed", "3", "--out-dir", str(out)]
    proc = cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert "carved valid from train" in proc.stderr
    meta = load_meta(out)
    assert meta["vocab_size"] == 50257 and meta["eos_id"] == 50256 and meta["dtype"] == "uint16"
    tok = load_tokenizer(str(out / "tokenizer"))  # the tokenizer used is saved beside the data
    assert tok.encode("Hello world", add_special_tokens=False) == [15496, 995]
    source = read_text_documents([wiki / "valid.txt"])
    idx = carve_indices(len(source), ["valid"], 0.05, seed=3)
    expected = {s: [source[i] for i in idx[s]] for s in ("train", "valid")}
    expected["test"] = read_text_documents([wiki / "test.txt"])
    assert len(expected["test"]) == sum(1 for ln in (wiki / "test.txt").read_text().splitlines()
                                        if ln.startswith(" = ") and ln.endswith(" = ") and ln[3] != "=")
    for split, docs in expected.items():
        ds = open_split(out, split)
        counts = [len(ids) for ids in tok(docs, add_special_tokens=False)["input_ids"]]
        assert len(ds) == len(docs) == meta["splits"][split]["documents"]
        assert ds.sizes.tolist() == [c + 1 for c in counts]  # one EOS per document
        assert ds.num_tokens == sum(counts) + len(docs) == meta["splits"][split]["tokens"]
        assert all(ds[i][-1] == 50256 for i in range(len(ds)))
        assert tok.decode(ds[0][:-1].tolist(), clean_up_tokenization_spaces=False) == docs[0]
        sha = hashlib.sha256((out / f"{split}.bin").read_bytes()).hexdigest()
        assert sha == meta["splits"][split]["sha256"]
    with pytest.raises(VocabMismatchError):
        check_vocab(meta, 4096, "student")

    # reruns in this process (the CLI itself was exercised above): same inputs skip, --overwrite redoes
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.bin")}
    capsys.readouterr()
    assert main(args) == 0 and capsys.readouterr().err.count("skipped") == 3
    assert stamps == {p.name: p.stat().st_mtime_ns for p in out.glob("*.bin")}
    assert main([*args, "--overwrite", "--valid-fraction", "0.1"]) == 0
    assert "skipped" not in capsys.readouterr().err
    assert load_meta(out)["splits"]["valid"]["documents"] == round(len(source) * 0.1)
    assert not list(out.glob("*tmp*"))


def test_dolly_records_keep_prompt_lengths(tmp_path):
    records = [{"instruction": f"Name a number after {i}.", "context": "Counting." if i % 2 else "",
                "response": f"The number {i + 1} comes after {i}.", "category": "open_qa"} for i in range(40)]
    src = tmp_path / "dolly.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "dolly"
    rc = main(["--dataset", "dolly", "--train", str(src), "--valid-fraction", "0.1", "--train-tokenizer", "300",
               "--out-dir", str(out)])
    assert rc == 0
    meta = load_meta(out)
    tok = load_tokenizer(str(out / "tokenizer"))
    assert meta["vocab_size"] == len(tok) == 300
    for split in ("train", "valid", "test"):
        ds = IndexedDataset(out / split)
        plens = np.load(out / meta["splits"][split]["prompt_lengths"])
        rows = [json.loads(ln) for ln in (out / meta["splits"][split]["records"]).read_text().splitlines()]
        assert len(plens) == len(ds) == len(rows) == meta["splits"][split]["documents"]
        for i, row in enumerate(rows):
            ids = ds[i].tolist()
            prompt = tok.decode(ids[: plens[i]], clean_up_tokenization_spaces=False)
            response = tok.decode(ids[plens[i] : -1], clean_up_tokenization_spaces=False)
            assert prompt.endswith("### Response:\n") and row["instruction"] in prompt
            assert response == row["response"] and ids[-1] == tok.eos_token_id
            assert ("### Input:\nCounting." in prompt) == bool(row["context"])
    assert main(["--dataset", "dolly", "--train", str(src), "--valid-fraction", "0.1", "--train-tokenizer",
                 "300", "--out-dir", str(out)]) == 0  # rerun: tokenizer reused, splits skipped
    assert load_meta(out)["splits"] == meta["splits"]


def test_cnn_dailymail_records_are_article_cue_then_highlights(tmp_path, capsys):
    records = [{"article": f"Story {i} happened in town {i} today.\n", "highlights": f"Town {i} had a story.",
                "id": str(i)} for i in range(20)]
    src = tmp_path / "cnn.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "cnn"
    assert main(["--dataset", "cnn_dailymail", "--train", str(src), "--valid-fraction", "0.1",
                 "--train-tokenizer", "280", "--out-dir", str(out)]) == 0
    meta = load_meta(out)
    tok = load_tokenizer(str(out / "tokenizer"))
    ds, plens = IndexedDataset(out / "train"), np.load(out / meta["splits"]["train"]["prompt_lengths"])
    rows = [json.loads(ln) for ln in (out / meta["splits"]["train"]["records"]).read_text().splitlines()]
    for i, row in enumerate(rows):
        ids = ds[i].tolist()
        assert tok.decode(ids[: plens[i]]) == row["article"].strip() + "\n\nTL;DR:"
        assert tok.decode(ids[plens[i] : -1]) == " " + row["highlights"]
    src.write_text(json.dumps({"article": "No summary here."}) + "\n")
    capsys.readouterr()
    assert main(["--dataset", "cnn_dailymail", "--train", str(src), "--out-dir", str(tmp_path / "bad")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: CNN/DailyMail record lacks")


def test_imports_stay_light_and_one_way():
    """The source readers never import the command (no cycle), and the command imports no torch (its --help
    and one-line errors answer in a fraction of a second)."""
    code = ("import sys, Code.data_pipeline.cnn_dataset, Code.data_pipeline.corpus_splits; "
            "print('Code.data_download' in sys.modules); "
            "import Code.data_download; print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.split() == ["False", "False"], proc.stderr


def test_jsonl_text_field(tmp_path, capsys):
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"body": f"Document number {i} says hello."}) + "\n" for i in range(30)))
    out = tmp_path / "j"
    assert main(["--dataset", "jsonl", "--train", str(src), "--text-field", "body", "--train-tokenizer", "280",
                 "--out-dir", str(out)]) == 0
    assert sum(load_meta(out)["splits"][s]["documents"] for s in ("train", "valid", "test")) == 30
    assert main(["--dataset", "jsonl", "--train", str(src), "--out-dir", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: record 0 has no text field 'text'")


def test_hub_unreachable_fails_fast_with_one_line(tmp_path):
    t0 = time.perf_counter()
    # a closed local port stands in for the hub: refused at once, whatever this machine's network
    proc = cli("--dataset", "wikitext-2", "--out-dir", str(tmp_path / "x"), HF_ENDPOINT="http://127.0.0.1:9",
               HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="0")
    assert time.perf_counter() - t0 < 60
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the Hugging Face hub is unreachable")
    assert "--dataset text --train" in lines[0]


@pytest.mark.parametrize("args,message", [
    (["--dataset", "text", "--train", "/nonexistent/train.txt"], "error: no such file: /nonexistent/train.txt"),
    (["--dataset", "text"], "error: --dataset text with local files needs --train"),
    (["--dataset", "nope"], "error: argument --dataset: invalid choice"),
    (["--dataset", "text", "--train", __file__, "--valid-fraction", "0.7"], "error: --valid-fraction must be"),
])
def test_cli_errors_are_one_line_exit_2(args, message):
    proc = cli(*args)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and proc.stderr.startswith(message)


def test_hub_path_with_a_stand_in_for_the_hub(monkeypatch, tmp_path):
    """The `datasets` route (online here means: load_dataset answers), WikiText rows being lines."""
    import datasets

    from Code import hub as hub_probe

    rows = [" = Alpha = \n", "", " Alpha text . \n", "", " = = Part = = \n", " More . \n", " = Beta = \n", " B . \n"]
    hub = datasets.DatasetDict({name: datasets.Dataset.from_dict({"text": rows})
                                for name in ("train", "validation", "test")})
    calls = []

    def fake_load_dataset(path, name=None, **kw):
        calls.append((path, name, kw.get("streaming", False)))
        if "openwebtext" in path:  # train only, streamed as an iterable of records
            return {"train": iter({"text": f"Web page {i} says hello."} for i in range(100))}
        return hub

    monkeypatch.setattr(hub_probe, "_HUB_STATE", {"reachable": True})
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    out = tmp_path / "hubwiki"
    assert main(["--dataset", "wikitext-103", "--train-tokenizer", "260", "--out-dir", str(out)]) == 0
    assert calls == [("Salesforce/wikitext", "wikitext-103-raw-v1", False)]
    meta = load_meta(out)
    assert meta["source"].startswith("wikitext-103: Salesforce/wikitext wikitext-103-raw-v1")
    assert {s: v["documents"] for s, v in meta["splits"].items()} == {"train": 2, "valid": 2, "test": 2}
    assert main(["--dataset", "openwebtext", "--max-docs", "5", "--train-tokenizer", "260",
                 "--out-dir", str(tmp_path / "owt")]) == 0  # streamed subset; valid/test carved
    assert calls[-1] == ("Skylion007/openwebtext", None, True)
    assert sum(v["documents"] for v in load_meta(tmp_path / "owt")["splits"].values()) == 5
