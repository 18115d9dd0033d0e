"""The numpy all-MiniLM-L6-v2 forward pass matches the reference sentence-transformers model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from shared.memory.adapters.minilm_embedder import DIMENSIONS, MiniLmEmbedder

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "minilm_reference.json"


@pytest.fixture(scope="module")
def embedder() -> MiniLmEmbedder:
    return MiniLmEmbedder()


def test_matches_the_reference_model(embedder: MiniLmEmbedder) -> None:
    reference = json.loads(FIXTURE.read_text())
    ours = np.array(embedder.embed(reference["texts"]))
    theirs = np.array(reference["vectors"])
    assert ours.shape == theirs.shape == (len(reference["texts"]), DIMENSIONS)
    cosines = (ours * theirs).sum(axis=1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
    assert cosines.min() >= 0.999, dict(zip(reference["texts"], cosines.round(5), strict=True))


def test_batching_does_not_change_a_vector(embedder: MiniLmEmbedder) -> None:
    texts = ["short", "a much longer sentence about cloud costs and idle machines", "mid length text"]
    together = np.array(embedder.embed(texts))
    alone = np.array([embedder.embed([t])[0] for t in texts])
    assert np.allclose(together, alone, atol=1e-5)
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)


def test_counts_tokens_with_the_model_tokenizer(embedder: MiniLmEmbedder) -> None:
    assert embedder.count_tokens("") == 0
    assert embedder.count_tokens("hello world") == 2
    assert embedder.count_tokens(" ".join(["token"] * 400)) == 400  # counting never truncates
