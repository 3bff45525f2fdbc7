"""Audio clips kept with their transcripts: content-addressed files under ``MINETUNE_HOME``.

A clip is stored once per user as ``audio/<user>/<aa>/<sha256>.<ext>`` (folders 0700, the file
0600), the bytes exactly as given. A transcript's turn names its clip with an *audio reference*
(:func:`audio_ref`), ``minetune:audio:sha256:<hex>;ext=<ext>;seconds=<s>``, so the store's usual
machinery (lineage, forget, export) carries it like any user message. Forgetting the last turn that
references a clip deletes its file (:func:`delete_unreferenced`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from minetune.files import FILE_MODE, private_dirs, user_folder
from minetune.store.repo import Store
from minetune.store.schema import Conversation, Program, Turn

AUDIO_DIR = "audio"
REF_PREFIX = "minetune:audio:sha256:"
_REF = re.compile(
    r"^minetune:audio:sha256:(?P<sha>[0-9a-f]{64});ext=(?P<ext>[a-z0-9]{1,8});seconds=(?P<sec>[0-9.]+)$"
)
_EXT = re.compile(r"^[a-z0-9]{1,8}$")


@dataclass(frozen=True)
class AudioRef:
    """A stored clip: its SHA-256, file extension and duration in seconds."""

    sha256: str
    ext: str
    seconds: float

    def __str__(self) -> str:
        return f"{REF_PREFIX}{self.sha256};ext={self.ext};seconds={self.seconds:.3f}"


def audio_ref(sha256: str, ext: str, seconds: float) -> str:
    """The text a transcript's turn stores in place of the audio."""
    return str(AudioRef(sha256, ext, seconds))


def parse_ref(message: str) -> AudioRef | None:
    """The clip a turn's message references, or None for any other message."""
    match = _REF.match(message or "")
    if match is None:
        return None
    return AudioRef(match["sha"], match["ext"], float(match["sec"]))


def audio_root(home: str | Path, user: str) -> Path:
    return Path(home) / AUDIO_DIR / user_folder(user)


def clip_path(home: str | Path, user: str, ref: AudioRef) -> Path:
    """Where the clip's bytes live."""
    return audio_root(home, user) / ref.sha256[:2] / f"{ref.sha256}.{ref.ext}"


def save_clip(home: str | Path, user: str, data: bytes, ext: str, seconds: float) -> AudioRef:
    """Store ``data`` content-addressed (once: the same bytes are written only the first time)."""
    ext = ext.lower().lstrip(".")
    if not _EXT.match(ext):
        raise ValueError(f"bad audio extension {ext!r}")
    ref = AudioRef(hashlib.sha256(data).hexdigest(), ext, round(seconds, 3))
    path = clip_path(home, user, ref)
    if path.exists():
        return ref
    private_dirs(path.parent)
    temp = path.with_name(f".{path.name}.{os.getpid()}.part")
    fd = os.open(temp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(temp, FILE_MODE)
        os.replace(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    return ref


def referenced(store: Store, refs: list[AudioRef]) -> set[str]:
    """The SHA-256s among ``refs`` that some turn of this user still references."""
    if not refs:
        return set()
    found: set[str] = set()
    with store.db.transaction() as s:
        for ref in refs:
            hit = s.scalar(
                select(Turn.id)
                .join(Conversation, Turn.conversation_id == Conversation.id)
                .join(Program, Conversation.program_id == Program.id)
                .where(
                    Program.user_id == store.user_id, Turn.user_message.startswith(REF_PREFIX + ref.sha256)
                )
                .limit(1)
            )
            if hit is not None:
                found.add(ref.sha256)
    return found


def delete_unreferenced(
    store: Store, home: str | Path, messages: list[str], *, dry_run: bool = False
) -> list[str]:
    """Delete the clips the forgotten turns' ``messages`` referenced that no remaining turn
    references; the paths deleted (or, with ``dry_run``, that would be)."""
    refs = list({r.sha256: r for r in map(parse_ref, messages) if r is not None}.values())
    if not refs:
        return []
    still = set() if dry_run else referenced(store, refs)
    paths: list[str] = []
    for ref in refs:
        if ref.sha256 in still:
            continue
        path = clip_path(home, store.user_name, ref)
        if not path.exists():
            continue
        paths.append(str(path))
        if not dry_run:
            path.unlink()
            with contextlib.suppress(OSError):
                path.parent.rmdir()  # only when empty
    return paths


@dataclass(frozen=True)
class LabelledClip:
    """A clip whose words the user settled: the corrected text (or a transcript rated 5 stars),
    with the attempts it derives from (the transcript and its correction)."""

    turn_id: int
    ref: AudioRef
    text: str
    attempt_ids: tuple[int, ...]


def labelled_clips(store: Store, program: str, correction_spec: str) -> list[LabelledClip]:
    """Every labelled clip of ``program``, oldest first; turns excluded on the dataset page are
    left out. The newest correction wins; without one, the newest 5-star complete transcript."""
    from sqlalchemy.orm import selectinload

    from minetune.store.repo import effective_ratings
    from minetune.store.schema import COMPLETE, Attempt

    with store.db.transaction() as s:
        prog = store.program_row(s, program)
        turns = s.scalars(
            select(Turn)
            .join(Conversation, Turn.conversation_id == Conversation.id)
            .where(Conversation.program_id == prog.id, Turn.excluded.is_(False))
            .options(selectinload(Turn.attempts).selectinload(Attempt.feedback))
            .order_by(Turn.id)
        ).all()
        out: list[LabelledClip] = []
        for turn in turns:
            ref = parse_ref(turn.user_message)
            if ref is None:
                continue
            done = [a for a in turn.attempts if a.status == COMPLETE]
            stars = effective_ratings((fb.attempt_id, fb.kind, fb.stars) for a in done for fb in a.feedback)
            corrections = [a for a in done if a.model_spec == correction_spec]
            chosen = (
                corrections[-1]
                if corrections
                else next((a for a in reversed(done) if stars.get(a.id) == 5), None)
            )
            if chosen is None or not chosen.response.strip():
                continue
            out.append(LabelledClip(turn.id, ref, chosen.response, tuple(a.id for a in done)))
        return out
