"""What the evaluation tests share: a tiny teacher, a truncated student run and a small indexed dataset of
real text (`build`), the light flags (`FAST`) and the command line as a subprocess (`run_cli`)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

REPO = Path(__file__).resolve().parents[2]
EVALUATE = REPO / "Code" / "evaluate_.py"


def run_cli(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EVALUATE), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})


def tiny_gpt2(vocab: int, n_layer: int = 4, seed: int = 0, eos: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab, n_positions=64, n_embd=32, n_layer=n_layer, n_head=2,
                     bos_token_id=eos, eos_token_id=eos)
    return GPT2LMHeadModel(cfg).eval()


def build(corpus: Path, root: Path) -> dict:
    from Code.data_pipeline.indexed_dataset import IndexedDatasetBuilder, best_dtype
    from Code.data_pipeline.tokenization import train_bpe_tokenizer
    from Code.modeling.layer_map import default_layer_map
    from Code.modeling.truncation import truncate_teacher

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


def single_error_line(res: subprocess.CompletedProcess) -> str:
    """The one `error:` line of a run that exited with code 2."""
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]
