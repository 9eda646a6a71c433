"""Test support for mm_st.synthesis: a valid fake generator answer and a local OpenAI-compatible stub server.

:class:`StubOpenAIServer` serves ``POST /v1/chat/completions`` (and ``GET /v1/models``) on
127.0.0.1 with the stdlib (``http.server``, one thread per connection), with a fixed artificial
latency and scripted failures, for offline tests and benchmarks/synthesis_throughput.py. Test code,
not part of the mm_st package (its offline runtime backend is ``mm_st.synthesis.DryRunBackend``).

Example:
    >>> from tests.synthesis_support import StubOpenAIServer
    >>> from mm_st.synthesis.backends import OpenAIChatBackend, Request
    >>> with StubOpenAIServer(statuses=[500]) as server:
    ...     backend = OpenAIChatBackend(server.base_url, "stub", backoff=0.01)
    ...     answer = backend.generate([Request("x", [{"role": "user", "content": [{"type": "text", "text": "hi"}]}])])[0]
    >>> answer.startswith("{"), server.status_log
    (True, [500, 200])
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


def fake_answer(request: Any = None, scores: tuple[int, int, int, int] = (5, 4, 4, 3)) -> str:
    """A schema-valid answer; texts are derived from the request (sample id or content hash)."""
    sample = getattr(request, "sample", None)
    if sample is not None:
        tag, language = sample.id, sample.language
    else:
        tag, language = hashlib.sha1(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()[:8], "xx"
    body = {
        "task_instruction": f"Find the matching item ({language}).",
        "query": f"query {tag}", "positive": f"positive {tag}", "hard_negative": f"hard negative {tag}",
    }  # fmt: skip
    keys = ("cross_modal_alignment", "image_fidelity", "relevance", "hard_negative_difficulty")
    return json.dumps({
        "visual_interpretation": {"query": "a yellow round face"},
        "draft": {**body, "query": f"draft {tag}"},
        "evaluation": {**dict(zip(keys, scores)), "comments": "made the query more specific"},
        "revised": body,
    })  # fmt: skip


class StubOpenAIServer:
    """OpenAI-compatible chat-completions stub on 127.0.0.1 (context manager).

    Args:
        respond: ``respond(request_json) -> answer text`` (default: :func:`fake_answer` of the body).
        delay: seconds slept before every answer (artificial latency).
        statuses: HTTP statuses for the first requests, in order (``200`` = answer normally); e.g.
            ``[500, 429]`` fails the first two requests.
        slow: ``{request number (0-based): seconds}`` extra sleep for given requests (timeouts).
        echo_headers: error bodies repeat the request headers, ``Authorization`` included (as some
            servers do on 401), to test that the key never reaches a log.
    """

    def __init__(self, respond: Callable[[dict], str] | None = None, delay: float = 0.0, statuses: list[int] | None = None,
                 slow: dict[int, float] | None = None, echo_headers: bool = False):  # fmt: skip
        self.respond, self.echo_headers = respond or fake_answer, echo_headers
        self.delay, self.statuses, self.slow = delay, list(statuses or []), dict(slow or {})
        self.status_log: list[int] = []
        self.authorization: list[str | None] = []
        self.bodies: list[dict] = []
        self._count = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._send(200, {"object": "list", "data": [{"id": "stub", "object": "model"}]})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    number = server._count
                    server._count += 1
                    status = server.statuses[number] if number < len(server.statuses) else 200
                    server.authorization.append(self.headers.get("Authorization"))
                    server.bodies.append(body)
                time.sleep(server.delay + server.slow.get(number, 0.0))
                with server._lock:
                    server.status_log.append(status)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"unknown path {self.path}"}})
                elif status != 200:
                    error = {"message": f"scripted {status}"}
                    if server.echo_headers:
                        error["request_headers"] = dict(self.headers.items())
                    self._send(status, {"error": error})
                else:
                    text = server.respond(body)
                    self._send(200, {
                        "id": f"chatcmpl-{number}", "object": "chat.completion", "model": body.get("model"),
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                    })  # fmt: skip

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256

            def handle_error(self, request: Any, client_address: Any) -> None:  # client gone (timeouts): quiet
                pass

        self._server = Server(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> StubOpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def requests(self) -> int:
        return self._count
