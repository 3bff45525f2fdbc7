"""Corrected speech as a Hugging Face ``audiofolder`` dataset, and back.

Layout (what ``datasets.load_dataset("audiofolder", data_dir=DIR)`` reads)::

    DIR/metadata.jsonl     one JSON object per clip: file_name, transcription, and minetune's
                           original (what the model heard), changes, seconds, sha256
    DIR/clips/<sha256>.<ext>

``metadata.jsonl`` is also the plain JSONL export. Files are written private (0600, folders 0700).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minetune.errors import MinetuneError
from minetune.files import FILE_MODE, private_dirs

METADATA = "metadata.jsonl"
CLIPS = "clips"
MAX_ROWS = 100_000


@dataclass(frozen=True)
class SpeechRow:
    """One clip with its settled text (and, when known, what the model had heard)."""

    data: bytes
    ext: str
    transcription: str
    original: str | None = None
    changes: list[dict[str, str]] = field(default_factory=list)
    seconds: float | None = None


def write_audiofolder(rows: Iterable[SpeechRow], out_dir: str | Path) -> int:
    """Write ``rows`` as an audiofolder dataset in ``out_dir``; the number of rows written."""
    root = private_dirs(Path(out_dir))
    private_dirs(root / CLIPS)
    count = 0
    fd = os.open(root / METADATA, os.O_CREAT | os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW, FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as meta:
        for row in rows:
            sha = hashlib.sha256(row.data).hexdigest()
            name = f"{CLIPS}/{sha}.{row.ext}"
            clip = root / name
            if not clip.exists():
                cfd = os.open(clip, os.O_CREAT | os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW, FILE_MODE)
                with os.fdopen(cfd, "wb") as handle:
                    handle.write(row.data)
            record: dict[str, Any] = {"file_name": name, "transcription": row.transcription, "sha256": sha}
            if row.original is not None:
                record["original"] = row.original
            if row.changes:
                record["changes"] = row.changes
            if row.seconds is not None:
                record["seconds"] = round(row.seconds, 3)
            meta.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def read_audiofolder(data_dir: str | Path) -> list[SpeechRow]:
    """The rows of an audiofolder dataset (``metadata.jsonl`` with ``file_name`` and a
    ``transcription``, ``text`` or ``sentence`` column); MinetuneError naming the bad line."""
    root = Path(data_dir)
    meta = root / METADATA
    if not meta.is_file():
        raise MinetuneError(f"{root} has no {METADATA} (an audiofolder dataset lists its clips there).")
    rows: list[SpeechRow] = []
    resolved = root.resolve()
    with meta.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            if len(rows) >= MAX_ROWS:
                raise MinetuneError(f"{meta} has more than {MAX_ROWS:,} rows.")
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise MinetuneError(f"{meta}:{number}: not JSON ({exc.msg}).") from None
            if not isinstance(item, dict):
                raise MinetuneError(f"{meta}:{number}: expected a JSON object.")
            text = item.get("transcription", item.get("text", item.get("sentence")))
            name = item.get("file_name")
            if not isinstance(name, str) or not isinstance(text, str):
                raise MinetuneError(f"{meta}:{number}: needs file_name and transcription (or text).")
            clip = (root / name).resolve()
            if not clip.is_relative_to(resolved) or not clip.is_file():
                raise MinetuneError(f"{meta}:{number}: {name!r} is not a file inside {root}.")
            original = item.get("original")
            rows.append(
                SpeechRow(
                    clip.read_bytes(),
                    clip.suffix.lower().lstrip(".") or "wav",
                    text,
                    original if isinstance(original, str) else None,
                )
            )
    return rows
