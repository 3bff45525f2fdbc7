"""The OpenAI-compatible HTTP backend (OpenAI, Ollama's /v1, vLLM, llama.cpp, LM Studio, ...).

Talks to ``{base_url}/chat/completions`` with httpx directly; every failure becomes a one-line
:class:`~minetune.errors.ModelError` that says what to do. The API key never appears in messages.
"""

from __future__ import annotations

import json
import re
from collections.abc import Generator, Iterator
from typing import Any

import httpx

from minetune.errors import ModelError
from minetune.models.base import Completion, CompletionStream, Message

_MAX_SERVER_MESSAGE = 300


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
        auth_help: str = "set OPENAI_API_KEY to a valid key for this server",
    ) -> None:
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.spec = spec or f"openai-compatible:{model}@{self.base_url}"
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.timeout = timeout
        self._api_key = api_key or None
        self._auth_help = auth_help
        self._client: httpx.Client | None = None

    def __repr__(self) -> str:
        key = "set" if self._api_key else "none"
        return f"OpenAICompatModel(spec={self.spec!r}, base_url={self.base_url!r}, api_key={key})"

    # -- public API -------------------------------------------------------------------------------

    def complete(
        self, messages: list[Message], *, temperature: float | None = None, max_tokens: int | None = None
    ) -> Completion:
        """Return one full response (a fresh sample) to ``messages``."""
        body = self._body(messages, temperature, max_tokens, stream=False)
        response = self._send(body, stream=False)
        try:
            data = response.json()
        except ValueError as exc:
            raise ModelError(f"{self.base_url} answered with something that is not JSON; "
                             "is this an OpenAI-compatible /v1 URL?") from exc
        return self._parse_completion(data)

    def stream(
        self, messages: list[Message], *, temperature: float | None = None, max_tokens: int | None = None
    ) -> CompletionStream:
        """Like :meth:`complete`, yielding text deltas. Connection and HTTP errors raise here, eagerly."""
        body = self._body(messages, temperature, max_tokens, stream=True)
        response = self._send(body, stream=True)
        return CompletionStream(self._iter_stream(response))

    def close(self) -> None:
        """Close the pooled HTTP connections."""
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- request ----------------------------------------------------------------------------------

    @property
    def _url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(timeout=httpx.Timeout(self.timeout, connect=min(10.0, self.timeout)))
        return self._client

    def _body(
        self, messages: list[Message], temperature: float | None, max_tokens: int | None, *, stream: bool
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
            "temperature": self.temperature if temperature is None else temperature,
        }
        limit = self.max_tokens if max_tokens is None else max_tokens
        if limit is not None:
            body["max_tokens"] = limit
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def _send(self, body: dict[str, Any], *, stream: bool) -> httpx.Response:
        client = self._http()
        try:
            request = client.build_request("POST", self._url, json=body, headers=self._headers())
            response = client.send(request, stream=stream)
        except httpx.TimeoutException as exc:
            if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
                raise self._unreachable(exc) from None
            raise ModelError(self._scrub(
                f"{self.base_url} did not answer within {self.timeout:g}s; the server may be overloaded "
                "or the model still loading — try again or raise the request timeout")) from None
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        if response.status_code >= 400:
            try:
                response.read()
            except httpx.HTTPError:
                pass
            finally:
                response.close()
            raise self._status_error(response)
        return response

    # -- responses --------------------------------------------------------------------------------

    def _parse_completion(self, data: Any) -> Completion:
        if not isinstance(data, dict) or not data.get("choices"):
            raise ModelError(self._scrub(f"{self.base_url} returned no choices: {_trim(json.dumps(data))}"))
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

    def _iter_stream(self, response: httpx.Response) -> Generator[str, None, Completion]:
        parts: list[str] = []
        model = self.model
        finish_reason: str | None = None
        usage: dict[str, Any] = {}
        done = False
        try:
            for chunk in self._events(response):
                if chunk is None:  # data: [DONE]
                    done = True
                    break
                if "error" in chunk and not chunk.get("choices"):
                    raise ModelError(self._scrub(
                        f"{self.base_url} reported an error mid-stream: {_error_text(chunk)}"))
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
        except httpx.HTTPError as exc:
            raise ModelError(self._scrub(
                f"Lost the connection to {self.base_url} while streaming ({type(exc).__name__}); "
                "try again")) from None
        finally:
            response.close()
        if not done and finish_reason is None:
            raise ModelError(self._scrub(
                f"{self.base_url} ended the stream before the answer was finished (no finish_reason "
                "and no [DONE]); try again"))
        return Completion(
            text="".join(parts),
            model=model,
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            finish_reason=finish_reason,
        )

    def _events(self, response: httpx.Response) -> Iterator[dict[str, Any] | None]:
        """The JSON payloads of the SSE ``data:`` lines; None for the final ``[DONE]``."""
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue  # blank separators, comments (": keep-alive"), "event:" lines
            payload = line[5:].strip()
            if payload == "[DONE]":
                yield None
                return
            if not payload:
                continue
            try:
                event = json.loads(payload)
            except ValueError:
                raise ModelError(self._scrub(
                    f"{self.base_url} sent a malformed stream event: {_trim(payload)}")) from None
            if isinstance(event, dict):
                yield event

    # -- errors -----------------------------------------------------------------------------------

    def _unreachable(self, exc: Exception) -> ModelError:
        reason = _trim(str(exc)) or type(exc).__name__
        return ModelError(self._scrub(
            f"Cannot reach {self.base_url} — is the server running? Start it or fix the URL in the "
            f"model spec ({reason})"))

    def _status_error(self, response: httpx.Response) -> ModelError:
        status = response.status_code
        detail = _server_message(response)
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
        return ModelError(self._scrub(text))

    def _scrub(self, text: str) -> str:
        """Remove the API key from ``text`` in case a server or library echoed it."""
        if self._api_key:
            text = text.replace(self._api_key, "***")
        return text


def _trim(text: str, limit: int = _MAX_SERVER_MESSAGE) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _error_text(data: Any) -> str:
    """The message out of ``{"error": {"message": ...}}``, ``{"error": "..."}`` or ``{"detail": ...}``."""
    if isinstance(data, dict):
        for key in ("error", "detail", "message"):
            if key in data:
                inner = data[key]
                if isinstance(inner, dict):
                    return _trim(str(inner.get("message") or json.dumps(inner)))
                return _trim(str(inner))
    return _trim(json.dumps(data))


def _server_message(response: httpx.Response) -> str:
    try:
        return _error_text(response.json())
    except (ValueError, httpx.ResponseNotRead):
        try:
            return _trim(response.text)
        except httpx.ResponseNotRead:
            return ""
