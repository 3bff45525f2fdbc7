"""Adapters without training: publishing and lineage, switching and retiring, domain routing,
forgetting (data, demo links, lessons, judge, taint), the vLLM backend with runtime LoRA loading
against a loopback fake, and the train/adapter/forget commands."""

from __future__ import annotations

import json
import struct
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from minetune.app.forget import forget
from minetune.cli import app
from minetune.config import Settings, load_settings
from minetune.errors import MinetuneError, ModelError, NotFoundError
from minetune.models import parse_spec, resolve_model
from minetune.store import Store
from minetune.store import adapters as adapters_db
from minetune.store import training as jobs_db
from minetune.store.imports import NewAttempt, NewConversation, NewFeedback, NewTurn, write_import
from minetune.store.schema import Adapter, Attempt
from minetune.train import adapters
from minetune.train.base import BaseModel, base_from_spec, check_adapter_dir, resolve_base
from minetune.train.config import AdapterError, TrainConfig, TrainingError
from minetune.train.examples import Selection, examples_for

SYSTEM = "You are terse."


@pytest.fixture
def settings() -> Settings:
    return load_settings()


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    s = Store.open(settings)
    yield s
    s.close()


def fake_adapter_dir(path: Path, rank: int = 4) -> Path:
    """A directory that passes the adapter checks (config + a complete safetensors file); no torch."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": rank}))
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    (path / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    return path


def add_turn(store: Store, conv: int, question: str, answers: list[tuple[str, int]]) -> list[int]:
    turn = store.add_turn(conv, question)
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    ids = []
    for response, stars in answers:
        a = store.add_attempt(
            turn.id, model_spec="hf:x", messages=messages, response=response, latency_ms=1.0
        )
        store.add_feedback(a.id, "explicit", stars)
        ids.append(a.id)
    return ids


def publish(
    store: Store,
    settings: Settings,
    attempt_ids: list[int],
    *,
    program: str = "p",
    parent: int | None = None,
    domain: str = "general",
    base: str = "/models/base",
    activate: bool = True,
) -> Adapter:
    """Record an adapter the way a finished run does, with fake files."""
    root = settings.home / "adapters" / program

    def place(adapter_id: int) -> str:
        return str(fake_adapter_dir(root / str(adapter_id)))

    adapter, _ = adapters_db.publish_adapter(
        store,
        program,
        place=place,
        serve_spec=BaseModel(base).spec,
        method="sft",
        base_model=base,
        parent_id=parent,
        domain=domain,
        example_attempt_ids=attempt_ids,
        activate=activate,
    )
    return adapter


@pytest.fixture
def program(store: Store) -> int:
    store.create_program("p", SYSTEM, "hf:/models/base")
    return store.start_conversation("p").id


# -- publishing, lineage, switching ----------------------------------------------------------------


def test_publishing_records_lineage_and_a_version_that_serves_it(
    database_url: str, store: Store, settings: Settings, program: int
) -> None:
    a_ids = add_turn(store, program, "q1", [("bad", 1), ("good", 5)])
    b_ids = add_turn(store, program, "q2", [("fine", 5)])
    job = jobs_db.create_job(
        store, "p", kind="local", method="sft", base_model="/models/base", status="running"
    )
    root = settings.home / "adapters" / "p"
    first, version = adapters_db.publish_adapter(
        store,
        "p",
        place=lambda i: str(fake_adapter_dir(root / str(i))),
        serve_spec=BaseModel("/models/base").spec,
        method="sft",
        base_model="/models/base",
        job_id=job.id,
        example_attempt_ids=a_ids,
    )
    assert first.path == str(root / str(first.id)) and version.adapter == first.path
    assert version.model_spec == f"hf:/models/base?adapter={first.path}"
    assert version.sources == {
        "adapter": first.id,
        "training_job": job.id,
        "method": "sft",
        "base_model": "/models/base",
        "parent_adapter": None,
        "examples": 2,
    }
    done = jobs_db.get_job(store, job.id)
    assert (
        done.status == "succeeded" and done.result_model == first.path and done.metrics["adapter"] == first.id
    )
    child = publish(store, settings, b_ids, parent=first.id)
    assert child.example_attempt_ids == b_ids and child.lineage_attempt_ids == sorted(a_ids + b_ids)
    assert adapters_db.active_adapter(store, "p").id == child.id  # type: ignore[union-attr]
    # A failure while placing the files records nothing.
    before = store.row_counts()

    def broken(_: int) -> str:
        raise OSError("disk full")

    with pytest.raises(OSError):
        adapters_db.publish_adapter(
            store,
            "p",
            place=broken,
            serve_spec=lambda p: None,
            method="sft",
            base_model="/m",
            example_attempt_ids=[],
        )
    assert store.row_counts() == before


def test_switch_by_id_domain_and_base_and_retire(
    database_url: str, store: Store, settings: Settings, program: int
) -> None:
    ids = add_turn(store, program, "q", [("a", 5)])
    general = publish(store, settings, ids)
    work = publish(store, settings, ids, domain="work", activate=False)
    assert store.active_version("p").adapter == general.path
    views = adapters.list_adapters(store, "p")
    assert [(v.adapter.id, v.active) for v in views] == [(general.id, True), (work.id, False)]

    v = adapters.switch(store, settings, "p", "work")
    assert v.adapter == work.path and v.model_spec == f"hf:/models/base?adapter={work.path}"
    assert v.note == f"switch to adapter {work.id} (work)"
    v = adapters.switch(store, settings, "p", "base")
    assert v.adapter is None and v.model_spec == "hf:/models/base"
    v = adapters.switch(store, settings, "p", general.id)
    assert v.adapter == general.path
    with pytest.raises(TrainingError, match="no ready adapter for domain 'travel'"):
        adapters.switch(store, settings, "p", "travel")
    with pytest.raises(NotFoundError, match="No adapter with id 999"):
        adapters.switch(store, settings, "p", 999)

    with pytest.raises(TrainingError, match="is active; switch to another first"):
        adapters.retire(store, settings, "p", general.id)
    assert adapters.retire(store, settings, "p", work.id).status == "retired"
    with pytest.raises(TrainingError, match="retired; it cannot be switched to"):
        adapters.switch(store, settings, "p", work.id)
    adapters.retire(store, settings, "p", general.id, force=True)
    assert store.active_version("p").adapter is None  # fell back to the base model
    assert adapters.list_adapters(store, "p") == []
    assert len(adapters.list_adapters(store, "p", include_retired=True)) == 2


def test_a_vllm_program_keeps_serving_through_vllm(store: Store, settings: Settings) -> None:
    store.create_program("v", SYSTEM, "vllm:/models/base@http://127.0.0.1:9/v1")
    conv = store.start_conversation("v").id
    ids = add_turn(store, conv, "q", [("a", 5)])
    adapter = publish(store, settings, ids, program="v", activate=False)
    version = adapters.switch(store, settings, "v", adapter.id)
    assert version.model_spec == f"vllm:/models/base@http://127.0.0.1:9/v1?adapter={adapter.path}"


def test_spec_with_adapter() -> None:
    assert adapters.spec_with_adapter("hf:/m", "/a/1") == "hf:/m?adapter=/a/1"
    assert adapters.spec_with_adapter("hf:/m?adapter=/a/1", "/a/2") == "hf:/m?adapter=/a/2"
    assert adapters.spec_with_adapter("hf:/m?adapter=/a/1", None) == "hf:/m"
    assert adapters.spec_with_adapter("vllm:m@http://h:1/v1", "/a") == "vllm:m@http://h:1/v1?adapter=/a"
    assert adapters.spec_with_adapter("ollama:llama3.2", None) == "ollama:llama3.2"
    with pytest.raises(TrainingError, match="needs a local base model"):
        adapters.spec_with_adapter("openai:gpt-4o-mini", "/a")


def test_adapter_directory_checks() -> None:
    with pytest.raises(AdapterError, match="does not exist"):
        check_adapter_dir("/nonexistent/adapter")


def test_adapter_directory_checks_files(tmp_path: Path) -> None:
    good = fake_adapter_dir(tmp_path / "good")
    assert check_adapter_dir(good) == good
    (good / "adapter_model.safetensors").write_bytes(b"\x10\x00")
    with pytest.raises(AdapterError, match="weights .* are corrupt"):
        check_adapter_dir(good)
    (good / "adapter_model.safetensors").unlink()
    with pytest.raises(AdapterError, match="has no adapter_model.safetensors"):
        check_adapter_dir(good)
    (good / "adapter_config.json").write_text("[]")
    with pytest.raises(AdapterError, match="adapter_config.json is missing or invalid"):
        check_adapter_dir(good)


def test_base_models_and_settings_are_checked(store: Store, settings: Settings) -> None:
    assert base_from_spec("hf:/m?adapter=/a") == BaseModel("/m")
    assert base_from_spec("/some/dir") == BaseModel("/some/dir")
    assert base_from_spec("Qwen/Qwen2.5-0.5B") == BaseModel("Qwen/Qwen2.5-0.5B")
    assert base_from_spec("vllm:Qwen/Q@http://h:8000/v1?adapter=/a") == BaseModel(
        "Qwen/Q", "vllm", "http://h:8000/v1"
    )
    with pytest.raises(TrainingError, match="needs a local base model"):
        base_from_spec("ollama:llama3.2")
    with pytest.raises(TrainingError, match="No base model to train on"):
        resolve_base(store, settings, "default")
    with pytest.raises(TrainingError, match="KTO needs a batch size of at least 2"):
        TrainConfig(batch_size=1).check("kto")
    with pytest.raises(TrainingError, match="rank must be at least 1; the learning rate must be above 0"):
        TrainConfig(learning_rate=0.0, rank=0).check("sft")
    assert TrainConfig().lr("sft") == 2e-4 and TrainConfig().lr("dpo") == 5e-5
    assert TrainConfig.from_dict({"rank": 4, "unknown": 1, "kind": "x"}).rank == 4


def test_selection_picks_examples_by_conversation_and_date(store: Store, program: int) -> None:
    for i in range(3):
        add_turn(store, program, f"old {i}", [("x", 5)])
    other = store.start_conversation("p").id
    for i in range(3):
        add_turn(store, other, f"new {i}", [("y", 5)])
    found = examples_for(store, "p", "sft", selection=Selection(conversations=(other,)))
    assert {ex.turn_id for ex in found.train + found.valid} == set(store.conversation_turn_ids(other))
    future = datetime.now(UTC) + timedelta(days=1)
    assert examples_for(store, "p", "sft", selection=Selection(since=future)).train == []
    everything = examples_for(store, "p", "sft", selection=Selection(until=future))
    assert len(everything.train + everything.valid) == 6
    assert Selection.from_dict(Selection(since=future, conversations=(3,)).to_dict()) == Selection(
        since=future, conversations=(3,)
    )


# -- forgetting ----------------------------------------------------------------------------------------


def test_forgetting_a_turn_deletes_derived_links_and_taints_descendants(
    database_url: str, store: Store, settings: Settings, program: int
) -> None:
    keep = add_turn(store, program, "keep", [("fine", 5)])
    gone = add_turn(store, program, "forget me", [("secret", 2), ("secret answer", 5)])
    other = add_turn(store, program, "other", [("ok", 5)])
    parent = publish(store, settings, gone + keep)
    child = publish(store, settings, other, parent=parent.id)  # inherits the forgotten attempts
    unrelated = publish(store, settings, keep, activate=False)
    # Another attempt showed the forgotten answer as a demo; a lesson came from its critique;
    # the personal judge had counted its rating.
    with store.db.transaction() as s:
        s.get(Attempt, other[0]).demo_attempt_ids = [gone[1], keep[0]]
    feedback_id = store.attempt(gone[0]).feedback[0].id
    store.change_lessons(
        "p", add=[{"text": "Never share secrets.", "origin": "reflection", "feedback_id": feedback_id}]
    )
    store.change_lessons("p", add=[{"text": "Be brief.", "origin": "manual"}])
    store.save_judge("p", "minilm", 3, b"state", {"added": {str(gone[1]): 5, str(keep[0]): 5}})
    version_before = store.active_version("p").number

    turn_id = store.attempt(gone[0]).turn_id
    result = forget(store, turns=[turn_id])
    assert (result.turns, result.attempts, result.feedback, result.conversations) == (1, 2, 2, 0)
    assert result.tainted_adapters == [parent.id, child.id]
    assert result.active_tainted == {"p": child.id}
    assert result.demo_links_removed == 1
    assert store.attempt(other[0]).demo_attempt_ids == [keep[0]]
    assert len(result.retired_lessons) == 1 and result.new_versions == {"p": version_before + 1}
    active = store.active_version("p")
    assert [lesson["text"] for lesson in active.lessons] == ["Be brief."]
    assert active.adapter == child.path  # the adapter stays until it is retrained
    assert result.judges_reset == ["p"] and store.judge_state("p") is None
    assert adapters_db.get_adapter(store, unrelated.id).tainted_at is None
    assert [a.id for a, _ in adapters_db.tainted_adapters(store, "p")] == [parent.id, child.id]
    assert store.existing_attempt_ids(gone) == set()
    with pytest.raises(NotFoundError, match=f"No turn with id {turn_id}"):
        forget(store, turns=[turn_id])
    with pytest.raises(MinetuneError, match="Say what to forget"):
        forget(store)


def test_forgetting_a_conversation_everything_before_a_date_and_all(
    database_url: str, store: Store, settings: Settings, program: int
) -> None:
    first = add_turn(store, program, "in conv 1", [("a", 5)])
    old = datetime(2020, 1, 1, tzinfo=UTC)

    def imported(text: str, when: datetime) -> NewConversation:
        attempt = NewAttempt(
            text, [{"role": "user", "content": text}], "import", when, [NewFeedback(stars=5)]
        )
        return NewConversation([NewTurn(text, [attempt], when)], external_id=text, created_at=when)

    write_import(
        store,
        "p",
        [imported("ancient", old), imported("recent", datetime.now(UTC))],
        sha256="f" * 64,
        path="x.jsonl",
        format="openai-chat",
        on_skip=lambda *_: None,
    )
    adapter = publish(store, settings, first)
    result = forget(store, conversations=[program])
    assert (result.conversations, result.turns) == (1, 1) and result.tainted_adapters == [adapter.id]
    result = forget(store, before=datetime(2021, 1, 1, tzinfo=UTC), program="p")
    assert (result.turns, result.conversations) == (1, 1)  # the ancient one, and its emptied conversation
    assert [m for _, _, _, m, *_ in store.feedback_rows("p")] == ["recent"]
    result = forget(store, everything=True, program="p")
    assert (result.turns, result.imports) == (1, 1)
    assert store.stats("p")["turns"] == 0
    with pytest.raises(NotFoundError):
        forget(store, conversations=[program])


def test_forgetting_never_touches_another_users_data(database_url: str, settings: Settings) -> None:
    alice, bob = Store.open(settings, "alice"), Store.open(settings, "bob")
    try:
        conv = bob.start_conversation().id
        add_turn(bob, conv, "bob's", [("x", 5)])
        turn_id = bob.conversation_turn_ids(conv)[0]
        with pytest.raises(NotFoundError):
            forget(alice, turns=[turn_id])
        forget(alice, everything=True)
        assert bob.conversation_turn_ids(conv) == [turn_id]
    finally:
        alice.close()
        bob.close()


def test_parse_date() -> None:
    assert adapters.parse_date("2024-05-01T10:00:00+02:00") == datetime(2024, 5, 1, 8, tzinfo=UTC)
    with pytest.raises(TrainingError, match="Not a date"):
        adapters.parse_date("yesterday")


# -- routing -------------------------------------------------------------------------------------------


class WordEmbedder:
    """A deterministic bag-of-words embedder (no model download)."""

    name = "words"
    dim = 64

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                out[i, sum(map(ord, word.strip("?.,!"))) % self.dim] += 1.0
            norm = np.linalg.norm(out[i])
            if norm:
                out[i] /= norm
        return out


def _domains(store: Store, settings: Settings, program: int) -> tuple[Adapter, Adapter]:
    work_ids = [
        i
        for q in ("quarterly sales report", "sales meeting agenda", "report for the board")
        for i in add_turn(store, program, q, [("ok", 5)])
    ]
    home_ids = [
        i
        for q in ("recipe for pasta dinner", "pasta sauce recipe", "dinner for kids")
        for i in add_turn(store, program, q, [("ok", 5)])
    ]
    return publish(store, settings, work_ids, domain="work"), publish(
        store, settings, home_ids, domain="home"
    )


def test_the_router_picks_the_closest_domain_or_the_base_model(
    store: Store, settings: Settings, program: int
) -> None:
    work, home = _domains(store, settings, program)
    router = adapters.Router(store, settings, "p", WordEmbedder())
    assert set(router.centroids) == {"work", "home"}
    decision = router.route("the sales report")
    assert decision.adapter is not None and decision.adapter.id == work.id and decision.domain == "work"
    assert router.route("a pasta recipe").domain == "home"
    fallback = router.route("quantum chromodynamics lattice")
    assert fallback.adapter is None and fallback.similarity < 0.35
    # Embeddings of the domains' turns are stored once and reused.
    turns = adapters_db.attempt_turns(store, work.example_attempt_ids)
    assert set(store.turn_embeddings(sorted(set(turns.values())), "words")) == set(turns.values())
    # Tainted adapters are never routed to.
    forget(store, turns=[sorted(set(turns.values()))[0]])
    assert adapters.route(store, settings, "p", "the sales report", embedder=WordEmbedder()).domain != "work"


# -- vLLM ----------------------------------------------------------------------------------------------


class FakeVLLM:
    """A loopback stand-in for a vLLM server with runtime LoRA updating: /v1/load_lora_adapter,
    /v1/unload_lora_adapter and /v1/chat/completions (which knows the base model and loaded adapters)."""

    def __init__(self, base_model: str = "base-model", runtime_lora: bool = True) -> None:
        self.base_model = base_model
        self.runtime_lora = runtime_lora
        self.adapters: dict[str, str] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeVLLM:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def restart(self) -> None:
        """Forget every runtime-loaded adapter, as a restarted server does."""
        self.adapters.clear()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def _send(self, status: int, payload: Any, text: bool = False) -> None:
                data = (payload if text else json.dumps(payload)).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain" if text else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, message: str, kind: str) -> None:
                self._send(
                    status,
                    {"object": "error", "message": message, "type": kind, "param": None, "code": status},
                )

            def _stream(self, model: str, text: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for piece in (text[: len(text) // 2], text[len(text) // 2 :]):
                    chunk = {
                        "id": "x",
                        "object": "chat.completion.chunk",
                        "model": model,
                        "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
                    }
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                fake.calls.append((self.path, body))
                if (
                    self.path in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter")
                    and not fake.runtime_lora
                ):
                    self._send(404, {"detail": "Not Found"})
                elif self.path == "/v1/load_lora_adapter":
                    name, path = body.get("lora_name"), body.get("lora_path")
                    if name in fake.adapters:
                        self._error(
                            400, f"The lora adapter '{name}' has already been loaded.", "InvalidUserInput"
                        )
                    elif not path or not Path(path, "adapter_config.json").is_file():
                        self._error(404, f"No adapter found for {path}", "NotFoundError")
                    else:
                        fake.adapters[name] = path
                        self._send(200, f"Success: LoRA adapter '{name}' added successfully.", text=True)
                elif self.path == "/v1/unload_lora_adapter":
                    name = body.get("lora_name")
                    if fake.adapters.pop(name, None) is None:
                        self._error(404, f"The lora adapter '{name}' cannot be found.", "NotFoundError")
                    else:
                        self._send(200, f"Success: LoRA adapter '{name}' removed successfully.", text=True)
                elif self.path == "/v1/chat/completions":
                    model = body.get("model")
                    if model != fake.base_model and model not in fake.adapters:
                        self._error(404, f"The model `{model}` does not exist.", "NotFoundError")
                        return
                    via = f"adapter {fake.adapters[model]}" if model in fake.adapters else "base"
                    if body.get("stream"):
                        self._stream(model, f"answer via {via}")
                        return
                    self._send(
                        200,
                        {
                            "id": "x",
                            "object": "chat.completion",
                            "model": model,
                            "choices": [
                                {
                                    "index": 0,
                                    "message": {"role": "assistant", "content": f"answer via {via}"},
                                    "finish_reason": "stop",
                                }
                            ],
                            "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
                        },
                    )
                else:
                    self._send(404, {"detail": "Not Found"})

        return Handler


MESSAGES = [{"role": "user", "content": "hi"}]


def test_vllm_specs_parse() -> None:
    spec = parse_spec("vllm:Qwen/Qwen2.5-0.5B@http://gpu:8000/v1?adapter=/data/adapters/p/3")
    assert (spec.backend, spec.model, spec.base_url, spec.adapter) == (
        "vllm",
        "Qwen/Qwen2.5-0.5B",
        "http://gpu:8000/v1",
        "/data/adapters/p/3",
    )
    assert spec.raw == "vllm:Qwen/Qwen2.5-0.5B@http://gpu:8000/v1?adapter=/data/adapters/p/3"
    assert parse_spec("vllm:m@http://gpu:8000/").base_url == "http://gpu:8000"
    with pytest.raises(ModelError, match="missing base URL"):
        parse_spec("vllm:m")
    with pytest.raises(ModelError, match="empty adapter directory"):
        parse_spec("vllm:m@http://h:1/v1?adapter=")


def test_vllm_loads_the_adapter_once_and_answers_through_it(tmp_path: Path) -> None:
    adapter = fake_adapter_dir(tmp_path / "adapters" / "alice" / "p" / "7")
    with FakeVLLM() as server:
        base = resolve_model(load_settings(), f"vllm:base-model@{server.base_url}")
        assert base.complete(MESSAGES).text == "answer via base"  # type: ignore[arg-type]
        model = resolve_model(load_settings(), f"vllm:base-model@{server.base_url}?adapter={adapter}")
        name = model.lora_name  # type: ignore[attr-defined]
        assert name.startswith("minetune-alice-p-7-")
        assert model.complete(MESSAGES).text == f"answer via adapter {adapter}"  # type: ignore[arg-type]
        assert "".join(model.stream(MESSAGES)) == f"answer via adapter {adapter}"  # type: ignore[arg-type]
        loads = [b for p, b in server.calls if p == "/v1/load_lora_adapter"]
        assert loads == [{"lora_name": name, "lora_path": str(adapter)}]
        # Another process already loaded it: "already loaded" is fine.
        again = resolve_model(load_settings(), f"vllm:base-model@{server.base_url}?adapter={adapter}")
        assert again.load_adapter() is False  # type: ignore[attr-defined]
        # The server restarted and lost it: loaded again and the request retried.
        server.restart()
        assert model.complete(MESSAGES).text == f"answer via adapter {adapter}"  # type: ignore[arg-type]
        assert len([p for p, _ in server.calls if p == "/v1/load_lora_adapter"]) == 3
        assert model.unload_adapter() is True  # type: ignore[attr-defined]
        assert model.unload_adapter() is False  # type: ignore[attr-defined]
        assert server.adapters == {}


def test_one_vllm_serves_every_users_adapters_under_names_that_never_collide(tmp_path: Path) -> None:
    """Two users' programs of the same name, adapters in one shared adapters_dir, one vLLM."""
    from minetune.train.base import adapters_root

    settings = load_settings(adapters_dir=tmp_path / "shared")
    dirs = {user: fake_adapter_dir(adapters_root(settings, "notes", user) / "1") for user in ("alice", "bob")}
    assert all(str(d).startswith(str(tmp_path / "shared")) for d in dirs.values())
    with FakeVLLM() as server:
        models = {
            user: resolve_model(settings, f"vllm:base-model@{server.base_url}?adapter={d}")
            for user, d in dirs.items()
        }
        for user, model in models.items():
            assert model.complete(MESSAGES).text == f"answer via adapter {dirs[user]}"  # type: ignore[arg-type]
        loads = {b["lora_name"]: b["lora_path"] for p, b in server.calls if p == "/v1/load_lora_adapter"}
        names = {user: m.lora_name for user, m in models.items()}  # type: ignore[attr-defined]
        assert names["alice"].startswith("minetune-alice-notes-1-")
        assert names["bob"].startswith("minetune-bob-notes-1-")
        assert loads == {names[u]: str(dirs[u]) for u in dirs}  # one adapter each, never the other's
        chats = [b["model"] for p, b in server.calls if p == "/v1/chat/completions"]
        assert chats == [names["alice"], names["bob"]]


