"""The out-of-domain path is sound: the in-domain test text scored through `--ood-text` gives the test split's
perplexity, and so does that text hard-wrapped like a Gutenberg book once `--ood-format wikitext` unwraps it
(raw, the wrapping alone costs the model tens of percent). A tiny GPT-2 trained for a few seconds on WikiText-2
is needed: an untrained model's perplexity is the vocabulary size whatever the text, and checks nothing."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from tests.support.tiny_setup import CODE, quiet_env

LIGHT = ["--hidden-tokens", "128", "--projections", "16", "--tsne-points", "0", "--gen-tokens", "0", "--no-progress",
         "--threads", "1"]


def _lines_prefix(text: str, chars: int) -> str:
    head = text[:chars]
    return head[: head.rfind("\n") + 1]


def _trained_model(data, out, steps: int = 150):
    """A 2-layer GPT-2 fitted to the train split by plain AdamW on random 64-token windows (seeded)."""
    from Code.data_pipeline.lm_datasets import load_meta, open_split

    tokens = torch.from_numpy(np.asarray(open_split(data, "train").tokens, dtype=np.int64))
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=load_meta(data)["vocab_size"], n_positions=64, n_embd=64, n_layer=2, n_head=4,
                        bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        starts = torch.randint(0, len(tokens) - 64, (16,), generator=gen)
        batch = torch.stack([tokens[s : s + 64] for s in starts])
        loss = model(batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(out)
    return out


@pytest.mark.integration
def test_in_domain_text_through_ood_path_reproduces_test_ppl(corpus_dir, tmp_path, one_thread):
    from Code.evaluate_ import main

    wiki = corpus_dir / "wikitext-2"
    (tmp_path / "train.txt").write_text(_lines_prefix((wiki / "train.txt").read_text(encoding="utf-8"), 120_000))
    test_text = _lines_prefix((wiki / "test.txt").read_text(encoding="utf-8"), 30_000)
    test = tmp_path / "test.txt"
    test.write_text(test_text, encoding="utf-8")
    data = tmp_path / "data"
    subprocess.run([sys.executable, str(CODE / "data_download.py"), "--dataset", "text", "--train",
                    str(tmp_path / "train.txt"), "--valid", str(test), "--test", str(test), "--out-dir", str(data),
                    "--train-tokenizer", "512"], check=True, capture_output=True, text=True, env=quiet_env())
    model = _trained_model(data, tmp_path / "model")
    # the same text as a printed book: paragraphs wrapped at 70 columns, a blank line between them
    wrapped = tmp_path / "wrapped.txt"
    wrapped.write_text("\n\n".join(textwrap.fill(p.strip(), 70, break_on_hyphens=False, break_long_words=False)
                                   for p in test_text.split("\n") if p.strip()) + "\n", encoding="utf-8")

    def evaluate(text, fmt: str) -> dict:
        out = tmp_path / f"{text.stem}_{fmt}"
        assert main(["--ckpt", str(model), "--teacher", str(model), "--data-dir", str(data), "--ood-text", str(text),
                     "--ood-format", fmt, "--out-dir", str(out), *LIGHT]) == 0
        return json.loads((out / "metrics.json").read_text())

    same = evaluate(test, "wikitext")
    assert same["ood"]["conventions"] == "wikitext"
    t = same["teacher"]
    assert t["ppl"] < 150  # trained: far below the vocabulary's 512
    assert t["ood_ppl"] == pytest.approx(t["ppl"], rel=0.03)
    assert t["ood_bpb"] == pytest.approx(t["bpb"], rel=0.03)
    raw, unwrapped = evaluate(wrapped, "raw"), evaluate(wrapped, "wikitext")
    assert raw["ood"]["conventions"] == "raw" and raw["teacher"]["ood_ppl"] > 1.2 * t["ppl"]
    assert unwrapped["teacher"]["ood_ppl"] == pytest.approx(t["ppl"], rel=0.03)
    assert unwrapped["teacher"]["ood_bpb"] < raw["teacher"]["ood_bpb"]
