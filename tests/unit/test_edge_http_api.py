"""The local inference endpoint over real HTTP on loopback, with a stand-in inference service:
routes, request bodies refused with the right status, and the answers' shape."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from edge_node.errors import InferenceError
from edge_node.http_api import MAX_BODY, LocalEndpoint
from edge_node.inference import EmbeddingResult, InferenceResult


class Service:
    """Stands in for InferenceService: one tensor model ``m`` and one text model ``t``."""

    def models(self) -> dict[str, int]:
        return {"m": 2, "t": 1}

    def run(self, name: str, inputs: dict[str, Any]) -> InferenceResult:
        if name != "m":
            raise InferenceError(f"no active model named {name!r}", status=404)
        x = np.asarray(inputs["x"], dtype=np.float32)
        return InferenceResult("m", 2, {"y": x * 2}, 1.23456)

    def embed(self, name: str, texts: list[str]) -> EmbeddingResult:
        return EmbeddingResult("t", 1, np.ones((len(texts), 3), dtype=np.float32), 2.0)


@pytest.fixture
def endpoint() -> Iterator[LocalEndpoint]:
    ep = LocalEndpoint(Service(), "d1", "127.0.0.1", 0)  # type: ignore[arg-type]
    ep.start()
    yield ep
    ep.stop()


def call(
    ep: LocalEndpoint, method: str, path: str, body: bytes | None = None, **headers: str
) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection(*ep.address, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_health_and_models(endpoint: LocalEndpoint) -> None:
    assert call(endpoint, "GET", "/v1/health") == (
        200,
        {"device": "d1", "models": {"m": 2, "t": 1}},
    )
    assert call(endpoint, "GET", "/v1/models") == (200, {"models": {"m": 2, "t": 1}})
    assert call(endpoint, "GET", "/v1/nothing")[0] == 404


def test_inference_and_embeddings(endpoint: LocalEndpoint) -> None:
    status, body = call(endpoint, "POST", "/v1/models/m/infer", b'{"inputs": {"x": [1, 2]}}')
    assert status == 200
    assert body == {"model": "m", "version": 2, "latency_ms": 1.235, "outputs": {"y": [2.0, 4.0]}}
    status, body = call(endpoint, "POST", "/v1/models/t/infer", b'{"texts": ["a", "b"]}')
    assert status == 200 and body["dimensions"] == 3 and len(body["embeddings"]) == 2


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"", 400, "body must be 1.."),
        (b"not json", 400, "expected"),
        (b"[1]", 400, "exactly one of 'inputs' and 'texts'"),
        (b'{"inputs": {}, "texts": []}', 400, "exactly one of 'inputs' and 'texts'"),
        (b'{"inputs": [1]}', 400, "'inputs' must be an object"),
    ],
)
def test_bad_bodies_are_refused(
    endpoint: LocalEndpoint, body: bytes, status: int, says: str
) -> None:
    got, answer = call(endpoint, "POST", "/v1/models/m/infer", body)
    assert got == status and says in answer["error"]


def test_a_body_too_large_is_refused_unread(endpoint: LocalEndpoint) -> None:
    conn = http.client.HTTPConnection(*endpoint.address, timeout=10)
    conn.putrequest("POST", "/v1/models/m/infer")
    conn.putheader("Content-Length", str(MAX_BODY + 1))
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 413 and "body must be" in json.loads(response.read())["error"]
    conn.close()


def test_routes_and_models_that_do_not_exist(endpoint: LocalEndpoint) -> None:
    assert call(endpoint, "POST", "/v1/models/m/train", b"{}")[0] == 404
    status, body = call(endpoint, "POST", "/v1/models/zz/infer", b'{"inputs": {"x": [1]}}')
    assert (status, body) == (404, {"error": "no active model named 'zz'"})
