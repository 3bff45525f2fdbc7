"""A loopback OpenAI-compatible upstream whose streams are slow, or end early, for the tests of
cut streams: real HTTP on 127.0.0.1, one thread per request."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class SlowStream:
    """Streams ``count`` chunks ``"w0 "``, ``"w1 "``, … one every ``interval`` seconds, then a
    ``finish_reason`` and ``[DONE]``; with ``early`` the connection closes after the chunks with
    neither. Non-streaming requests get the whole text at once. ``started`` counts streams begun."""

    def __init__(self, count: int = 200, interval: float = 0.05, early: bool = False) -> None:
        self.count = count
        self.interval = interval
        self.early = early
        self.started = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def text(self) -> str:
        """The whole answer of a stream that runs to its end."""
        return "".join(f"w{i} " for i in range(self.count))

    @property
    def base_url(self) -> str:
        assert self._server is not None, "SlowStream is not running"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    @property
    def spec(self) -> str:
        return f"openai-compatible:slow@{self.base_url}"

    def __enter__(self) -> SlowStream:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _handler(fake: SlowStream) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # the body ends when the connection closes

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            pass

        def do_POST(self) -> None:  # noqa: N802 - stdlib name
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            if not body.get("stream"):
                payload = {
                    "id": "slow",
                    "object": "chat.completion",
                    "model": "slow",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": fake.text()},
                            "finish_reason": "stop",
                        }
                    ],
                }
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            with fake._lock:
                fake.started += 1
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            try:
                for i in range(fake.count):
                    self._event(
                        {"choices": [{"index": 0, "delta": {"content": f"w{i} "}, "finish_reason": None}]}
                    )
                    time.sleep(fake.interval)
                if not fake.early:
                    self._event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                    self.wfile.write(b"data: [DONE]\n\n")
            except OSError:  # the proxy closed its upstream connection: the point of these tests
                return

        def _event(self, payload: dict[str, Any]) -> None:
            self.wfile.write(
                f"data: {json.dumps({'object': 'chat.completion.chunk', **payload})}\n\n".encode()
            )
            self.wfile.flush()

    return Handler
