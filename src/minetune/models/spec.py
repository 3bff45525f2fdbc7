"""Model spec strings: one short string picks the backend and the model.

Valid forms::

    openai:<model>                              OpenAI API (OPENAI_API_KEY, OPENAI_BASE_URL)
    ollama:<model>                              a local Ollama server (MINETUNE_OLLAMA_URL)
    openai-compatible:<model>@<http(s)://url>   any OpenAI-compatible server (vLLM, llama.cpp, ...)
    hf:<local dir or hub id>[?adapter=<dir>]    local transformers model, optionally with a LoRA adapter
    vllm:<model>@<http(s)://url>[?adapter=<dir>] a vLLM server; the adapter is loaded at runtime

``hf:`` and ``vllm:`` specs may end in ``?route`` (or ``?route=<min similarity>``, default 0.35)
instead of ``?adapter=``: each message is then answered by the program's domain adapter whose
examples it is most similar to, or by the plain base model below that similarity. A routed spec
belongs to a program, so it is built by :func:`minetune.train.adapters.routed_model` (a
``Session`` does that itself), not by :func:`~minetune.models.resolve_model`.

A spec never carries a key: which key (if any) goes to a spec's base URL is decided by
:mod:`minetune.models.keys`, so a spec from an imported bundle gets no local key unless its URL is
one the user scoped a key to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from minetune.errors import ModelError

BACKENDS = ("openai", "ollama", "openai-compatible", "hf", "vllm")

VALID_FORMS = (
    "openai:<model>, ollama:<model>, openai-compatible:<model>@<http(s)://base-url>, "
    "hf:<local dir or hub id>[?adapter=<dir> | ?route], "
    "vllm:<model>@<http(s)://base-url>[?adapter=<dir> | ?route]"
)

_ADAPTER_MARK = "?adapter="
_URL_AT = re.compile(r"@(?=https?://)", re.IGNORECASE)
_ROUTE = re.compile(r"\?route(?:=(?P<value>[^?&=]*))?\s*$", re.IGNORECASE)
DEFAULT_ROUTE_SIMILARITY = 0.35


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec. ``raw`` is the normalised spec string it came from."""

    backend: str
    model: str
    base_url: str | None = None
    adapter: str | None = None
    raw: str = ""
    route: float | None = None  # routed among the program's domain adapters, with this min similarity

    def __str__(self) -> str:
        return self.raw


def _invalid(raw: str, problem: str) -> ModelError:
    return ModelError(f"Invalid model spec {raw!r}: {problem}. Use one of: {VALID_FORMS}")


def parse_spec(raw: str) -> ModelSpec:
    """Parse a model spec string; raise :class:`ModelError` naming the valid forms when it is wrong."""
    text = (raw or "").strip()
    prefix, sep, rest = text.partition(":")
    backend = prefix.strip().lower()
    if not sep or backend not in BACKENDS:
        problem = "missing backend prefix" if not sep else f"unknown backend {prefix.strip()!r}"
        raise _invalid(text, problem)
    rest = rest.strip()
    base_url: str | None = None
    adapter: str | None = None
    route: float | None = None

    routed = _ROUTE.search(rest) if backend in ("hf", "vllm") else None
    if routed is not None:
        route = _route_similarity(text, routed.group("value"))
        rest = rest[: routed.start()].rstrip()
        if _ADAPTER_MARK in rest:
            raise _invalid(text, "?route picks the adapter for each message; drop ?adapter=")
    if backend == "vllm":
        rest, mark, adapter_part = rest.partition(_ADAPTER_MARK)
        if mark:
            adapter = adapter_part.strip()
            if not adapter:
                raise _invalid(text, "empty adapter directory after ?adapter=")
    if backend in ("openai-compatible", "vllm"):
        match = _URL_AT.search(rest)
        if match is None:
            raise _invalid(text, "missing base URL (add @http://host:port/v1 after the model name)")
        model = rest[: match.start()].strip()
        base_url = rest[match.end():].strip().rstrip("/")
        if not re.match(r"https?://[^/\s]+", base_url, re.IGNORECASE):
            raise _invalid(text, "the base URL has no host")
    elif backend == "hf":
        model, mark, adapter_part = rest.partition(_ADAPTER_MARK)
        model = model.strip()
        if mark:
            adapter = adapter_part.strip()
            if not adapter:
                raise _invalid(text, "empty adapter directory after ?adapter=")
    else:
        model = rest

    if not model:
        raise _invalid(text, "empty model name")
    return ModelSpec(backend=backend, model=model, base_url=base_url, adapter=adapter, route=route,
                     raw=_normalise(backend, model, base_url, adapter, route))


def _route_similarity(raw: str, value: str | None) -> float:
    if value is None or not value.strip() or value.strip().lower() in ("1", "on", "true", "yes"):
        return DEFAULT_ROUTE_SIMILARITY
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0.0 <= number < 1.0:
        raise _invalid(raw, f"?route={value} must be a minimum similarity from 0 to below 1, e.g. ?route=0.4")
    return number


def _normalise(
    backend: str, model: str, base_url: str | None, adapter: str | None, route: float | None = None
) -> str:
    raw = f"{backend}:{model}"
    if base_url:
        raw += f"@{base_url}"
    if adapter:
        raw += f"{_ADAPTER_MARK}{adapter}"
    if route is not None:
        raw += "?route" if route == DEFAULT_ROUTE_SIMILARITY else f"?route={route:g}"
    return raw


def is_routed(spec: str | None) -> bool:
    """Whether ``spec`` asks for routing among a program's domain adapters (``?route``)."""
    return bool(spec) and parse_spec(spec or "").route is not None
