"""Chat backends behind one protocol, picked by a model spec string.

Import-light: httpx, torch and transformers load only when a backend is built or used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from minetune.models.base import ChatModel, Completion, CompletionStream, Message
from minetune.models.detect import describe_detection, resolve_model
from minetune.models.spec import ModelSpec, parse_spec

if TYPE_CHECKING:
    from minetune.models.local_hf import LocalHFModel
    from minetune.models.openai_compat import OpenAICompatModel

__all__ = [
    "ChatModel",
    "Completion",
    "CompletionStream",
    "LocalHFModel",
    "Message",
    "ModelSpec",
    "OpenAICompatModel",
    "describe_detection",
    "parse_spec",
    "resolve_model",
]


def __getattr__(name: str) -> Any:
    """Load the backend classes on first access."""
    if name == "OpenAICompatModel":
        from minetune.models.openai_compat import OpenAICompatModel

        return OpenAICompatModel
    if name == "LocalHFModel":
        from minetune.models.local_hf import LocalHFModel

        return LocalHFModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
