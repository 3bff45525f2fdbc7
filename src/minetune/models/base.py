"""The one protocol every backend implements, and the value types it returns."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypedDict, runtime_checkable

from minetune.errors import ModelError


class Message(TypedDict):
    """One chat message in the OpenAI layout."""

    role: str  # "system" | "user" | "assistant"
    content: str


class UpstreamError(ModelError):
    """The upstream answered with an HTTP error: ``status`` and its OpenAI ``error`` object (key
    scrubbed; None for auth errors, which may echo the key), so a proxy can pass it on."""

    def __init__(self, message: str, *, status: int, error: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error = error


class UnsupportedFieldError(ModelError):
    """A backend cannot honour a request field (a local model asked for ``logprobs``...)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Completion:
    """A finished response. Token counts are None when the backend does not report them."""

    text: str
    model: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None


class CompletionStream:
    """Iterate to receive text deltas; afterwards ``completion`` holds the finished response.

    Wraps a generator that yields ``str`` deltas and *returns* a :class:`Completion`.
    """

    def __init__(self, deltas: Generator[str, None, Completion]) -> None:
        self._deltas = deltas
        self.completion: Completion | None = None

    def __iter__(self) -> Iterator[str]:
        self.completion = yield from self._deltas

    def close(self) -> None:
        """Stop early: the backend's generator is closed, so it releases its connection now."""
        self._deltas.close()

    def collect(self) -> Completion:
        """Drain the stream and return the completion."""
        for _ in self:
            pass
        assert self.completion is not None
        return self.completion


@runtime_checkable
class ChatModel(Protocol):
    """A chat backend. ``spec`` is the model spec string it was built from."""

    spec: str

    def complete(
        self, messages: list[Message], *, temperature: float | None = None, max_tokens: int | None = None
    ) -> Completion:
        """Return one full response to ``messages``; a fresh sample on every call."""
        ...

    def stream(
        self, messages: list[Message], *, temperature: float | None = None, max_tokens: int | None = None
    ) -> CompletionStream:
        """Like :meth:`complete`, yielding text deltas as they arrive."""
        ...
