"""Test doubles: a loopback OpenAI-compatible (and Ollama-tags) server and a tiny random causal LM."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

# ---------------------------------------------------------------------------------------------------
# Fake OpenAI-compatible server
# ---------------------------------------------------------------------------------------------------


def _words(text: str) -> int:
    return len(text.split())


def _chunks(text: str, words_per_chunk: int = 3) -> list[str]:
    """Split ``text`` into pieces of a few words each; their concatenation is exactly ``text``."""
    pieces = re.findall(r"\s+|\S+\s*", text)
    if pieces and pieces[0].isspace() and len(pieces) > 1:
        pieces[1] = pieces[0] + pieces[1]
        pieces.pop(0)
    return ["".join(pieces[i : i + words_per_chunk]) for i in range(0, len(pieces), words_per_chunk)]


class FakeOpenAI:
    """A real HTTP server on 127.0.0.1 speaking the OpenAI chat completions API (and Ollama's /api/tags).

    Use as a context manager. ``queue(...)`` scripts replies; with an empty queue the n-th request gets
    ``"reply n"``; ``responder`` (body -> text) overrides both; ``fail_next(status, message)`` makes the
    next chat request fail. ``requests``/``headers`` record every chat completion call in order.
    """

    def __init__(self, ollama_models: list[str] | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.responder: Callable[[dict[str, Any]], str] | None = None
        # minetune's lesson-distilling calls are answered here and kept apart from chat requests.
        self.reflection_requests: list[dict[str, Any]] = []
        self.reflection_replies: deque[str] = deque()
        self.reflection_default = '{"rule": null, "supersedes": []}'
        self.ollama_models: list[str] = ["fake:latest"] if ollama_models is None else ollama_models
        self.delay: float = 0.0  # seconds to sleep before answering a chat request
        # Request fields this upstream refuses (400 naming the field, as OpenAI does).
        self.reject_fields: set[str] = set()
        self._replies: deque[str] = deque()
        self._failures: deque[tuple[int, str]] = deque()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> FakeOpenAI:
        """Start serving on a free loopback port."""
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-openai", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "FakeOpenAI is not running"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The server root, e.g. for ``MINETUNE_OLLAMA_URL``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL (``.../v1``)."""
        return f"{self.url}/v1"

    # -- scripting --------------------------------------------------------------------------------

    def queue(self, *texts: str) -> None:
        """Reply with these texts, in order, to the next chat requests."""
        with self._lock:
            self._replies.extend(texts)

    def fail_next(self, status: int, message: str = "scripted failure") -> None:
        """Answer the next chat request with an OpenAI-style error body and ``status``."""
        with self._lock:
            self._failures.append((status, message))

    @property
    def last(self) -> dict[str, Any]:
        """The most recent chat request body."""
        return self.requests[-1]

    def _record(self, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, str | None, str]:
        """Store the request; return (request number, failure or None, reply text)."""
        with self._lock:
            if _is_reflection(body):
                self.reflection_requests.append(body)
                reply = (
                    self.reflection_replies.popleft() if self.reflection_replies else self.reflection_default
                )
                return 200, None, reply
            self.requests.append(body)
            self.headers.append(headers)
            number = len(self.requests)
            if self._failures:
                status, message = self._failures.popleft()
                return status, message, ""
            if self.responder is not None:
                return 200, None, self.responder(body)
            if self._replies:
                return 200, None, self._replies.popleft()
            return 200, None, f"reply {number}"


def _is_reflection(body: dict[str, Any]) -> bool:
    from minetune.learn.lessons import REFLECTION_MARKER

    messages = body.get("messages") or [{}]
    return str(messages[0].get("content", "")).startswith(REFLECTION_MARKER)


def _wants_surface(body: dict[str, Any]) -> bool:
    """Whether a request uses what the plain replies do not answer (n, tools, json_schema, logprobs)."""
    last = (body.get("messages") or [{}])[-1]
    fmt = (body.get("response_format") or {}).get("type")
    return bool((body.get("n") or 1) > 1 or body.get("tools") or body.get("logprobs")
                or fmt in ("json_schema", "json_object") or last.get("role") == "tool")


def _surface_choices(body: dict[str, Any], text: str) -> list[dict[str, Any]]:
    """The choices of a surface request: choice i of n says ``text`` (i > 0: ``text (choice i+1)``);
    with tools (and tool_choice not "none") it calls the first tool with the user's last text; a
    tool result is answered "tool said: ..."; json_schema/json_object get ``{"answer": text}``."""
    messages = body.get("messages") or [{}]
    last = messages[-1]
    if last.get("role") == "tool":
        text = f"tool said: {last.get('content')}"
    tools = body.get("tools") or []
    calls = None
    if tools and body.get("tool_choice", "auto") != "none" and last.get("role") != "tool":
        name = tools[0]["function"]["name"]
        calls = [{"id": "call_fake_1", "type": "function",
                  "function": {"name": name, "arguments": json.dumps({"query": str(last.get("content"))})}}]
    fmt = (body.get("response_format") or {}).get("type")
    choices = []
    for i in range(int(body.get("n") or 1)):
        content = text if i == 0 else f"{text} (choice {i + 1})"
        if fmt in ("json_schema", "json_object"):
            content = json.dumps({"answer": content})
        message: dict[str, Any] = {"role": "assistant", "content": None if calls else content}
        message["refusal"] = None
        if calls:
            message["tool_calls"] = calls
        choice: dict[str, Any] = {"index": i, "message": message,
                                  "finish_reason": "tool_calls" if calls else "stop", "logprobs": None}
        if body.get("logprobs"):
            top = int(body.get("top_logprobs") or 0)
            choice["logprobs"] = {"content": [
                {"token": w, "logprob": -0.5, "bytes": list(w.encode()),
                 "top_logprobs": [{"token": w, "logprob": -0.5, "bytes": list(w.encode())}] * top}
                for w in content.split()], "refusal": None}
        choices.append(choice)
    return choices


def _make_handler(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "FakeOpenAI/1.0"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            pass

        def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
            # Scripted failures are final: the SDK's retries honour x-should-retry.
            self._json(
                status,
                {"error": {"message": message, "type": kind, "code": status}},
                {"x-should-retry": "false"},
            )

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            path = self.path.split("?")[0].rstrip("/")
            if path == "/api/tags":
                self._json(200, {"models": [{"name": n, "model": n} for n in fake.ollama_models]})
            elif path in ("/v1/models", "/models"):
                self._json(
                    200,
                    {
                        "object": "list",
                        "data": [{"id": "fake-model", "object": "model", "created": 0, "owned_by": "fake"}],
                    },
                )
            else:
                self._error(404, f"no route {self.path}")

        def do_POST(self) -> None:  # noqa: N802 - stdlib name
            path = self.path.split("?")[0].rstrip("/")
            if path not in ("/v1/chat/completions", "/chat/completions"):
                self._error(404, f"no route {self.path}")
                return
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                self._error(400, "body is not JSON")
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, failure, text = fake._record(body, headers)
            if fake.delay:
                time.sleep(fake.delay)
            rejected = sorted(fake.reject_fields & set(body))
            if failure is None and rejected:
                self._json(
                    400,
                    {"error": {"message": f"Unrecognized request argument supplied: {rejected[0]}",
                               "type": "invalid_request_error", "param": rejected[0], "code": None}},
                    {"x-should-retry": "false"},
                )
                return
            if failure is not None:
                kind = "authentication_error" if status in (401, 403) else "server_error"
                self._error(status, failure, kind)
                return
            prompt_tokens = sum(_words(str(m.get("content") or "")) for m in body.get("messages") or [])
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": _words(text),
                "total_tokens": prompt_tokens + _words(text),
            }
            model = body.get("model") or "fake-model"
            if _wants_surface(body):
                self._surface(body, model, text, usage)
                return
            if body.get("stream"):
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                self._stream(model, text, usage if include_usage else None)
            else:
                self._json(
                    200,
                    {
                        "id": "chatcmpl-fake",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": model,
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": text},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": usage,
                    },
                )

        def _surface(self, body: dict[str, Any], model: str, text: str, usage: dict[str, int]) -> None:
            """Answer n choices, tool calls, json_schema and logprobs, streamed or not."""
            choices = _surface_choices(body, text)
            if not body.get("stream"):
                created = int(time.time())
                self._json(200, {"id": "chatcmpl-fake", "object": "chat.completion", "created": created,
                                 "model": model, "choices": choices, "usage": usage,
                                 "system_fingerprint": "fp_fake"})
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                    "model": model}

            def send(data: str) -> None:
                self.wfile.write(f"data: {data}\n\n".encode())
                self.wfile.flush()

            for choice in choices:
                message = choice["message"]
                delta: dict[str, Any] = {"role": "assistant", "content": message["content"]}
                if message.get("tool_calls"):
                    delta["tool_calls"] = [dict(c, index=i) for i, c in enumerate(message["tool_calls"])]
                first = {"index": choice["index"], "delta": delta, "finish_reason": None,
                         "logprobs": choice.get("logprobs")}
                send(json.dumps(base | {"choices": [first]}))
                last = {"index": choice["index"], "delta": {}, "finish_reason": choice["finish_reason"]}
                send(json.dumps(base | {"choices": [last]}))
            if (body.get("stream_options") or {}).get("include_usage"):
                send(json.dumps(base | {"choices": [], "usage": usage}))
            send("[DONE]")

        def _stream(self, model: str, text: str, usage: dict[str, int] | None) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            base = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
            }
            extra = {"usage": None} if usage is not None else {}

            def send(payload: dict[str, Any] | str) -> None:
                data = payload if isinstance(payload, str) else json.dumps(payload)
                self.wfile.write(f"data: {data}\n\n".encode())
                self.wfile.flush()

            send(
                {
                    **base,
                    **extra,
                    "choices": [
                        {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                    ],
                }
            )
            for piece in _chunks(text):
                send(
                    {
                        **base,
                        **extra,
                        "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
                    }
                )
            send({**base, **extra, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            if usage is not None:
                send({**base, "choices": [], "usage": usage})
            send("[DONE]")

    return Handler


# ---------------------------------------------------------------------------------------------------
# Fake Hugging Face Hub
# ---------------------------------------------------------------------------------------------------


class FakeHub:
    """A loopback stand-in for the Hugging Face Hub serving local folders as model repos.

    Point ``HF_ENDPOINT`` at ``url`` (with ``HF_HUB_OFFLINE=0``). Serves what ``snapshot_download``
    asks for: repo info, the file tree, and HEAD/GET on ``/{repo}/resolve/{revision}/{file}``.
    ``requests`` records ``"METHOD path"`` for every call.
    """

    def __init__(self, repos: dict[str, Path]) -> None:
        self.repos = {repo_id: Path(folder) for repo_id, folder in repos.items()}
        self.requests: list[str] = []
        self._server: ThreadingHTTPServer | None = None

    def __enter__(self) -> FakeHub:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_hub_handler(self))
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-hub", daemon=True
        ).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        assert self._server is not None, "FakeHub is not running"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @staticmethod
    def commit(repo_id: str) -> str:
        """The (fixed) 40-hex commit id of a repo."""
        return hashlib.sha1(repo_id.encode()).hexdigest()

    def files(self, repo_id: str) -> list[str]:
        root = self.repos[repo_id]
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _make_hub_handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    info_re = re.compile(r"^/api/models/(?P<repo>[^/]+(?:/[^/]+)?)(?:/revision/(?P<rev>[^/]+))?$")
    tree_re = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+|[^/]+)/tree/(?P<rev>[^/]+)$")
    file_re = re.compile(r"^/(?P<repo>[^/]+/[^/]+|[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")

    class Handler(BaseHTTPRequestHandler):
        server_version = "FakeHub/1.0"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            pass

        def _send(self, status: int, body: bytes, headers: dict[str, str], *, head: bool = False) -> None:
            self.send_response(status)
            for name, value in {"Content-Length": str(len(body)), **headers}.items():
                self.send_header(name, value)
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _not_found(self, code: str, head: bool = False) -> None:
            body = json.dumps({"error": f"{code}: {self.path}"}).encode()
            self._send(
                404,
                body,
                {"Content-Type": "application/json", "X-Error-Code": code, "X-Error-Message": code},
                head=head,
            )

        def _route(self, head: bool) -> None:
            path = urllib.parse.unquote(self.path.split("?")[0])
            hub.requests.append(f"{self.command} {path}")
            if (m := tree_re.match(path)) and m["repo"] in hub.repos:
                root = hub.repos[m["repo"]]
                entries = [
                    {
                        "type": "file",
                        "path": f,
                        "size": (root / f).stat().st_size,
                        "oid": _git_blob_id((root / f).read_bytes()),
                    }
                    for f in hub.files(m["repo"])
                ]
                self._send(200, json.dumps(entries).encode(), {"Content-Type": "application/json"}, head=head)
            elif (m := info_re.match(path)) and m["repo"] in hub.repos:
                info = {
                    "id": m["repo"],
                    "modelId": m["repo"],
                    "sha": hub.commit(m["repo"]),
                    "private": False,
                    "siblings": [{"rfilename": f} for f in hub.files(m["repo"])],
                }
                self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"}, head=head)
            elif (m := file_re.match(path)) and m["repo"] in hub.repos:
                file = hub.repos[m["repo"]] / m["path"]
                if not file.is_file():
                    self._not_found("EntryNotFound", head)
                    return
                data = file.read_bytes()
                self._send(
                    200,
                    data,
                    {
                        "Content-Type": "application/octet-stream",
                        "X-Repo-Commit": hub.commit(m["repo"]),
                        "ETag": f'"{_git_blob_id(data)}"',
                    },
                    head=head,
                )
            else:
                self._not_found("RepoNotFound", head)

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            self._route(head=False)

        def do_HEAD(self) -> None:  # noqa: N802 - stdlib name
            self._route(head=True)

    return Handler


