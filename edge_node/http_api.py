"""The edge's local inference endpoint: HTTP with JSON, on loopback by default.

    GET  /v1/health                 {"device": ..., "models": {name: version}}
    GET  /v1/models                 {"models": {name: version}}
    POST /v1/models/{name}/infer    {"inputs": {input: nested list}}
                                 -> {"model", "version", "latency_ms", "outputs": {output: list}}
    POST /v1/models/{name}/infer    {"texts": ["...", ...]}   (text-embedding models)
                                 -> {"model", "version", "latency_ms", "dimensions",
                                     "embeddings": [[float, ...], ...]}  (one unit vector a text)

Errors answer ``{"error": "..."}`` with 400 (bad request), 404 (no such model), 409 (the
release is a ``file``: delivered, never run), 413 (body too large) or 500 (the model failed).
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from runtime.listen import bind_or_explain

from .errors import InferenceError
from .inference import EmbeddingResult, InferenceResult, InferenceService

log = logging.getLogger("modelcast.edge.http")

MAX_BODY = 16 << 20


#: What an operator can do when the endpoint's address is taken (a second edge on one host).
HTTP_REMEDY = (
    "Choose another with --http HOST:PORT, any free port with --http 127.0.0.1:0, "
    "or no endpoint with --http off"
)


class LocalEndpoint:
    def __init__(self, service: InferenceService, device: str, host: str, port: int) -> None:
        self.service = service
        self.device = device
        handler = _make_handler(self)
        self._server = bind_or_explain(
            f"edge {device}: the local inference endpoint",
            host,
            port,
            HTTP_REMEDY,
            lambda: ThreadingHTTPServer((host, port), handler),
        )
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="edge-http", daemon=True
        )
        self._thread.start()
        host, port = self.address
        log.info("edge %s: local inference endpoint on http://%s:%d", self.device, host, port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _make_handler(endpoint: LocalEndpoint) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "modelcast-edge"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("edge %s: http %s", endpoint.device, format % args)

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            models = endpoint.service.models()
            if self.path == "/v1/health":
                self._reply(200, {"device": endpoint.device, "models": models})
            elif self.path == "/v1/models":
                self._reply(200, {"models": models})
            else:
                self._reply(404, {"error": f"no route {self.path}"})

        def do_POST(self) -> None:
            parts = self.path.strip("/").split("/")
            if len(parts) != 4 or parts[:2] != ["v1", "models"] or parts[3] != "infer":
                self._reply(404, {"error": f"no route {self.path}"})
                return
            try:
                request = _read_request(self)
                if "texts" in request:
                    body = _embedding_body(endpoint.service.embed(parts[2], request["texts"]))
                else:
                    body = _outputs_body(endpoint.service.run(parts[2], request["inputs"]))
            except InferenceError as exc:
                self._reply(exc.status, {"error": str(exc)})
                return
            self._reply(200, body)

    return Handler


def _read_request(handler: BaseHTTPRequestHandler) -> dict[str, Any]:
    """The JSON body of an inference request: exactly one of ``inputs`` (an object) and
    ``texts``; anything else is an ``InferenceError`` (400, or 413 for a body too large)."""
    try:
        length = int(handler.headers.get("Content-Length", "0"))
    except ValueError:
        length = -1
    if not 0 < length <= MAX_BODY:
        raise InferenceError(
            f"body must be 1..{MAX_BODY} bytes of JSON", status=413 if length > MAX_BODY else 400
        )
    try:
        request = json.loads(handler.rfile.read(length))
        if not isinstance(request, dict) or ("inputs" in request) == ("texts" in request):
            raise TypeError("the body must have exactly one of 'inputs' and 'texts'")
        if "inputs" in request and not isinstance(request["inputs"], dict):
            raise TypeError("'inputs' must be an object")
    except (ValueError, TypeError) as exc:
        raise InferenceError(
            f'expected {{"inputs": {{...}}}} or {{"texts": [...]}}: {exc}'
        ) from None
    return request


def _outputs_body(result: InferenceResult) -> dict[str, Any]:
    return {
        "model": result.model,
        "version": result.version,
        "latency_ms": round(result.latency_ms, 3),
        "outputs": {k: v.tolist() for k, v in result.outputs.items()},
    }


def _embedding_body(result: EmbeddingResult) -> dict[str, Any]:
    return {
        "model": result.model,
        "version": result.version,
        "latency_ms": round(result.latency_ms, 3),
        "dimensions": int(result.vectors.shape[1]),
        "embeddings": result.vectors.tolist(),
    }