def test_vllm_errors_say_what_to_do(tmp_path: Path) -> None:
    adapter = fake_adapter_dir(tmp_path / "a")
    with FakeVLLM(runtime_lora=False) as server:
        model = resolve_model(load_settings(), f"vllm:base-model@{server.base_url}?adapter={adapter}")
        with pytest.raises(ModelError, match="VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"):
            model.complete(MESSAGES)  # type: ignore[arg-type]
    with FakeVLLM() as server:
        missing = resolve_model(
            load_settings(), f"vllm:base-model@{server.base_url}?adapter={tmp_path / 'nope'}"
        )
        with pytest.raises(
            ModelError, match="could not load the LoRA adapter .* readable by the vLLM server"
        ):
            missing.complete(MESSAGES)  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="Cannot reach"):
        resolve_model(load_settings(), f"vllm:m@http://127.0.0.1:9/v1?adapter={adapter}").complete(MESSAGES)  # type: ignore[arg-type]


def test_routed_model_serves_each_domain_through_vllm(store: Store, settings: Settings, program: int) -> None:
    work, home = _domains(store, settings, program)
    with FakeVLLM() as server:
        router = adapters.Router(store, settings, "p", WordEmbedder())
        model = adapters.RoutedModel(router, BaseModel("base-model", "vllm", server.base_url), settings)
        ask = [{"role": "user", "content": "agenda for the sales meeting"}]
        assert model.complete(ask).text == f"answer via adapter {work.path}"  # type: ignore[arg-type]
        assert model.last_route is not None and model.last_route.domain == "work"
        ask = [{"role": "user", "content": "pasta for dinner"}]
        assert model.complete(ask).text == f"answer via adapter {home.path}"  # type: ignore[arg-type]
        ask = [{"role": "user", "content": "xylophone zebra"}]
        assert model.complete(ask).text == "answer via base"  # type: ignore[arg-type]


