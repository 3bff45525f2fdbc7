"""The OpenAI-compatible HTTP backend (OpenAI, Ollama's /v1, vLLM, llama.cpp, LM Studio, ...).

Talks to ``{base_url}/chat/completions`` through the official ``openai`` SDK (its retries with
backoff for connection failures and retryable statuses, honouring ``Retry-After`` and
``x-should-retry``; a request that ran into the timeout is not repeated, so the timeout bounds the
wait). Every failure becomes a one-line :class:`~minetune.errors.ModelError` that says what to do;
an HTTP error from the server is an :class:`~minetune.models.base.UpstreamError` carrying its status
and error body. The API key never appears in messages, and the SDK reads nothing from the
environment: the key is only the one given (scoped to this base URL by :mod:`minetune.models.keys`).

Raw pass-through, used by the ``/v1`` proxy: :meth:`OpenAICompatModel.chat_completion` (a request
body's fields in, the upstream's ``chat.completion`` as a dict out) and
:meth:`OpenAICompatModel.chat_completion_stream` (a :class:`ChunkStream` of ``chat.completion.chunk``
dicts). :meth:`complete` and :meth:`stream` are built on them.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Generator, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import httpx

from minetune.errors import ModelError
from minetune.models.base import Completion, CompletionStream, Message, UpstreamError

if TYPE_CHECKING:
    import openai

_MAX_SERVER_MESSAGE = 300
DEFAULT_MAX_RETRIES = 2
# Request fields the proxy may not override: the model is the program's, streaming is the call's.
RESERVED = frozenset({"model", "messages", "stream"})


class _NoRetryOnReadTimeout(httpx.BaseTransport):
    """Turns a read/write timeout into the SDK's own timeout error, which the SDK raises without
    retrying: an upstream that used the whole timeout once is not asked again."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self._inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        import openai

        try:
            return self._inner.handle_request(request)
        except (httpx.ReadTimeout, httpx.WriteTimeout) as exc:
            raise openai.APITimeoutError(request=request) from exc  # type: ignore[arg-type]

    def close(self) -> None:
        self._inner.close()


