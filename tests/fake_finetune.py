"""A loopback fake of the OpenAI fine-tuning API: /v1/files and /v1/fine_tuning/jobs.

It checks the bearer key, validates every uploaded JSONL file against the documented layouts
(chat SFT ``{"messages": [...]}`` and preference/DPO ``{"input": {"messages": [...]},
"preferred_output": [...], "non_preferred_output": [...]}``), rejects a job whose method does not
match its file, and records everything. Jobs follow a script set with :meth:`FakeFineTune.script`:
``success`` or ``failure`` after N status polls, or ``hang`` (runs until cancelled).
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import threading
import time
import urllib.parse
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TERMINAL = {"succeeded", "failed", "cancelled"}
CHAT_ROLES = {"system", "user", "assistant"}
MIN_TRAINING_EXAMPLES = 10


class FormatError(ValueError):
    """An uploaded file does not match the documented layout."""


@dataclass
class Upload:
    id: str
    filename: str
    purpose: str
    format: str  # "chat" or "preference"
    rows: list[dict[str, Any]]
    raw: bytes


@dataclass
class Script:
    outcome: str = "success"  # success | failure | hang
    polls: int = 2  # status polls before the outcome
    steps: int = 4  # metrics events while running
    error: dict[str, Any] = field(
        default_factory=lambda: {
            "code": "invalid_training_file",
            "message": "The job failed due to an invalid training file.",
            "param": "training_file",
        }
    )


# -- validation of the documented layouts ---------------------------------------------------------


def _check_message(msg: Any, where: str, roles: set[str], *, weight_ok: bool = False) -> dict[str, Any]:
    if not isinstance(msg, dict):
        raise FormatError(f"{where}: each message must be an object")
    allowed = {"role", "content", "name"} | ({"weight"} if weight_ok else set())
    extra = set(msg) - allowed
    if extra:
        raise FormatError(f"{where}: unexpected keys {sorted(extra)}")
    if msg.get("role") not in roles:
        raise FormatError(f"{where}: role must be one of {sorted(roles)}, got {msg.get('role')!r}")
    if not isinstance(msg.get("content"), str):
        raise FormatError(f"{where}: content must be a string")
    if "weight" in msg and (msg["role"] != "assistant" or msg["weight"] not in (0, 1)):
        raise FormatError(f"{where}: weight is 0 or 1, on assistant messages only")
    return msg


def _check_conversation(messages: Any, where: str, *, weight_ok: bool) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise FormatError(f"{where}: messages must be a non-empty list")
    checked = [
        _check_message(m, f"{where}[{i}]", CHAT_ROLES, weight_ok=weight_ok) for i, m in enumerate(messages)
    ]
    if any(m["role"] == "system" for m in checked[1:]):
        raise FormatError(f"{where}: a system message may only come first")
    turns = [m["role"] for m in checked if m["role"] != "system"]
    if any(a == b for a, b in itertools.pairwise(turns)) or (turns and turns[0] != "user"):
        raise FormatError(f"{where}: user and assistant messages must alternate, starting with user")
    return checked


def validate_chat_row(row: Any, where: str) -> None:
    """OpenAI supervised chat format."""
    if not isinstance(row, dict) or set(row) - {"messages", "tools", "parallel_tool_calls"}:
        raise FormatError(f"{where}: a chat example is {{'messages': [...]}} (got keys {sorted(row)})")
    messages = _check_conversation(row.get("messages"), f"{where}.messages", weight_ok=True)
    if messages[-1]["role"] != "assistant":
        raise FormatError(f"{where}: the last message must be the assistant's answer")


def validate_preference_row(row: Any, where: str) -> None:
    """OpenAI preference (DPO) format."""
    expected = {"input", "preferred_output", "non_preferred_output"}
    if not isinstance(row, dict) or set(row) != expected:
        raise FormatError(f"{where}: a preference example has exactly the keys {sorted(expected)}")
    inp = row["input"]
    if (
        not isinstance(inp, dict)
        or "messages" not in inp
        or set(inp) - {"messages", "tools", "parallel_tool_calls"}
    ):
        raise FormatError(f"{where}.input must be {{'messages': [...]}}")
    messages = _check_conversation(inp["messages"], f"{where}.input.messages", weight_ok=False)
    if messages[-1]["role"] != "user":
        raise FormatError(f"{where}.input.messages must end with the user message")
    for key in ("preferred_output", "non_preferred_output"):
        out = row[key]
        if not isinstance(out, list) or len(out) != 1:
            raise FormatError(f"{where}.{key} must be a list with one assistant message")
        _check_message(out[0], f"{where}.{key}[0]", {"assistant"})


def parse_jsonl(data: bytes) -> tuple[str, list[dict[str, Any]]]:
    """(format, rows) of an uploaded file, or FormatError."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"the file is not UTF-8: {exc}") from None
    lines = [line for line in text.split("\n") if line.strip()]
    if not lines:
        raise FormatError("the file has no examples")
    rows = []
    for n, line in enumerate(lines, 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise FormatError(f"line {n} is not JSON: {exc}") from None
    fmt = "preference" if isinstance(rows[0], dict) and "input" in rows[0] else "chat"
    check = validate_preference_row if fmt == "preference" else validate_chat_row
    for n, row in enumerate(rows, 1):
        check(row, f"line {n}")
    return fmt, rows


# -- the server -----------------------------------------------------------------------------------


class FakeFineTune:
    """A real HTTP server on 127.0.0.1 speaking the fine-tuning API. Use as a context manager."""

    def __init__(self, api_key: str = "sk-test-fine-tune-key") -> None:
        self.api_key = api_key
        self.uploads: list[Upload] = []
        self.deleted_files: list[str] = []  # ids removed with DELETE /v1/files/{id}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.job_events: dict[str, list[dict[str, Any]]] = {}
        self.create_bodies: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request, authorised or not
        self.auth_headers: list[str] = []
        self.fine_tunable: set[str] | None = None  # model names jobs may use (None: any)
        self._scripts: deque[Script] = deque()
        self._job_scripts: dict[str, Script] = {}
        self._polls: dict[str, int] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def __enter__(self) -> FakeFineTune:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-ft", daemon=True
        ).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "FakeFineTune is not running"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def script(self, outcome: str = "success", polls: int = 2, **kwargs: Any) -> None:
        """How the next created job ends."""
        self._scripts.append(Script(outcome, polls, **kwargs))

    # -- state changes (called with the lock held) ------------------------------------------------

    def _event(
        self,
        job_id: str,
        message: str,
        *,
        level: str = "info",
        kind: str = "message",
        data: dict[str, Any] | None = None,
    ) -> None:
        events = self.job_events.setdefault(job_id, [])
        events.append(
            {
                "object": "fine_tuning.job.event",
                "id": f"ftevent-{job_id[6:]}-{len(events) + 1:03d}",
                "created_at": int(time.time()),
                "level": level,
                "message": message,
                "data": data or {},
                "type": kind,
            }
        )

    def _advance(self, job_id: str) -> None:
        """One status poll: validating → running (with metrics) → the scripted outcome."""
        job, script = self.jobs[job_id], self._job_scripts[job_id]
        if job["status"] in TERMINAL:
            return
        self._polls[job_id] += 1
        polls = self._polls[job_id]
        if job["status"] == "validating_files":
            job["status"] = "queued"
            self._event(job_id, "Files validated, moving job to queued state")
            return
        if job["status"] == "queued":
            job["status"] = "running"
            self._event(job_id, f"Fine-tuning job started: {job_id}")
        if script.outcome == "hang" or polls < script.polls:
            step = len([e for e in self.job_events[job_id] if e["type"] == "metrics"]) + 1
            if step <= script.steps:
                loss = round(2.0 / step, 4)
                self._event(
                    job_id,
                    f"Step {step}/{script.steps}: training loss={loss}",
                    kind="metrics",
                    data={"step": step, "train_loss": loss, "total_steps": script.steps},
                )
            return
        now = int(time.time())
        job["finished_at"] = now
        if script.outcome == "success":
            for step in range(
                len([e for e in self.job_events[job_id] if e["type"] == "metrics"]) + 1, script.steps + 1
            ):
                self._event(
                    job_id,
                    f"Step {step}/{script.steps}",
                    kind="metrics",
                    data={"step": step, "train_loss": round(2.0 / step, 4), "total_steps": script.steps},
                )
            job["status"] = "succeeded"
            suffix = job.get("user_provided_suffix") or "ft"
            job["fine_tuned_model"] = f"ft:{job['model']}:fake-org:{suffix}:{job_id[-6:]}"
            job["trained_tokens"] = 1234
            self._event(job_id, f"New fine-tuned model created: {job['fine_tuned_model']}")
            self._event(job_id, "The job has successfully completed")
        else:
            job["status"] = "failed"
            job["error"] = dict(script.error)
            self._event(job_id, script.error["message"], level="error")


