"""The Vertex AI embedder through the real aiplatform client, over a stubbed REST transport."""

from __future__ import annotations

import math

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud.aiplatform_v1.services.prediction_service.transports.rest import PredictionServiceRestTransport
from support.http import Recorded, RecordingServer, Reply

from shared.memory.adapters.vertex_embedder import DIMENSIONS, VertexEmbedder


def _answer(request: Recorded) -> Reply:
    text = request.json()["instances"][0]["content"]
    values = [float((len(text) + i) % 7) for i in range(DIMENSIONS)]
    return Reply(body={"predictions": [{"embeddings": {"values": values, "statistics": {"token_count": 3}}}]})


def test_embeds_through_the_prediction_service() -> None:
    with RecordingServer(_answer) as server:
        transport = PredictionServiceRestTransport(host=f"127.0.0.1:{server.port}", url_scheme="http",
                                                   credentials=AnonymousCredentials())
        embedder = VertexEmbedder(project="proj", location="europe-west4", transport=transport)
        vectors = embedder.embed(["hello", "a longer text"])
        requests = server.received()
    assert len(vectors) == 2 and all(len(v) == DIMENSIONS for v in vectors)
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-6) for v in vectors)
    assert [r.path for r in requests] == [
        "/v1/projects/proj/locations/europe-west4/publishers/google/models/gemini-embedding-001:predict"] * 2
    body = requests[0].json()
    assert body["instances"] == [{"content": "hello", "task_type": "RETRIEVAL_DOCUMENT"}]
    assert body["parameters"]["outputDimensionality"] == DIMENSIONS
    assert embedder.name == "vertex:gemini-embedding-001:1536"


def test_a_wrong_size_is_refused() -> None:
    def short(_request: Recorded) -> Reply:
        return Reply(body={"predictions": [{"embeddings": {"values": [1.0, 0.0]}}]})

    with RecordingServer(short) as server:
        transport = PredictionServiceRestTransport(host=f"127.0.0.1:{server.port}", url_scheme="http",
                                                   credentials=AnonymousCredentials())
        with pytest.raises(ValueError, match="dimensions"):
            VertexEmbedder(project="p", transport=transport).embed(["x"])

