"""A stand-in for Vertex AI Vector Search's REST API, for the real ``google-cloud-aiplatform`` clients.

``FakeVectorSearch`` answers, on a ``RecordingServer``, the three calls the memory store makes:

* ``POST /v1/{index}:upsertDatapoints`` and ``:removeDatapoints`` (a stream-update index);
* ``POST /v1/{index_endpoint}:findNeighbors``: exact nearest neighbours by the distance the index
  declares (``DOT_PRODUCT_DISTANCE``: the dot product, larger is nearer; ``COSINE_DISTANCE``:
  1 - cosine, smaller is nearer), among the datapoints that pass the query's restricts as Vertex
  defines them: for every namespace of the query, a datapoint must hold a token of the allow-list
  and none of the deny-list (a datapoint with no token in that namespace does not pass); numeric
  restricts compare the datapoint's value with the query's (``datapoint OP query``).

Exact search stands in for Vertex's approximate one: the contract is about what may be returned
(isolation, expiry, the embedder), not about the approximation. Requests to another index or
endpoint than the one configured get a 404, an unknown route a 400.
"""

from __future__ import annotations

import math
import threading
from typing import Any

from support.http import Recorded, RecordingServer, Reply

_OPS = {"LESS": 1, "LESS_EQUAL": 2, "EQUAL": 3, "GREATER_EQUAL": 4, "GREATER": 5, "NOT_EQUAL": 6}


def _number(restrict: dict[str, Any]) -> float:
    for key in ("valueInt", "valueFloat", "valueDouble"):
        if key in restrict:
            return float(restrict[key])  # int64 travels as a JSON string
    raise ValueError(f"a numeric restrict without a value: {restrict}")


def _compare(value: float, op: int, bound: float) -> bool:
    return {1: value < bound, 2: value <= bound, 3: value == bound, 4: value >= bound, 5: value > bound,
            6: value != bound}[op]


class FakeVectorSearch:
    """One index deployed on one endpoint, served over HTTP (``host`` for the REST transports)."""

    def __init__(self, *, index: str, index_endpoint: str, deployed_index_id: str, dimensions: int,
                 distance: str = "DOT_PRODUCT_DISTANCE") -> None:
        self.index, self.index_endpoint, self.deployed_index_id = index, index_endpoint, deployed_index_id
        self.dimensions, self.distance = dimensions, distance
        self.datapoints: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.server = RecordingServer(self._answer)
        self.host = f"127.0.0.1:{self.server.port}"

    def close(self) -> None:
        self.server.close()

    def _answer(self, request: Recorded) -> Reply:
        body = request.json() or {}
        with self._lock:
            if request.path == f"/v1/{self.index}:upsertDatapoints":
                for point in body.get("datapoints", []):
                    if len(point.get("featureVector", [])) != self.dimensions:
                        return Reply(400, {"error": {"code": 400, "message": "wrong dimensions",
                                                     "status": "INVALID_ARGUMENT"}})
                    self.datapoints[point["datapointId"]] = point
                return Reply(body={})
            if request.path == f"/v1/{self.index}:removeDatapoints":
                for point_id in body.get("datapointIds", []):
                    self.datapoints.pop(point_id, None)
                return Reply(body={})
            if request.path == f"/v1/{self.index_endpoint}:findNeighbors":
                if body.get("deployedIndexId") != self.deployed_index_id:
                    return Reply(404, {"error": {"code": 404, "message": "no such deployed index",
                                                 "status": "NOT_FOUND"}})
                return Reply(body={"nearestNeighbors": [self._query(q) for q in body.get("queries", [])]})
        if ":" in request.path:
            return Reply(404, {"error": {"code": 404, "message": "no such resource", "status": "NOT_FOUND"}})
        return Reply(400, {"error": {"code": 400, "message": "unknown route", "status": "INVALID_ARGUMENT"}})

    def _passes(self, point: dict[str, Any], query: dict[str, Any]) -> bool:
        held = {r["namespace"]: set(r.get("allowList", [])) for r in point.get("restricts", [])}
        for restrict in query.get("restricts", []):
            tokens = held.get(restrict["namespace"], set())
            if not tokens & set(restrict.get("allowList", [])) or tokens & set(restrict.get("denyList", [])):
                return False
        values = {r["namespace"]: _number(r) for r in point.get("numericRestricts", [])}
        for restrict in query.get("numericRestricts", []):
            op = restrict.get("op", 0)
            op = _OPS[op] if isinstance(op, str) else int(op)
            if restrict["namespace"] not in values or not _compare(values[restrict["namespace"]], op, _number(restrict)):
                return False
        return True

    def _distance(self, a: list[float], b: list[float]) -> float:
        dot = sum(x * y for x, y in zip(a, b, strict=True))
        if self.distance == "DOT_PRODUCT_DISTANCE":
            return dot
        return 1.0 - dot / ((math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))) or 1.0)

    def _query(self, query: dict[str, Any]) -> dict[str, Any]:
        probe = query["datapoint"]
        vector = [float(x) for x in probe["featureVector"]]
        scored = [(self._distance(vector, [float(x) for x in p["featureVector"]]), point_id)
                  for point_id, p in self.datapoints.items() if self._passes(p, probe)]
        scored.sort(reverse=self.distance == "DOT_PRODUCT_DISTANCE")
        count = int(query.get("neighborCount") or 10)
        return {"id": probe.get("datapointId", ""),
                "neighbors": [{"datapoint": {"datapointId": point_id}, "distance": distance}
                              for distance, point_id in scored[:count]]}