def _paged(items: list[dict[str, Any]], query: dict[str, list[str]]) -> dict[str, Any]:
    """Newest first, with ``after`` (an id) and ``limit`` like the real API."""
    limit = int(query.get("limit", ["20"])[0])
    after = query.get("after", [None])[0]
    ordered = list(reversed(items))
    if after is not None:
        ids = [i["id"] for i in ordered]
        ordered = ordered[ids.index(after) + 1 :] if after in ids else []
    return {"object": "list", "data": ordered[:limit], "has_more": len(ordered) > limit}


def _make_handler(fake: FakeFineTune) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "FakeFineTune/1.0"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            pass

        def _json(self, status: int, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(
            self, status: int, message: str, code: str | None = None, param: str | None = None
        ) -> None:
            self._json(
                status,
                {
                    "error": {
                        "message": message,
                        "type": "invalid_request_error",
                        "param": param,
                        "code": code,
                    }
                },
            )

        def _authorised(self) -> bool:
            header = self.headers.get("Authorization", "")
            fake.auth_headers.append(header)
            if header == f"Bearer {fake.api_key}":
                return True
            given = header.removeprefix("Bearer ")
            self._error(
                401,
                f"Incorrect API key provided: {given[:4]}{'*' * 8}. You can find your API key "
                "at https://platform.openai.com/account/api-keys.",
                "invalid_api_key",
            )
            return False

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _route(self, method: str) -> None:
            url = urllib.parse.urlsplit(self.path)
            path, query = url.path.rstrip("/"), urllib.parse.parse_qs(url.query)
            fake.requests.append((method, path))
            body = self._body() if method == "POST" else b""
            if not self._authorised():
                return
            parts = path.split("/")
            with fake._lock:
                if method == "POST" and path == "/v1/files":
                    self._upload(body)
                elif method == "DELETE" and len(parts) == 4 and parts[:3] == ["", "v1", "files"]:
                    self._delete_file(parts[3])
                elif method == "POST" and path == "/v1/fine_tuning/jobs":
                    self._create(body)
                elif method == "GET" and path == "/v1/fine_tuning/jobs":
                    self._json(200, _paged(list(fake.jobs.values()), query))
                elif len(parts) >= 5 and parts[:4] == ["", "v1", "fine_tuning", "jobs"]:
                    job_id = parts[4]
                    if job_id not in fake.jobs:
                        self._error(404, f"Could not find fine-tune: {job_id}", "fine_tune_not_found")
                    elif method == "GET" and len(parts) == 5:
                        fake._advance(job_id)
                        self._json(200, fake.jobs[job_id])
                    elif method == "GET" and parts[5:] == ["events"]:
                        self._json(200, _paged(fake.job_events.get(job_id, []), query))
                    elif method == "POST" and parts[5:] == ["cancel"]:
                        self._cancel(job_id)
                    else:
                        self._error(404, f"no route {method} {path}")
                else:
                    self._error(404, f"no route {method} {path}")

        def _upload(self, body: bytes) -> None:
            ctype = self.headers.get("Content-Type", "")
            if not ctype.startswith("multipart/form-data"):
                self._error(400, "uploads must be multipart/form-data")
                return
            message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                f"Content-Type: {ctype}\r\n\r\n".encode() + body
            )
            fields: dict[str, tuple[str | None, bytes]] = {}
            for part in message.iter_parts():
                name = part.get_param("name", header="content-disposition")
                payload = part.get_payload(decode=True) or b""
                fields[str(name)] = (part.get_filename(), payload)
            purpose = fields.get("purpose", (None, b""))[1].decode()
            if purpose != "fine-tune":
                self._error(400, f"purpose must be 'fine-tune', got {purpose!r}", param="purpose")
                return
            if "file" not in fields:
                self._error(400, "missing file", param="file")
                return
            filename, data = fields["file"]
            try:
                fmt, rows = parse_jsonl(data)
            except FormatError as exc:
                self._error(400, f"Invalid file format for fine-tuning: {exc}", "invalid_file_format", "file")
                return
            upload = Upload(
                f"file-{next(fake._ids):06d}", filename or "upload.jsonl", purpose, fmt, rows, data
            )
            fake.uploads.append(upload)
            self._json(
                200,
                {
                    "id": upload.id,
                    "object": "file",
                    "bytes": len(data),
                    "created_at": int(time.time()),
                    "filename": upload.filename,
                    "purpose": purpose,
                    "status": "processed",
                },
            )

        def _create(self, raw: bytes) -> None:
            try:
                body = json.loads(raw)
            except json.JSONDecodeError:
                self._error(400, "the body is not JSON")
                return
            fake.create_bodies.append(body)
            uploads = {u.id: u for u in fake.uploads}
            model, training = body.get("model"), body.get("training_file")
            method = body.get("method") or {"type": "supervised"}
            kind = method.get("type")
            if not isinstance(model, str) or not model:
                self._error(400, "model is required", param="model")
                return
            if fake.fine_tunable is not None and model not in fake.fine_tunable:
                self._error(
                    400,
                    f"Model {model} is not available for fine-tuning or does not exist.",
                    "model_not_available",
                    "model",
                )
                return
            if training not in uploads:
                self._error(400, f"invalid training_file: {training}", param="training_file")
                return
            validation = body.get("validation_file")
            if validation is not None and validation not in uploads:
                self._error(400, f"invalid validation_file: {validation}", param="validation_file")
                return
            if kind not in ("supervised", "dpo"):
                self._error(400, f"unsupported method type {kind!r}", param="method")
                return
            needed = "preference" if kind == "dpo" else "chat"
            for file_id in filter(None, (training, validation)):
                if uploads[file_id].format != needed:
                    self._error(
                        400,
                        f"file {file_id} is not in the {needed} format the {kind} method needs",
                        param="training_file",
                    )
                    return
            if len(uploads[training].rows) < MIN_TRAINING_EXAMPLES:
                self._error(
                    400,
                    f"Training file has {len(uploads[training].rows)} example(s), but must have "
                    f"at least {MIN_TRAINING_EXAMPLES} examples",
                    param="training_file",
                )
                return
            script = fake._scripts.popleft() if fake._scripts else Script()
            job_id = f"ftjob-{next(fake._ids):012d}"
            hyper = (method.get(kind) or {}).get("hyperparameters") or {}
            job = {
                "object": "fine_tuning.job",
                "id": job_id,
                "model": model,
                "created_at": int(time.time()),
                "finished_at": None,
                "fine_tuned_model": None,
                "organization_id": "org-fake",
                "result_files": [],
                "status": "validating_files",
                "validation_file": validation,
                "training_file": training,
                "hyperparameters": {
                    "n_epochs": hyper.get("n_epochs", "auto"),
                    "batch_size": "auto",
                    "learning_rate_multiplier": "auto",
                },
                "method": method,
                "trained_tokens": None,
                "error": None,
                "seed": 42,
                "user_provided_suffix": body.get("suffix"),
            }
            fake.jobs[job_id] = job
            fake._job_scripts[job_id] = script
            fake._polls[job_id] = 0
            fake._event(job_id, f"Created fine-tuning job: {job_id}")
            fake._event(job_id, f"Validating training file: {training}")
            self._json(200, job)

        def _cancel(self, job_id: str) -> None:
            job = fake.jobs[job_id]
            if job["status"] in TERMINAL:
                self._error(400, f"Job has already {job['status']}", "job_not_cancellable")
                return
            job["status"] = "cancelled"
            job["finished_at"] = int(time.time())
            fake._event(job_id, "Fine-tuning job cancelled")
            self._json(200, job)

        def _delete_file(self, file_id: str) -> None:
            kept = [u for u in fake.uploads if u.id != file_id]
            if len(kept) == len(fake.uploads):
                self._error(404, f"No such File object: {file_id}", "invalid_request_error")
                return
            fake.uploads[:] = kept
            fake.deleted_files.append(file_id)
            self._json(200, {"id": file_id, "object": "file", "deleted": True})

        def do_DELETE(self) -> None:  # noqa: N802 - stdlib name
            self._route("DELETE")

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            self._route("GET")

        def do_POST(self) -> None:  # noqa: N802 - stdlib name
            self._route("POST")

    return Handler
