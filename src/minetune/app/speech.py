"""Speech-to-text that learns its user's words, on the same store as chat (no second system).

- A **transcript** is an attempt: its turn's user message is the clip's audio reference
  (:func:`minetune.store.audio.audio_ref`; the bytes live content-addressed under the home), its
  ``messages`` the prompt sent (the vocabulary) and the reference, its ``response`` the text, with
  model, program version and latency as for a chat answer; ``extra`` says ``kind: transcript``.
- A **correction** is feedback: the transcript gets a critique naming the words that were wrong
  (a jiwer alignment) and keeps the corrected text; the corrected text becomes the turn's next
  attempt (``model_spec`` ``user:correction``), rated 5 stars — the preferred answer, as a retry
  that earned 5 stars is for chat. Forget, export and bundles therefore treat it as they treat chat.
- The **vocabulary** (instant layer) is the program's lessons: each term the user corrected
  becomes a lesson (origin ``vocabulary``) linked to the correction, published as a new program
  version, and every later request's Whisper prompt lists them (:func:`vocabulary_prompt`).
  Forgetting the corrected clip retires its terms (the lesson machinery of forget).

Speech lives in its own program (default :data:`SPEECH_PROGRAM`), so chat demos, judges and
training sets never see audio references.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minetune.app.exchange import answer_program, check_length
from minetune.config import Settings
from minetune.errors import FeedbackError, MinetuneError, NotFoundError, StoreError
from minetune.models.audio import Clip, read
from minetune.models.transcribe import (
    Transcriber,
    learned_terms,
    resolve_transcriber,
    vocabulary_prompt,
    word_changes,
)
from minetune.store import Store
from minetune.store.audio import parse_ref, save_clip
from minetune.store.exchanges import record_exchange
from minetune.store.schema import Lesson, ProgramVersion

SPEECH_PROGRAM = "speech"
SPEECH_INSTRUCTIONS = "Transcribe the user's speech."
CORRECTION_SPEC = "user:correction"
VOCABULARY = "vocabulary"


class NotATranscriptError(FeedbackError):
    """A correction for an attempt that is not a transcript."""


@dataclass(frozen=True)
class Transcript:
    """One stored transcript."""

    attempt_id: int
    turn_id: int
    conversation_id: int
    file: str
    text: str
    seconds: float
    chunks: int
    latency_ms: float
    model_spec: str
    version: int
    prompt: str | None


@dataclass(frozen=True)
class Correction:
    """A stored correction: the feedback on the transcript, the corrected attempt, what changed."""

    transcript_id: int
    corrected_id: int
    feedback_id: int
    wer: float
    changes: list[dict[str, str]]
    learned: list[str] = field(default_factory=list)  # new vocabulary terms
    version: int | None = None  # the version publishing them


def speech_program(
    store: Store, program: str = SPEECH_PROGRAM, model_spec: str | None = None
) -> ProgramVersion:
    """The active version of the speech program, created on first use (with ``model_spec``)."""
    try:
        return store.active_version(program)
    except NotFoundError:
        with contextlib.suppress(StoreError):  # created meanwhile by another process
            store.create_program(
                program, SPEECH_INSTRUCTIONS, model_spec, "speech-to-text that learns your words"
            )
        return store.active_version(program)


def vocabulary_terms(version: ProgramVersion) -> list[str]:
    """The version's vocabulary, newest first (its lessons are the speech program's terms)."""
    items = [x for x in (version.lessons or []) if isinstance(x, dict) and x.get("text")]
    items.sort(key=lambda x: int(x.get("id") or 0), reverse=True)
    return [str(x["text"]) for x in items]


def transcribe(
    store: Store,
    settings: Settings,
    paths: list[str | Path],
    *,
    program: str = SPEECH_PROGRAM,
    model: str | None = None,
    transcriber: Transcriber | None = None,
) -> list[Transcript]:
    """Transcribe each file with the program's model (or ``model``), prompting with the
    vocabulary, and store each transcript with its audio. A program without a model keeps the
    one given here. Every file is read before the first is sent, so a bad one stores nothing."""
    clips = [read(p) for p in paths]
    version = speech_program(store, program, model)
    spec = model or version.model_spec
    if not spec:
        raise MinetuneError(
            f"Program {program!r} has no speech model yet: pass --model (openai:whisper-1, "
            "openai-compatible:<model>@<url> or hf:<whisper dir>)."
        )
    if model and not version.model_spec:
        version = store.add_version(program, note=f"speech model {model}", model_spec=model)
    backend = transcriber or resolve_transcriber(settings, spec)
    prompt = vocabulary_prompt(vocabulary_terms(version))
    return [_store_transcript(store, settings, version, backend, clip, prompt) for clip in clips]


def _store_transcript(
    store: Store,
    settings: Settings,
    version: ProgramVersion,
    backend: Transcriber,
    clip: Clip,
    prompt: str | None,
) -> Transcript:
    heard = backend.transcribe(clip, prompt)
    ref = save_clip(settings.home, store.user_name, clip.data, clip.ext, clip.seconds)
    messages: list[dict[str, Any]] = [{"role": "system", "content": prompt}] if prompt else []
    messages.append({"role": "user", "content": str(ref)})
    ids = record_exchange(
        store,
        version.program_id,
        None,
        str(ref),
        title=clip.name,
        source="speech",
        version_id=version.id,
        model_spec=backend.spec,
        messages=messages,
        response=heard.text,
        critique_used=None,
        latency_ms=round(heard.latency_ms, 3),
        prompt_tokens=None,
        completion_tokens=None,
        extra={
            "kind": "transcript",
            "seconds": round(clip.seconds, 3),
            "chunks": heard.chunks,
            "file": clip.name,
        },
    )
    return Transcript(
        ids.attempt_id,
        ids.turn_id,
        ids.conversation_id,
        clip.name,
        heard.text,
        clip.seconds,
        heard.chunks,
        heard.latency_ms,
        backend.spec,
        version.number,
        prompt,
    )


def correct(store: Store, attempt_id: int, text: str) -> Correction:
    """Record the user's correction of transcript ``attempt_id`` (see the module docstring) and
    learn the corrected words as vocabulary. A correction that changes nothing rates the
    transcript 5 stars instead."""
    text = " ".join(text.split())
    if not text:
        raise FeedbackError("A correction needs the corrected text.")
    check_length(text, "The correction")
    program = answer_program(store, attempt_id)
    attempt = store.attempt(attempt_id)
    turn = store.turn(attempt.turn_id)
    if parse_ref(turn.user_message) is None or (attempt.extra or {}).get("kind") not in (
        "transcript",
        "correction",
    ):
        raise NotATranscriptError(
            f"Answer {attempt_id} is not a transcript; rate chat answers with `minetune rate`."
        )
    changes, error_rate = word_changes(attempt.response, text)
    if not changes:
        fb = store.add_feedback(attempt_id, "explicit", stars=5)
        return Correction(attempt_id, attempt_id, fb.id, 0.0, [])
    summary = "; ".join(f"heard {c.heard!r}, said {c.said!r}" for c in changes)
    fb = store.add_feedback(
        attempt_id, "explicit", critique=f"Transcript corrected: {summary}"[:4000], text=text
    )
    corrected = store.add_attempt(
        attempt.turn_id,
        version_id=attempt.version_id,
        model_spec=CORRECTION_SPEC,
        messages=list(attempt.messages or []),
        response=text,
        critique_used=None,
        latency_ms=0.0,
        extra={
            "kind": "correction",
            "corrects": attempt_id,
            "wer": round(error_rate, 4),
            "changes": [c.as_dict() for c in changes],
        },
    )
    store.add_feedback(corrected.id, "explicit", stars=5)
    known = {t.lower() for t in vocabulary_terms(store.active_version(program))}
    new_terms = [t for t in dict.fromkeys(learned_terms(changes)) if t.lower() not in known]
    version = None
    if new_terms:
        published, _ = store.change_lessons(
            program,
            add=[{"text": t, "origin": VOCABULARY, "feedback_id": fb.id} for t in new_terms],
            note=f"vocabulary from the correction of transcript {attempt_id}",
            sources={"vocabulary_feedback": fb.id},
        )
        version = published.number
    return Correction(
        attempt_id, corrected.id, fb.id, error_rate, [c.as_dict() for c in changes], new_terms, version
    )


# -- the vocabulary -------------------------------------------------------------------------------


def vocabulary(store: Store, program: str = SPEECH_PROGRAM) -> list[Lesson]:
    """The program's active vocabulary terms (oldest first)."""
    speech_program(store, program)
    return store.lessons(program)


