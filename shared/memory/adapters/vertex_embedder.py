"""The gcp embedder: Vertex AI text embeddings at 1536 dimensions (``gemini-embedding-001``).

Through ``google-cloud-aiplatform``'s generated ``PredictionServiceClient`` (imported lazily: the
local quick start never loads the Google client libraries). One request per text (the model takes
one instance per call), ``outputDimensionality`` 1536, task type ``RETRIEVAL_DOCUMENT``; vectors
are L2-normalised here (Vertex normalises only its full 3072-d output). Token counts for the
context budget come from the bundled all-MiniLM-L6-v2 WordPiece tokenizer (a close, offline
stand-in: Vertex's own count is a network call per text).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from shared.memory.adapters.minilm_embedder import MiniLmEmbedder

MODEL = "gemini-embedding-001"
DIMENSIONS = 1536


class VertexEmbedder:
    """The ``Embedder`` port on Vertex AI."""

    dimensions = DIMENSIONS

    def __init__(self, *, project: str, location: str = "us-central1", model: str = MODEL,
                 transport: Any = None, counter: MiniLmEmbedder | None = None) -> None:
        self.name = f"vertex:{model}:{DIMENSIONS}"
        self._endpoint = f"projects/{project}/locations/{location}/publishers/google/models/{model}"
        self._location = location
        self._transport = transport
        self._client: Any = None
        self._counter = counter or MiniLmEmbedder()

    def _prediction(self) -> Any:
        if self._client is None:
            from google.api_core.client_options import ClientOptions  # noqa: PLC0415 - gcp only
            from google.cloud.aiplatform_v1 import PredictionServiceClient  # noqa: PLC0415 - gcp only

            if self._transport is not None:
                self._client = PredictionServiceClient(transport=self._transport)
            else:
                self._client = PredictionServiceClient(client_options=ClientOptions(
                    api_endpoint=f"{self._location}-aiplatform.googleapis.com"))
        return self._client

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        from google.protobuf import json_format, struct_pb2  # noqa: PLC0415 - gcp only

        client = self._prediction()
        parameters = json_format.ParseDict({"outputDimensionality": DIMENSIONS, "autoTruncate": True},
                                           struct_pb2.Value())
        out: list[list[float]] = []
        for text in texts:
            instance = json_format.ParseDict({"content": text, "task_type": "RETRIEVAL_DOCUMENT"}, struct_pb2.Value())
            response = client.predict(endpoint=self._endpoint, instances=[instance], parameters=parameters)
            # proto-plus wraps the protobuf message; its class method ``pb`` hands the message itself over.
            prediction = json_format.MessageToDict(type(response).pb(response).predictions[0])
            values = [float(x) for x in prediction["embeddings"]["values"]]
            if len(values) != DIMENSIONS:
                raise ValueError(f"Vertex AI returned {len(values)} dimensions, not {DIMENSIONS}")
            norm = math.sqrt(sum(x * x for x in values)) or 1.0
            out.append([x / norm for x in values])
        return out

    def count_tokens(self, text: str) -> int:
        return self._counter.count_tokens(text)
