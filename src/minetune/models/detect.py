"""Turn a model spec (or nothing) into a ready :class:`~minetune.models.base.ChatModel`.

Order: the explicit spec argument, else ``settings.model`` (``MINETUNE_MODEL`` / config.toml),
else auto-detection — a running Ollama (its first model), then ``OPENAI_API_KEY`` (gpt-4o-mini).
Which key a backend sends is decided by :mod:`minetune.models.keys`: only a key scoped to its URL.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from minetune.config import DEFAULT_OPENAI_MODEL, Settings
from minetune.errors import ModelError
from minetune.models import keys
from minetune.models.base import ChatModel
from minetune.models.spec import ModelSpec, parse_spec

if TYPE_CHECKING:
    import httpx

OLLAMA_PROBE_TIMEOUT = 0.5

HOW_TO_CONNECT = (
    "Connect one with MINETUNE_MODEL or --model, for example: "
    "MINETUNE_MODEL=ollama:llama3.2 (after `ollama pull llama3.2`); "
    "OPENAI_API_KEY=sk-... with --model openai:gpt-4o-mini; "
    "--model openai-compatible:my-model@http://localhost:8000/v1 (vLLM, llama.cpp, LM Studio); "
    "--model hf:./path/to/model (a local transformers model, add ?adapter=DIR for a LoRA adapter)"
)


def _ollama_root(url: str) -> str:
    url = url.rstrip("/")
    return url[:-3] if url.endswith("/v1") else url


def ollama_models(settings: Settings, timeout: float = OLLAMA_PROBE_TIMEOUT) -> list[str] | None:
    """Names of the models the Ollama server has pulled; None when no server answers."""
    import httpx

    try:
        response: httpx.Response = httpx.get(f"{_ollama_root(settings.ollama_url)}/api/tags", timeout=timeout)
        response.raise_for_status()
        data = response.json()
    except (httpx.HTTPError, ValueError):
        return None
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, list):
        return None
    return [str(m.get("name") or m.get("model")) for m in models
            if isinstance(m, dict) and (m.get("name") or m.get("model"))]


def _api_key(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def detect_spec(settings: Settings) -> str:
    """The spec auto-detection picks, or ModelError explaining how to connect a model."""
    models = ollama_models(settings)
    if models:
        return f"ollama:{models[0]}"
    if _api_key("OPENAI_API_KEY"):
        return f"openai:{DEFAULT_OPENAI_MODEL}"
    if models == []:
        found = (f"Ollama is running at {settings.ollama_url} but has no models (run `ollama pull "
                 "llama3.2`) and OPENAI_API_KEY is not set")
    else:
        found = f"no Ollama at {settings.ollama_url} and OPENAI_API_KEY is not set"
    raise ModelError(f"No model configured: {found}. {HOW_TO_CONNECT}")


def describe_detection(settings: Settings) -> list[str]:
    """Human-readable lines saying what model sources were found (for ``minetune doctor``/setup pages)."""
    lines: list[str] = []
    if settings.model:
        lines.append(f"Configured model (MINETUNE_MODEL or config.toml): {settings.model}")
    else:
        lines.append("No model configured (MINETUNE_MODEL / config.toml model / --model)")
    models = ollama_models(settings)
    if models is None:
        lines.append(f"Ollama: not reachable at {settings.ollama_url}")
    elif not models:
        lines.append(f"Ollama: running at {settings.ollama_url}, no models pulled "
                     "(try `ollama pull llama3.2`)")
    else:
        shown = ", ".join(models[:8]) + (f" (+{len(models) - 8} more)" if len(models) > 8 else "")
        lines.append(f"Ollama: running at {settings.ollama_url} with {len(models)} model(s): {shown}")
    if _api_key("OPENAI_API_KEY"):
        lines.append(f"OPENAI_API_KEY: set (openai:<model> available via {settings.openai_base_url})")
    else:
        lines.append("OPENAI_API_KEY: not set")
    if _api_key("MINETUNE_API_KEY"):
        lines.append("MINETUNE_API_KEY: set (sent only to the base URL of the configured model)")
    for url in sorted({keys.scope_of(u) for u, _ in settings.keys} | keys.configured_scopes(settings)):
        lines.append(f"Key for {keys.describe(settings, url)}")
    if settings.model:
        lines.append(f"Will use: {settings.model}")
    elif models:
        lines.append(f"Will use: ollama:{models[0]}")
    elif _api_key("OPENAI_API_KEY"):
        lines.append(f"Will use: openai:{DEFAULT_OPENAI_MODEL}")
    else:
        lines.append(f"No model available. {HOW_TO_CONNECT}")
    return lines


def build_model(spec: ModelSpec, settings: Settings) -> ChatModel:
    """Construct the backend for a parsed spec (importing only that backend's dependencies)."""
    temperature, max_tokens, timeout = settings.temperature, settings.max_tokens, settings.request_timeout
    if spec.route is not None:
        raise ModelError(
            f"{spec.raw} routes among a program's domain adapters, so it is answered through its program "
            "(minetune chat -p PROGRAM, or Session); to use one adapter, give ?adapter=DIR instead"
        )
    if spec.backend == "hf":
        from minetune.models.local_hf import LocalHFModel

        return LocalHFModel(spec.model, adapter=spec.adapter, spec=spec.raw, temperature=temperature,
                            max_tokens=max_tokens)

    if spec.backend == "vllm":
        from minetune.models.vllm import VLLMModel, v1_url

        assert spec.base_url is not None
        url = v1_url(spec.base_url)
        key = keys.key_for(settings, url)
        return VLLMModel(spec.model, spec.base_url, adapter=spec.adapter, spec=spec.raw,
                         api_key=key.value if key else None, temperature=temperature,
                         max_tokens=max_tokens, timeout=timeout, auth_help=keys.key_help(settings, url))

    from minetune.models.openai_compat import OpenAICompatModel

    if spec.backend == "openai":
        key = keys.key_for(settings, settings.openai_base_url)
        if key is None:
            where = keys.key_help(settings, settings.openai_base_url).removesuffix(" to a valid key")
            raise ModelError(f"{spec.raw} needs an API key: {where} (or use a local model "
                             "such as ollama:<model> or hf:<dir>)")
        return OpenAICompatModel(spec.model, settings.openai_base_url, api_key=key.value, spec=spec.raw,
                                 temperature=temperature, max_tokens=max_tokens, timeout=timeout,
                                 auth_help=keys.key_help(settings, settings.openai_base_url))
    if spec.backend == "ollama":
        return OpenAICompatModel(spec.model, f"{_ollama_root(settings.ollama_url)}/v1", spec=spec.raw,
                                 temperature=temperature, max_tokens=max_tokens, timeout=timeout,
                                 auth_help="Ollama needs no key, so check that MINETUNE_OLLAMA_URL "
                                 "points at Ollama itself")
    if spec.backend == "openai-compatible":
        assert spec.base_url is not None
        key = keys.key_for(settings, spec.base_url)
        return OpenAICompatModel(spec.model, spec.base_url, api_key=key.value if key else None, spec=spec.raw,
                                 temperature=temperature, max_tokens=max_tokens, timeout=timeout,
                                 auth_help=keys.key_help(settings, spec.base_url))
    raise ModelError(f"Unsupported backend {spec.backend!r}")  # parse_spec only yields the five above


def resolve_model(settings: Settings, spec: str | ModelSpec | None = None) -> ChatModel:
    """The model to talk to: ``spec``, else ``settings.model``, else the auto-detected one."""
    if isinstance(spec, ModelSpec):
        parsed = spec
    else:
        chosen = (spec or "").strip() or (settings.model or "").strip() or detect_spec(settings)
        parsed = parse_spec(chosen)
    return build_model(parsed, settings)
