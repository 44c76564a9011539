"""Shared fixtures: `Code/` on the import path, and the offline corpus when it exists."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

CORPUS = REPO.parent / "shared" / "corpus"


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """The read-only real-text corpus beside the repository; CI always has it, a user's clone may not."""
    if not (CORPUS / "wikitext-2" / "valid.txt").exists():
        pytest.skip(f"real-text corpus not found at {CORPUS} (a fresh clone has no ../shared)")
    return CORPUS


@pytest.fixture
def one_thread():
    """One intra-op thread for tests of hundreds of tiny ops: fastest, and immune to a busy machine's contention."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