class ChunkStream:
    """Iterate for the upstream's ``chat.completion.chunk`` dicts; :meth:`close` stops early and
    releases the connection. A stream that fails or ends before every choice has a
    ``finish_reason`` raises ModelError while iterating."""

    def __init__(self, chunks: Generator[dict[str, Any], None, None]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self._chunks

    def close(self) -> None:
        self._chunks.close()


class OpenAICompatModel:
    """A :class:`~minetune.models.base.ChatModel` over an OpenAI-compatible chat completions API.

    ``auth_help`` finishes the sentence shown when the server answers 401/403.
    """

    def __init__(
        self,
        model: str,
        base_url: str,
        *,
        api_key: str | None = None,
        spec: str | None = None,
        temperature: float = 0.7,
        max_tokens: int | None = 1024,
        timeout: float = 120.0,
        max_retries: int = DEFAULT_MAX_RETRIES,
        auth_help: str = "set OPENAI_API_KEY to a valid key for this server",
    ) -> None:
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.spec = spec or f"openai-compatible:{model}@{self.base_url}"
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.timeout = timeout
        self.max_retries = max_retries
        self._api_key = api_key or None
        self._auth_help = auth_help
        self._client: httpx.Client | None = None
        self._sdk_client: openai.OpenAI | None = None
        self._client_lock = threading.Lock()

    def __repr__(self) -> str:
        key = "set" if self._api_key else "none"
        return f"OpenAICompatModel(spec={self.spec!r}, base_url={self.base_url!r}, api_key={key})"

    # -- public API -------------------------------------------------------------------------------

    def complete(
        self, messages: list[Message], *, temperature: float | None = None, max_tokens: int | None = None
    ) -> Completion:
        """Return one full response (a fresh sample) to ``messages``."""
        data = self.chat_completion(list(messages), self._params(temperature, max_tokens))
        return self._parse_completion(data)

    def stream(
        self, messages: list[Message], *, temperature: float | None = None, max_tokens: int | None = None
    ) -> CompletionStream:
        """Like :meth:`complete`, yielding text deltas. Connection and HTTP errors raise here, eagerly."""
        params = self._params(temperature, max_tokens) | {"stream_options": {"include_usage": True}}
        chunks = self.chat_completion_stream(list(messages), params)
        return CompletionStream(self._text_deltas(chunks))

    def chat_completion(self, messages: list[Any], params: Mapping[str, Any]) -> dict[str, Any]:
        """POST ``/chat/completions`` with ``messages`` and the other request fields ``params``
        (passed unchanged; ``model`` is this model's): the upstream's ``chat.completion`` as a
        dict, as sent (ModelError / UpstreamError on failure)."""
        body = self._request(messages, params)
        data = self._create(body)
        if not isinstance(data, dict) or not data.get("choices"):
            shown = json.dumps(data) if isinstance(data, dict | list) else str(data)
            raise ModelError(self._scrub(f"{self.base_url} returned no choices: {_trim(shown)}"))
        return data

    def chat_completion_stream(self, messages: list[Any], params: Mapping[str, Any]) -> ChunkStream:
        """Like :meth:`chat_completion` with ``stream: true``: the upstream's chunks as dicts.
        Connection and HTTP errors raise here, eagerly."""
        body = self._request(messages, params) | {"stream": True}
        upstream = self._create(body)
        return ChunkStream(self._chunks(upstream))

    def close(self) -> None:
        """Close the pooled HTTP connections."""
        with self._client_lock:
            if self._sdk_client is not None:
                self._sdk_client.close()
                self._sdk_client = None
            if self._client is not None:
                self._client.close()
                self._client = None

    # -- request ----------------------------------------------------------------------------------

    def _params(self, temperature: float | None, max_tokens: int | None) -> dict[str, Any]:
        params: dict[str, Any] = {"temperature": self.temperature if temperature is None else temperature}
        limit = self.max_tokens if max_tokens is None else max_tokens
        if limit is not None:
            params["max_tokens"] = limit
        return params

    def _request(self, messages: list[Any], params: Mapping[str, Any]) -> dict[str, Any]:
        extra = {k: v for k, v in params.items() if k not in RESERVED}
        return {"model": self.model, "messages": messages, **extra}

    def _http(self) -> httpx.Client:
        """The HTTP connection pool (also used for non-chat calls, e.g. vLLM's adapter loading)."""
        with self._client_lock:
            if self._client is None:
                self._client = httpx.Client(
                    timeout=httpx.Timeout(self.timeout, connect=min(10.0, self.timeout)),
                    transport=_NoRetryOnReadTimeout(httpx.HTTPTransport()),
                )
            return self._client

    def _headers(self) -> dict[str, str]:
        """Headers for a plain (non-SDK) call to this base URL: its own key only."""
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def _sdk(self) -> openai.OpenAI:
        """The SDK client: this base URL, this key only (none: no Authorization header), nothing
        read from the environment (organization, project, admin key)."""
        http = self._http()
        with self._client_lock:
            if self._sdk_client is None:
                import openai

                client = openai.OpenAI(
                    api_key=self._api_key or "",
                    admin_api_key="",
                    organization="",
                    project="",
                    webhook_secret="",
                    base_url=self.base_url,
                    timeout=httpx.Timeout(self.timeout, connect=min(10.0, self.timeout)),  # type: ignore[arg-type]
                    max_retries=self.max_retries,
                    http_client=http,  # type: ignore[arg-type]
                )
                client.organization = None
                client.project = None
                self._sdk_client = client
            return self._sdk_client

    def _create(self, body: dict[str, Any]) -> Any:
        """POST ``body`` to ``/chat/completions`` through the SDK client (its retries, backoff,
        timeouts, error types and SSE decoding), exactly as given: no field is renamed, typed or
        dropped, and the answer comes back as plain dicts (a dict, or a ``Stream`` of chunk dicts),
        without building and re-serialising the SDK's response models."""
        import openai

        client = self._sdk()
        stream = bool(body.get("stream"))
        try:
            options: Any = {} if self._api_key else {"headers": {"Authorization": openai.Omit()}}  # no key
            if stream:
                return client.post("/chat/completions", body=body, cast_to=object, options=options,
                                   stream=True, stream_cls=openai.Stream[object])
            return client.post("/chat/completions", body=body, cast_to=object, options=options)
        except openai.APIStatusError as exc:
            raise self._status_error(exc.status_code, exc.body, exc.response) from None
        except openai.APITimeoutError as exc:
            if isinstance(exc.__cause__, httpx.ConnectTimeout | httpx.PoolTimeout):
                raise self._unreachable(exc.__cause__) from None
            raise self._timed_out() from None
        except openai.APIConnectionError as exc:
            raise self._unreachable(exc.__cause__ or exc) from None
        except openai.APIError as exc:  # e.g. a body the SDK cannot read
            raise ModelError(self._scrub(
                f"{self.base_url} answered with something unexpected ({_trim(str(exc))}); "
                "is this an OpenAI-compatible /v1 URL?")) from None

    def _timed_out(self) -> ModelError:
        return ModelError(self._scrub(
            f"{self.base_url} did not answer within {self.timeout:g}s; the server may be overloaded "
            "or the model still loading — try again or raise the request timeout"))

    # -- responses --------------------------------------------------------------------------------

    def _parse_completion(self, data: dict[str, Any]) -> Completion:
        choice = data["choices"][0]
        message = choice.get("message") or {}
        usage = data.get("usage") or {}
        return Completion(
            text=message.get("content") or "",
            model=data.get("model") or self.model,
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            finish_reason=choice.get("finish_reason"),
        )

    def _chunks(self, upstream: Any) -> Generator[dict[str, Any], None, None]:
        """The SDK stream's chunks as dicts; ModelError for an error event, a lost connection or a
        stream that ends before every choice seen has a finish_reason."""
        import openai

        open_choices: set[int] = set()
        finished: set[int] = set()
        done = _watch_done(upstream)
        try:
            for event in upstream:
                chunk = event if isinstance(event, dict) else dict(event)
                for choice in chunk.get("choices") or []:
                    index = choice.get("index", 0)
                    open_choices.add(index)
                    if choice.get("finish_reason"):
                        finished.add(index)
                yield chunk
        except openai.APIError as exc:
            raise ModelError(self._scrub(
                f"{self.base_url} reported an error mid-stream: {_trim(_sdk_message(exc))}")) from None
        except (httpx.HTTPError, openai.APIConnectionError) as exc:
            raise ModelError(self._scrub(
                f"Lost the connection to {self.base_url} while streaming ({type(exc).__name__}); "
                "try again")) from None
        except ValueError:
            raise ModelError(self._scrub(f"{self.base_url} sent a malformed stream event")) from None
        finally:
            upstream.close()
        if not done() and (not finished or open_choices - finished):
            raise ModelError(self._scrub(
                f"{self.base_url} ended the stream before the answer was finished (no finish_reason "
                "and no [DONE]); try again"))

    def _text_deltas(self, chunks: ChunkStream) -> Generator[str, None, Completion]:
        parts: list[str] = []
        model = self.model
        finish_reason: str | None = None
        usage: dict[str, Any] = {}
        try:
            for chunk in chunks:
                model = chunk.get("model") or model
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for choice in chunk.get("choices") or []:
                    if choice.get("index", 0) != 0:
                        continue
                    delta = (choice.get("delta") or {}).get("content")
                    if delta:
                        parts.append(delta)
                        yield delta
                    finish_reason = choice.get("finish_reason") or finish_reason
        finally:
            chunks.close()
        return Completion(
            text="".join(parts),
            model=model,
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            finish_reason=finish_reason,
        )

    # -- errors -----------------------------------------------------------------------------------

    def _unreachable(self, exc: BaseException) -> ModelError:
        reason = _trim(str(exc)) or type(exc).__name__
        return ModelError(self._scrub(
            f"Cannot reach {self.base_url} — is the server running? Start it or fix the URL in the "
            f"model spec ({reason})"))

    def _status_error(self, status: int, body: object, response: Any = None) -> UpstreamError:
        detail = _error_text(body) if body is not None else ""
        if not detail and response is not None:
            try:
                detail = _trim(response.text)
            except Exception:  # noqa: BLE001 - an unread body has no detail
                detail = ""
        if status in (401, 403):
            text = f"{self.base_url} rejected the API key (HTTP {status}); {self._auth_help}"
        elif status == 404:
            text = (f"{self.base_url} returned 404 for model {self.model!r}: the model or the "
                    "/chat/completions endpoint was not found — check the model name and that the base "
                    "URL ends in /v1")
        else:
            text = f"{self.base_url} returned HTTP {status}"
        if detail and status not in (401, 403):  # auth errors may echo part of the key: leave them out
            text += f": {detail}" if status != 404 else f" (server said: {detail})"
        error = _error_object(body) if status not in (401, 403) else None
        if error is not None:
            error = json.loads(self._scrub(json.dumps(error)))
        return UpstreamError(self._scrub(text), status=status, error=error)

    def _scrub(self, text: str) -> str:
        """Remove the API key from ``text`` in case a server or library echoed it."""
        if self._api_key:
            text = text.replace(self._api_key, "***")
        return text


class _DoneWatcher:
    """Wraps the SDK stream's SSE decoder to note the final ``data: [DONE]`` event (the SDK ends
    iteration there without saying whether it came)."""

    def __init__(self, decoder: Any) -> None:
        self._decoder = decoder
        self.done = False

    def iter_bytes(self, iterator: Iterator[bytes]) -> Iterator[Any]:
        for sse in self._decoder.iter_bytes(iterator):
            if sse.data.startswith("[DONE]"):
                self.done = True
            yield sse

    def __getattr__(self, name: str) -> Any:
        return getattr(self._decoder, name)


def _watch_done(upstream: Any) -> Any:
    """A callable telling whether ``upstream`` (an SDK Stream not yet iterated) sent [DONE]."""
    decoder = getattr(upstream, "_decoder", None)
    if decoder is None:
        return lambda: False
    watcher = _DoneWatcher(decoder)
    upstream._decoder = watcher
    return lambda: watcher.done


def _trim(text: str, limit: int = _MAX_SERVER_MESSAGE) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _error_text(data: Any) -> str:
    """The message out of ``{"error": {"message": ...}}``, ``{"error": "..."}``, ``{"detail": ...}``
    or an SDK error body (the ``error`` object itself)."""
    if isinstance(data, dict):
        for key in ("error", "detail", "message"):
            if key in data:
                inner = data[key]
                if isinstance(inner, dict):
                    return _trim(str(inner.get("message") or json.dumps(inner)))
                return _trim(str(inner))
        return _trim(json.dumps(data))
    if isinstance(data, str):
        return _trim(data)
    return _trim(json.dumps(data)) if data is not None else ""


def _error_object(body: object) -> dict[str, Any] | None:
    """The OpenAI ``error`` object of an error body (the SDK passes the object itself)."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and "message" in inner:
            return dict(inner)
        if isinstance(inner, str):
            return {"message": inner, "type": "upstream_error"}
    if isinstance(body, str) and body.strip():
        return {"message": _trim(body), "type": "upstream_error"}
    return None


def _sdk_message(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    text = _error_text(body) if body is not None else ""
    return text or str(exc)


def _server_message(response: httpx.Response) -> str:
    """The error message of a plain httpx response (vLLM's adapter endpoints)."""
    try:
        return _error_text(response.json())
    except (ValueError, httpx.ResponseNotRead):
        try:
            return _trim(response.text)
        except httpx.ResponseNotRead:
            return ""
