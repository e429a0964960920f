"""Session fixtures shared by the train/ tests."""

from __future__ import annotations

import pytest

from tests.train_fixtures import build_shards


@pytest.fixture(scope="session")
def train_shards(tmp_path_factory):
    """A directory of real token shards (seq_len 64, vocab 1024) built from data/sample."""
    out = tmp_path_factory.mktemp("train-shards") / "shards"
    build_shards(out)
    return out
