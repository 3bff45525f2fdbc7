"""A fast loopback OpenAI-compatible upstream for bench/proxy.py (raw asyncio, HTTP/1.1 keep-alive).

``POST /v1/chat/completions`` answers the fixed :data:`ANSWER`, immediately (no artificial delay):
with ``"stream": true`` as :data:`CHUNKS` server-sent events (one ``data:`` event per piece, each
written and drained separately, then a usage event when ``stream_options.include_usage`` is set,
then ``[DONE]``), chunked transfer encoding; otherwise as one JSON body. ``GET /v1/models`` lists
the single model. Everything else is 404. Run as a subprocess; it prints ``PORT <n>`` when ready::

    python bench/proxy_upstream.py [--port 0]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from typing import Any

CHUNKS = 20
# Twenty pieces of three words; their concatenation is the whole answer.
PIECES = [f"word{3 * i} word{3 * i + 1} word{3 * i + 2} " for i in range(CHUNKS)]
ANSWER = "".join(PIECES)
MODEL = "fake"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _event(payload: dict[str, Any] | str) -> bytes:
    text = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return _chunk(f"data: {text}\n\n".encode())


def _stream_events(model: str, include_usage: bool, prompt_tokens: int) -> list[bytes]:
    created = int(time.time())
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": created, "model": model}
    events = [_event({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})]
    for piece in PIECES:
        events.append(_event({**base, "choices": [{"index": 0, "delta": {"content": piece}}]}))
    events.append(_event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    if include_usage:
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": 3 * CHUNKS,
                 "total_tokens": prompt_tokens + 3 * CHUNKS}
        events.append(_event({**base, "choices": [], "usage": usage}))
    events.append(_event("[DONE]"))
    events.append(b"0\r\n\r\n")
    return events


def _completion(model: str, prompt_tokens: int) -> bytes:
    return json.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 3 * CHUNKS,
                  "total_tokens": prompt_tokens + 3 * CHUNKS},
    }).encode()


def _head(status: str, content_type: str, length: int | None, keep_alive: bool) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"content-type: {content_type}"]
    lines.append(f"content-length: {length}" if length is not None else "transfer-encoding: chunked")
    lines.append("connection: keep-alive" if keep_alive else "connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _respond(
    writer: asyncio.StreamWriter, method: str, path: str, body: bytes, keep_alive: bool
) -> None:
    path = path.split("?", 1)[0].rstrip("/")
    if method == "GET" and path in ("/v1/models", "/models"):
        models = [{"id": MODEL, "object": "model", "owned_by": "bench"}]
        data = json.dumps({"object": "list", "data": models}).encode()
        writer.write(_head("200 OK", "application/json", len(data), keep_alive) + data)
        return
    if method != "POST" or path not in ("/v1/chat/completions", "/chat/completions"):
        data = b'{"error":{"message":"no such route","type":"invalid_request_error"}}'
        writer.write(_head("404 Not Found", "application/json", len(data), keep_alive) + data)
        return
    try:
        request = json.loads(body)
    except ValueError:
        data = b'{"error":{"message":"body is not JSON","type":"invalid_request_error"}}'
        writer.write(_head("400 Bad Request", "application/json", len(data), keep_alive) + data)
        return
    model = str(request.get("model") or MODEL)
    prompt_tokens = sum(len(str(m.get("content") or "").split()) for m in request.get("messages") or [])
    if request.get("stream"):
        include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        writer.write(_head("200 OK", "text/event-stream", None, keep_alive))
        for event in _stream_events(model, include_usage, prompt_tokens):
            writer.write(event)
            await writer.drain()  # each event leaves as its own write: a real stream
        return
    data = _completion(model, prompt_tokens)
    writer.write(_head("200 OK", "application/json", len(data), keep_alive) + data)


async def _serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            lines = head.decode("latin-1").split("\r\n")
            method, path, version = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length") or 0)
            body = await reader.readexactly(length) if length else b""
            keep_alive = headers.get("connection", "").lower() != "close" and version == "HTTP/1.1"
            await _respond(writer, method, path, body, keep_alive)
            await writer.drain()
            if not keep_alive:
                return
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    finally:
        writer.close()


async def _main(port: int) -> None:
    server = await asyncio.start_server(_serve_connection, "127.0.0.1", port, backlog=1024)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port to bind on 127.0.0.1 (0: a free one)")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args.port))


if __name__ == "__main__":
    main()
