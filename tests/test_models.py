"""Model specs, the OpenAI-compatible backend over loopback HTTP, auto-detection, and the hf backend."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fakes import FakeHub, FakeOpenAI
from minetune.config import load_settings
from minetune.errors import ModelError
from minetune.models import ChatModel, Completion, Message, ModelSpec, parse_spec, resolve_model
from minetune.models.detect import describe_detection
from minetune.models.openai_compat import OpenAICompatModel

SECRET = "sk-test-SECRET-0123456789abcdef"
MESSAGES: list[Message] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Say hi to me"},
]


def _dead_url() -> str:
    """A loopback URL on a port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


# -- spec parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("openai:gpt-4o-mini", ModelSpec("openai", "gpt-4o-mini", None, None, "openai:gpt-4o-mini")),
        ("ollama:llama3.2:3b", ModelSpec("ollama", "llama3.2:3b", None, None, "ollama:llama3.2:3b")),
        ("  OLLAMA:qwen2.5 ", ModelSpec("ollama", "qwen2.5", None, None, "ollama:qwen2.5")),
        ("openai-compatible:my-model@http://localhost:8000/v1",
         ModelSpec("openai-compatible", "my-model", "http://localhost:8000/v1", None,
                   "openai-compatible:my-model@http://localhost:8000/v1")),
        ("openai-compatible:org/model@v2@https://host.example/v1/",
         ModelSpec("openai-compatible", "org/model@v2", "https://host.example/v1", None,
                   "openai-compatible:org/model@v2@https://host.example/v1")),
        ("hf:./models/tiny", ModelSpec("hf", "./models/tiny", None, None, "hf:./models/tiny")),
        ("hf:Qwen/Qwen2.5-0.5B-Instruct?adapter=/tmp/lora",
         ModelSpec("hf", "Qwen/Qwen2.5-0.5B-Instruct", None, "/tmp/lora",
                   "hf:Qwen/Qwen2.5-0.5B-Instruct?adapter=/tmp/lora")),
    ],
)
def test_parse_spec_valid(raw: str, expected: ModelSpec) -> None:
    spec = parse_spec(raw)
    assert spec == expected
    assert str(spec) == expected.raw
    assert parse_spec(spec.raw) == spec  # the normalised form round-trips


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("", "missing backend prefix"),
        ("gpt-4o-mini", "missing backend prefix"),
        ("anthropic:claude", "unknown backend 'anthropic'"),
        ("openai:", "empty model name"),
        ("ollama:   ", "empty model name"),
        ("hf:", "empty model name"),
        ("hf:?adapter=/tmp/x", "empty model name"),
        ("hf:./m?adapter=", "empty adapter"),
        ("openai-compatible:my-model", "missing base URL"),
        ("openai-compatible:my-model@localhost:8000/v1", "missing base URL"),
        ("openai-compatible:@http://localhost:8000/v1", "empty model name"),
        ("openai-compatible:m@http://", "no host"),
    ],
)
def test_parse_spec_invalid(raw: str, problem: str) -> None:
    with pytest.raises(ModelError) as info:
        parse_spec(raw)
    message = str(info.value)
    assert problem in message
    assert "\n" not in message
    for form in ("openai:<model>", "ollama:<model>", "openai-compatible:<model>@", "hf:"):
        assert form in message


# -- OpenAI-compatible backend over loopback HTTP -------------------------------------------------


def test_complete_sends_request_and_reads_usage(fake_llm: FakeOpenAI) -> None:
    fake_llm.queue("Hello there, friend!")
    model = OpenAICompatModel("m1", fake_llm.base_url, api_key=SECRET, temperature=0.3, max_tokens=50)
    assert isinstance(model, ChatModel)
    out = model.complete(MESSAGES)
    assert out == Completion(text="Hello there, friend!", model="m1", prompt_tokens=6, completion_tokens=3,
                             finish_reason="stop")
    body = fake_llm.last
    assert body == {"model": "m1", "messages": MESSAGES, "temperature": 0.3, "max_tokens": 50}
    assert fake_llm.headers[-1]["authorization"] == f"Bearer {SECRET}"
    # per-call overrides, and a fresh (different) default reply each time
    second = model.complete(MESSAGES, temperature=1.1, max_tokens=7)
    assert second.text == "reply 2"
    assert fake_llm.last["temperature"] == 1.1 and fake_llm.last["max_tokens"] == 7
    assert "stream" not in fake_llm.last