def add_terms(store: Store, terms: list[str], program: str = SPEECH_PROGRAM) -> ProgramVersion:
    """Add terms by hand (a new version); terms already known are skipped."""
    speech_program(store, program)
    known = {lesson.text.lower() for lesson in store.lessons(program)}
    fresh = [t for t in dict.fromkeys(" ".join(t.split()) for t in terms) if t and t.lower() not in known]
    if not fresh:
        raise MinetuneError("Nothing to add: every term is already in the vocabulary.")
    version, _ = store.change_lessons(
        program,
        add=[{"text": t, "origin": VOCABULARY} for t in fresh],
        note=f"vocabulary: added {', '.join(fresh)}",
    )
    return version


def remove_terms(store: Store, items: list[str], program: str = SPEECH_PROGRAM) -> ProgramVersion:
    """Retire terms, named by id or by text (a new version)."""
    active = vocabulary(store, program)
    by_text = {lesson.text.lower(): lesson.id for lesson in active}
    ids = []
    for item in items:
        if item.isdigit() and any(lesson.id == int(item) for lesson in active):
            ids.append(int(item))
        elif item.lower() in by_text:
            ids.append(by_text[item.lower()])
        else:
            raise NotFoundError(f"No vocabulary term {item!r} in {program!r}. See `minetune vocab list`.")
    version, _ = store.change_lessons(program, retire=ids, note=f"vocabulary: removed {len(ids)} term(s)")
    return version
