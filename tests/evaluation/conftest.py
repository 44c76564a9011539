"""Fixtures of the evaluation tests: the tiny teacher, student run and data (built once per session, since
every test only reads them), and torch's thread count restored after each test."""

import pytest
import torch

from tests.evaluation.eval_setup import build

_BUILT: dict = {}


@pytest.fixture
def setup(corpus_dir, tmp_path_factory):
    """Data dir (BPE tokenizer + indexed valid/test splits of wikitext-2 valid text), teacher and a run dir."""
    if not _BUILT:
        _BUILT.update(build(corpus_dir, tmp_path_factory.mktemp("eval")))
    return _BUILT


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
