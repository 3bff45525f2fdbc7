"""Screenshots of conversations as persona samples: a vision model writes the transcript.

:func:`transcribe_screenshot` reads a ``.png``/``.jpg``/``.jpeg``/``.webp`` file, checks that its
bytes really are that kind of image, and sends it to an OpenAI-compatible chat completion as an
``image_url`` content part holding a ``data:`` URL, asking for a ``Name: message`` transcript —
the layout the persona bootstrap's parser and extractor read.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, Protocol

from minetune.errors import MinetuneError, ModelError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MAX_IMAGE_BYTES = 20 * 1024 * 1024  # what the larger hosted vision APIs accept per image

TRANSCRIBE_PROMPT = (
    "This image is a screenshot of a chat conversation. Write out the conversation as a plain "
    "transcript, one message per line, each starting with the sender's name and a colon "
    "(for example 'Anna: see you at 8?'). Use the names shown in the screenshot; if none are shown, "
    "use 'Me' for the messages on the right and 'Them' for those on the left. Copy the messages "
    "verbatim, in order, including emoji. Reply with the transcript only."
)


class ImageSampleError(MinetuneError):
    """An image cannot be used as a conversation sample."""


class VisionModel(Protocol):
    """What a vision model must offer: a raw OpenAI-style chat completion (see OpenAICompatModel)."""

    spec: str

    def chat_completion(self, messages: list[Any], params: Any) -> dict[str, Any]: ...


def is_image_path(path: str | Path) -> bool:
    """Whether ``path`` names a file of a supported image type (by its suffix)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _mime_type(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def read_image(path: str | Path) -> tuple[bytes, str]:
    """The bytes and MIME type of an image file; :class:`ImageSampleError` when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise ImageSampleError(f"Sample image {path} does not exist or is not a file.")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageSampleError(f"Cannot read {path.name}: {exc.strerror or exc}.") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageSampleError(f"{path.name} is larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MiB.")
    mime = _mime_type(data)
    if mime is None:
        raise ImageSampleError(f"{path.name} is not a PNG, JPEG or WebP image (its bytes say otherwise).")
    return data, mime


def data_url(data: bytes, mime: str) -> str:
    """``data:<mime>;base64,<data>``."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def transcribe_screenshot(path: str | Path, model: Any) -> str:
    """The conversation in the screenshot at ``path`` as ``Name: message`` lines, written by ``model``.

    ``model`` must be an OpenAI-compatible model (it needs ``chat_completion``: image content
    parts go through unchanged). Raises :class:`ImageSampleError` for a bad image, a model that
    cannot take images, a failed call or an empty reply.
    """
    name = Path(path).name
    data, mime = read_image(path)
    if not callable(getattr(model, "chat_completion", None)):
        spec = getattr(model, "spec", type(model).__name__)
        raise ImageSampleError(
            f"Reading {name} needs an OpenAI-compatible vision model; {spec} cannot take images "
            "(pass --vision-model openai-compatible:MODEL@URL)."
        )
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": TRANSCRIBE_PROMPT},
                {"type": "image_url", "image_url": {"url": data_url(data, mime)}},
            ],
        }
    ]
    try:
        reply = model.chat_completion(messages, {"temperature": 0.0, "max_tokens": 2000})
        text = reply["choices"][0]["message"].get("content") or ""
    except ModelError as exc:
        raise ImageSampleError(f"The vision model could not read {name}: {exc}") from None
    except (KeyError, IndexError, TypeError, AttributeError):
        raise ImageSampleError(f"The vision model's reply for {name} has no message.") from None
    text = str(text).strip()
    if not text:
        raise ImageSampleError(f"The vision model found no conversation in {name}.")
    return text