def test_stream_yields_deltas_and_usage(fake_llm: FakeOpenAI) -> None:
    text = "one two three four five six seven eight  nine\nten"
    fake_llm.queue(text)
    model = OpenAICompatModel("m2", fake_llm.base_url)
    stream = model.stream(MESSAGES, max_tokens=20)
    deltas = list(stream)
    assert len(deltas) >= 3
    assert "".join(deltas) == text
    assert stream.completion == Completion(text=text, model="m2", prompt_tokens=6, completion_tokens=10,
                                           finish_reason="stop")
    body = fake_llm.last
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"] == MESSAGES and body["model"] == "m2" and body["max_tokens"] == 20
    assert "authorization" not in fake_llm.headers[-1]


def test_stream_collect_and_responder(fake_llm: FakeOpenAI) -> None:
    fake_llm.responder = lambda body: body["messages"][-1]["content"].upper()
    model = OpenAICompatModel("m", fake_llm.base_url)
    assert model.stream(MESSAGES).collect().text == "SAY HI TO ME"
    assert model.complete(MESSAGES).text == "SAY HI TO ME"


def test_unreachable_server() -> None:
    url = _dead_url()
    model = OpenAICompatModel("m", url, api_key=SECRET, timeout=2)
    for call in (model.complete, model.stream):
        with pytest.raises(ModelError) as info:
            call(MESSAGES)
        message = str(info.value)
        assert message.startswith(f"Cannot reach {url} — is the server running?")
        assert SECRET not in message and SECRET not in repr(info.value)


def test_read_timeout(fake_llm: FakeOpenAI) -> None:
    fake_llm.delay = 1.0
    model = OpenAICompatModel("m", fake_llm.base_url, timeout=0.2)
    with pytest.raises(ModelError, match=r"did not answer within 0\.2s"):
        model.complete(MESSAGES)


@pytest.mark.parametrize(
    ("status", "server_message", "expected"),
    [
        (401, f"Incorrect API key provided: {SECRET}", "rejected the API key (HTTP 401); set OPENAI_API_KEY"),
        (403, "forbidden", "rejected the API key (HTTP 403)"),
        (404, "model 'nope' not found", "returned 404 for model 'nope'"),
        (500, "CUDA out of memory\n  while loading", "returned HTTP 500: CUDA out of memory while loading"),
        (429, "x" * 1000, "returned HTTP 429: xxx"),
    ],
)
@pytest.mark.parametrize("streaming", [False, True])
def test_http_errors(fake_llm: FakeOpenAI, status: int, server_message: str, expected: str,
                     streaming: bool) -> None:
    fake_llm.fail_next(status, server_message)
    model = OpenAICompatModel("nope", fake_llm.base_url, api_key=SECRET)
    with pytest.raises(ModelError) as info:
        (model.stream if streaming else model.complete)(MESSAGES)
    message = str(info.value)
    assert expected in message
    assert fake_llm.base_url in message
    assert "\n" not in message and len(message) < 600
    assert SECRET not in message
    # the next request works again
    assert model.complete(MESSAGES).text.startswith("reply")


def test_api_key_not_in_repr() -> None:
    model = OpenAICompatModel("m", "http://127.0.0.1:9/v1", api_key=SECRET)
    assert SECRET not in repr(model) and SECRET not in str(vars(model).get("spec"))
    assert "api_key=set" in repr(model)


def test_wrong_endpoint_is_404(fake_llm: FakeOpenAI) -> None:
    model = OpenAICompatModel("m", fake_llm.url + "/api")  # not an OpenAI-compatible base URL
    with pytest.raises(ModelError, match="404 for model 'm'.*ends in /v1"):
        model.complete(MESSAGES)


# -- resolve_model and auto-detection -------------------------------------------------------------