# -- commands ------------------------------------------------------------------------------------------


def cli(*args: str, stdin: str | None = None) -> Any:
    result = CliRunner().invoke(app, list(args), input=stdin, catch_exceptions=False)
    return result


def test_adapter_and_forget_commands(store: Store, settings: Settings, program: int) -> None:
    ids = add_turn(store, program, "q", [("a", 5)])
    general = publish(store, settings, ids)
    work = publish(store, settings, ids, domain="work", activate=False)
    listed = json.loads(cli("adapter", "list", "--json").output)
    assert [(a["id"], a["domain"], a["active"], a["tainted"]) for a in listed] == [
        (general.id, "general", True, False),
        (work.id, "work", False, False),
    ]
    result = cli("adapter", "switch", "work", "-p", "p")
    assert result.exit_code == 0 and f"adapter={work.path}" in result.output
    assert "retired" in cli("adapter", "retire", str(general.id), "-p", "p").output
    result = cli("forget", str(store.attempt(ids[0]).turn_id))
    text = " ".join(result.output.split())
    assert result.exit_code == 0
    assert "Forgot 1 turn(s), 1 answer(s), 1 rating(s) in 1 removed conversation(s)." in text
    assert f"Tainted adapter(s) {general.id}, {work.id}" in text and "--retrain-tainted" in text
    listed = json.loads(cli("adapter", "list", "--json", "--all").output)
    assert all(a["tainted"] for a in listed)
    result = cli("forget", "--all", stdin="n\n")
    assert "Nothing forgotten." in result.output
    assert cli("forget", "--all", "--yes").exit_code == 0
    assert "No local training jobs yet" in cli("train", "jobs").output
