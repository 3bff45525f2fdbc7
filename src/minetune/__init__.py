"""minetune: a personal AI program that learns on the job from its own user.

Library use::

    from minetune import Session
    with Session.open(model="openai-compatible:my-model@http://127.0.0.1:8080/v1") as chat:
        reply = chat.send("Write a haiku about tea")
        chat.rate(3, "more about the smell")
        chat.retry()

Names are imported lazily so that ``import minetune`` (and the CLI) start fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Session": "minetune.loop",
    "Response": "minetune.loop",
    "Store": "minetune.store",
    "Settings": "minetune.config",
    "load_settings": "minetune.config",
    "PraiseDetector": "minetune.feedback",
    "ChatModel": "minetune.models",
    "Completion": "minetune.models",
    "parse_spec": "minetune.models",
    "resolve_model": "minetune.models",
    "MinetuneError": "minetune.errors",
}

__all__ = [
    "ChatModel",
    "Completion",
    "MinetuneError",
    "PraiseDetector",
    "Response",
    "Session",
    "Settings",
    "Store",
    "__version__",
    "load_settings",
    "parse_spec",
    "resolve_model",
]

if TYPE_CHECKING:
    from minetune.config import Settings, load_settings
    from minetune.errors import MinetuneError
    from minetune.feedback import PraiseDetector
    from minetune.loop import Response, Session
    from minetune.models import ChatModel, Completion, parse_spec, resolve_model
    from minetune.store import Store


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'minetune' has no attribute {name!r}")
