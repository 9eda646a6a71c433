"""Test support for mm_st.synthesis: a valid fake generator answer, a local OpenAI-compatible stub server and a
real ``transformers serve`` process.

:class:`StubOpenAIServer` serves ``POST /v1/chat/completions`` (and ``GET /v1/models``) on
127.0.0.1 with the stdlib (``http.server``, one thread per connection), with a fixed artificial
latency and scripted failures, for offline tests and benchmarks/synthesis_throughput.py.
:class:`TransformersServe` runs ``transformers serve`` (transformers' ``serving`` extra) on a local
model directory, offline. Test code, not part of the mm_st package (its offline runtime backend is
``mm_st.synthesis.DryRunBackend``).

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
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
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
        self.in_flight = self.max_in_flight = 0  # requests being answered at once (concurrency, measured by the server)
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
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                time.sleep(server.delay + server.slow.get(number, 0.0))
                with server._lock:
                    server.status_log.append(status)
                    server.in_flight -= 1
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


class ServerNotReady(RuntimeError):
    """``transformers serve`` exited or did not answer ``/health`` in time (the message ends with its log)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TransformersServe:
    """``transformers serve MODEL`` on 127.0.0.1 (a free port), CPU, offline, one torch thread (context manager).

    Entering waits until ``GET /health`` answers (:class:`ServerNotReady` after ``ready_timeout`` seconds or
    if the process exits); leaving terminates the process (killed after 30 s). Its output goes to ``log``
    (``--log-level info``: one uvicorn line per request).
    """

    def __init__(self, model: str, log: str | Path, ready_timeout: float = 300.0, home: str | Path | None = None):
        self.model, self.log, self.ready_timeout = model, Path(log), ready_timeout
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        offline = dict.fromkeys(("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"), "1")
        self.env = {**os.environ, **offline, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
        if home is not None:
            self.env["HF_HOME"] = str(home)  # the server's cache scans stay out of the user's cache
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> TransformersServe:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> None:
        """Start the process and wait for ``/health`` (stops it again and raises :class:`ServerNotReady` if not)."""
        command = [sys.executable, "-c", "from transformers.cli.transformers import main; main()", "serve", self.model,
                   "--host", "127.0.0.1", "--port", str(self.port), "--device", "cpu", "--log-level", "info"]  # fmt: skip
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=self.env)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerNotReady(f"transformers serve exited with {self.process.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise ServerNotReady(f"transformers serve did not answer /health within {self.ready_timeout:.0f} s: {self.log_tail()}")

    def stop(self) -> None:
        """Terminate the process (kill it after 30 s); a no-op when it is not running."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self, chars: int = 1500) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""
