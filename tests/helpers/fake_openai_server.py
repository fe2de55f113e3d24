"""A small real HTTP server speaking the OpenAI chat-completions API, for backend tests.

It listens on 127.0.0.1 on a free port, records every request body, counts the most requests
it answered at once, and can be told to fail the next requests with given HTTP statuses, to
wait before answering (for timeouts and concurrency) and what to answer.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

Body = dict[str, Any]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def last_user_content(body: Body) -> str:
    """The content of the last user message of a chat-completions body."""
    users = [m for m in body.get("messages", []) if m.get("role") == "user"]
    return str(users[-1]["content"]) if users else ""


class FakeOpenAIServer:
    """A threaded OpenAI-compatible server: ``/v1/chat/completions``, ``/v1/models``, ``/health``.

    Args:
        model: the model name listed by ``/v1/models``.
        reply: the answer's text, or a function of the request body (default: echo the last
            user message as ``"echo: ..."``).
        delay_s: seconds to wait before answering, or a function of the request body.

    Use as a context manager, or call ``start()`` and ``stop()``.
    """

    def __init__(
        self,
        model: str = "fake-model",
        reply: str | Callable[[Body], str] | None = None,
        delay_s: float | Callable[[Body], float] = 0.0,
    ):
        self.model = model
        self.reply = reply
        self.delay_s = delay_s
        self.bodies: list[Body] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._failures: list[int] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """The base URL, ending with ``/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def n_chat_requests(self) -> int:
        return len(self.bodies)

    def fail_next(self, *statuses: int) -> None:
        """Answer the next chat requests with these HTTP statuses, one each, in order."""
        with self._lock:
            self._failures.extend(statuses)

    def start(self) -> "FakeOpenAIServer":
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- called by the handler threads ----------------------------------------------------
    def _chat(self, body: Body) -> tuple[int, Body]:
        with self._lock:
            self.bodies.append(body)
            status = self._failures.pop(0) if self._failures else 200
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            delay = self.delay_s(body) if callable(self.delay_s) else self.delay_s
            if delay:
                self._stopping.wait(delay)
            if status != 200:
                return status, {"error": {"message": f"injected failure {status}", "code": status}}
            if self.reply is None:
                text = "echo: " + last_user_content(body)
            else:
                text = self.reply(body) if callable(self.reply) else self.reply
            prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
            completion_tokens = len(text.split())
            return 200, {
                "id": f"chatcmpl-{len(self.bodies)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", self.model),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        finally:
            with self._lock:
                self.in_flight -= 1


def _make_handler(server: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
            pass

        def _send(self, status: int, payload: Body) -> None:
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path == "/health":
                self._send(200, {})
            elif self.path == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": server.model, "object": "model"}]})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if self.path != "/v1/chat/completions":
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            try:
                body = json.loads(raw)
            except ValueError:
                self._send(400, {"error": {"message": "body is not JSON"}})
                return
            self._send(*server._chat(body))

    return Handler