def test_resolve_detects_ollama(fake_llm: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINETUNE_OLLAMA_URL", fake_llm.url)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)  # Ollama wins over the key
    model = resolve_model(load_settings())
    assert model.spec == "ollama:fake:latest"
    assert model.complete(MESSAGES).text == "reply 1"
    assert fake_llm.last["model"] == "fake:latest"
    assert "authorization" not in fake_llm.headers[-1]  # no key sent to Ollama
    lines = describe_detection(load_settings())
    assert any("fake:latest" in line for line in lines)
    assert lines[-1] == "Will use: ollama:fake:latest"


def test_resolve_falls_back_to_openai_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    model = resolve_model(load_settings())
    assert model.spec == "openai:gpt-4o-mini"
    assert isinstance(model, OpenAICompatModel)
    assert model.base_url == "https://api.openai.com/v1"
    assert SECRET not in repr(model)


def test_resolve_nothing_found() -> None:
    with pytest.raises(ModelError) as info:
        resolve_model(load_settings())
    message = str(info.value)
    assert "MINETUNE_MODEL" in message and "--model" in message
    for example in ("ollama:", "openai:", "openai-compatible:", "hf:"):
        assert example in message
    assert "\n" not in message
    lines = describe_detection(load_settings())
    assert any("not reachable" in line for line in lines)
    assert lines[-1].startswith("No model available")


def test_ollama_running_without_models(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeOpenAI(ollama_models=[]) as fake:
        monkeypatch.setenv("MINETUNE_OLLAMA_URL", fake.url)
        with pytest.raises(ModelError, match="ollama pull"):
            resolve_model(load_settings())


def test_resolve_prefers_argument_then_settings(fake_llm: FakeOpenAI,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINETUNE_OLLAMA_URL", fake_llm.url + "/v1/")  # a /v1 suffix is tolerated
    monkeypatch.setenv("MINETUNE_MODEL", "ollama:from-env")
    settings = load_settings()
    assert resolve_model(settings).spec == "ollama:from-env"
    model = resolve_model(settings, f"openai-compatible:served@{fake_llm.base_url}")
    model.complete(MESSAGES)
    assert fake_llm.last["model"] == "served"
    assert resolve_model(settings, parse_spec("ollama:x")).spec == "ollama:x"


def test_openai_needs_key() -> None:
    with pytest.raises(ModelError, match="set OPENAI_API_KEY"):
        resolve_model(load_settings(), "openai:gpt-4o")


def test_openai_uses_base_url_setting(fake_llm: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_llm.base_url)
    model = resolve_model(load_settings(), "openai:gpt-4o")
    assert model.stream(MESSAGES).collect().text == "reply 1"
    assert fake_llm.headers[-1]["authorization"] == f"Bearer {SECRET}"


@pytest.mark.parametrize(("env", "configured", "expected"), [
    ({"MINETUNE_API_KEY": "mk-1", "OPENAI_API_KEY": "sk-2"}, True, "Bearer mk-1"),
    ({"MINETUNE_API_KEY": "mk-1"}, False, None),  # not the configured model's URL: no key
    ({"OPENAI_API_KEY": "sk-2"}, True, None),  # OpenAI's key goes only to OpenAI (tests/test_keys.py)
    ({}, True, None),
])
def test_openai_compatible_optional_key(fake_llm: FakeOpenAI, monkeypatch: pytest.MonkeyPatch,
                                        env: dict[str, str], configured: bool, expected: str | None) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    spec = f"openai-compatible:m@{fake_llm.base_url}"
    settings = load_settings(model=spec) if configured else load_settings()
    resolve_model(settings, spec).complete(MESSAGES)
    assert fake_llm.headers[-1].get("authorization") == expected


def test_settings_defaults_are_used(fake_llm: FakeOpenAI) -> None:
    settings = load_settings(temperature=0.1, max_tokens=33)
    resolve_model(settings, f"openai-compatible:m@{fake_llm.base_url}").complete(MESSAGES)
    assert fake_llm.last["temperature"] == 0.1 and fake_llm.last["max_tokens"] == 33


# -- import weight --------------------------------------------------------------------------------


def test_import_does_not_load_torch() -> None:
    code = "import minetune.models, sys; print('torch' in sys.modules, 'transformers' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert result.stdout.split() == ["False", "False"]


# -- local Hugging Face backend -------------------------------------------------------------------


def test_hf_complete_and_stream(tiny_model_dir: Path) -> None:
    model = resolve_model(load_settings(), f"hf:{tiny_model_dir}")
    assert isinstance(model, ChatModel)
    first = model.complete(MESSAGES, max_tokens=12, temperature=1.0)
    assert isinstance(first.text, str)
    assert first.prompt_tokens and first.prompt_tokens > 5
    assert first.completion_tokens is not None and 1 <= first.completion_tokens <= 12
    assert first.finish_reason in ("stop", "length")
    assert first.model == f"hf:{tiny_model_dir}"

    stream = model.stream(MESSAGES, max_tokens=12, temperature=1.0)
    deltas = list(stream)
    assert stream.completion is not None
    assert "".join(deltas) == stream.completion.text
    assert all(deltas)
    assert stream.completion.completion_tokens and stream.completion.completion_tokens <= 12
    # sampling: a handful of calls are not all identical
    texts = {model.complete(MESSAGES, max_tokens=12, temperature=1.0).text for _ in range(3)}
    assert len(texts | {first.text, stream.completion.text}) > 1


def test_hf_model_is_cached(tiny_model_dir: Path) -> None:
    from minetune.models.local_hf import LocalHFModel

    a = LocalHFModel(str(tiny_model_dir))
    b = LocalHFModel(str(tiny_model_dir) + "/")
    assert a.load()[0] is b.load()[0]


def test_hf_stream_abandoned_stops_generation(tiny_model_dir: Path) -> None:
    model = resolve_model(load_settings(), f"hf:{tiny_model_dir}")
    loaded, _ = model.load()  # type: ignore[attr-defined]
    loaded.generation_config.min_new_tokens = 300  # no early EOS, so a full run takes a while
    try:
        started = time.perf_counter()
        assert model.complete(MESSAGES, max_tokens=300).completion_tokens == 300
        full = time.perf_counter() - started

        stream = model.stream(MESSAGES, max_tokens=300)
        deltas = iter(stream)
        next(deltas)
        started = time.perf_counter()
        deltas.close()  # type: ignore[attr-defined]  # what a server does when its client disconnects
        for thread in threading.enumerate():
            if thread.name == "minetune-hf-generate":
                thread.join(timeout=30)
        assert time.perf_counter() - started < full / 3
    finally:
        loaded.generation_config.min_new_tokens = None


def test_hf_greedy_is_deterministic(tiny_model_dir: Path) -> None:
    model = resolve_model(load_settings(), f"hf:{tiny_model_dir}")
    one = model.complete(MESSAGES, max_tokens=8, temperature=0)
    two = model.complete(MESSAGES, max_tokens=8, temperature=0)
    assert one.text == two.text


@pytest.mark.filterwarnings("ignore::FutureWarning")  # peft calls a renamed transformers property
def test_hf_with_lora_adapter(tiny_model_dir: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    adapter_dir = tmp_path / "adapter"
    lora.save_pretrained(str(adapter_dir))

    model = resolve_model(load_settings(), f"hf:{tiny_model_dir}?adapter={adapter_dir}")
    loaded, _ = model.load()  # type: ignore[attr-defined]
    assert type(loaded).__name__.startswith("Peft")
    out = model.complete(MESSAGES, max_tokens=6)
    assert out.completion_tokens and out.model.endswith(f"?adapter={adapter_dir}")


def test_hf_missing_adapter(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such adapter directory"):
        resolve_model(load_settings(), f"hf:{tiny_model_dir}?adapter={tmp_path / 'missing'}")


@pytest.mark.parametrize("name", ["./no/such/model", "/no/such/model", "../nope"])
def test_hf_missing_local_dir(name: str) -> None:
    with pytest.raises(ModelError, match="no such directory"):
        resolve_model(load_settings(), f"hf:{name}")


def test_hf_hub_id_offline() -> None:
    with pytest.raises(ModelError) as info:
        resolve_model(load_settings(), "hf:some-org/some-model")
    message = str(info.value)
    assert "could not download" in message.lower()
    assert "hf download some-org/some-model --local-dir DIR" in message
    assert "hf:DIR" in message and "HF_HUB_OFFLINE" in message
    assert "\n" not in message


def test_hf_hub_download_from_fake_hub(tiny_model_dir: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub-id path really downloads (from a loopback hub), then works offline from the cache."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # read once at import
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    with FakeHub({"tiny-org/tiny-chat": tiny_model_dir}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        model = resolve_model(load_settings(), "hf:tiny-org/tiny-chat")
        model_dir = model.model_dir  # type: ignore[attr-defined]
        assert model_dir.is_relative_to(tmp_path / "hf-cache")
        assert sorted(p.name for p in model_dir.iterdir()) == sorted(p.name for p in tiny_model_dir.iterdir())
        assert any(r.startswith("GET /tiny-org/tiny-chat/resolve/") for r in hub.requests)
        out = model.complete(MESSAGES, max_tokens=4)
        assert out.completion_tokens and out.model == "hf:tiny-org/tiny-chat"

        with pytest.raises(ModelError, match="no such model on the Hub"):
            resolve_model(load_settings(), "hf:tiny-org/missing")

    # offline again: the cached snapshot is found without the hub
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    again = resolve_model(load_settings(), "hf:tiny-org/tiny-chat")
    assert again.model_dir == model_dir  # type: ignore[attr-defined]