# ---------------------------------------------------------------------------------------------------
# Tiny random causal LM
# ---------------------------------------------------------------------------------------------------

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{ '<|im_start|>assistant\n' }}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{ '\n' }}"
    "{%- else -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)

_CORPUS = """\
The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step.
Please write a short poem about the sea. Sure, here is a short poem about the sea and the sky.
Summarise this email in one sentence. The meeting moved to Thursday at three in the afternoon.
Translate hello world into French: bonjour le monde. Thank you, that was perfect, good one!
Explain recursion simply: a function that calls itself on a smaller problem until it reaches a base case.
What is the capital of France? Paris is the capital of France. Rate this answer from one to five stars.
def add(a, b):\n    return a + b\nprint(add(2, 3))  # 5
Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 2024. Punctuation: , . ; : ! ? ( ) [ ] { } " ' - _ / @ # %.
You are a helpful assistant. Keep answers short, friendly and accurate. Try again with more detail.
"""

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]


def build_tiny_model(out_dir: Path, *, vocab_size: int = 512, seed: int = 0) -> Path:
    """Save a tiny random-weight Llama with a trained byte-level BPE chat tokenizer into ``out_dir``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator([_CORPUS] * 4, trainer=trainer)

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        unk_token=None,
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out_dir)

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=128,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out_dir)
    return out_dir
