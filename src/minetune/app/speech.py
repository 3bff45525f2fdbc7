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
import os
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minetune.app.exchange import answer_program, check_length
from minetune.config import Settings
from minetune.errors import FeedbackError, MinetuneError, NotFoundError, StoreError
from minetune.files import private_tree
from minetune.models.audio import Clip, read
from minetune.models.transcribe import (
    Transcriber,
    learned_terms,
    resolve_transcriber,
    vocabulary_prompt,
    word_changes,
)
from minetune.store import Store
from minetune.store.audio import LabelledClip, parse_ref, save_clip
from minetune.store.exchanges import record_exchange
from minetune.store.schema import Lesson, ProgramVersion
from minetune.train.whisper import WhisperGate, WhisperLoraConfig

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
    paths: Sequence[str | Path],
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


# -- the weight layer -----------------------------------------------------------------------------

SPEECH_METHOD = "whisper-lora"
HELD_OUT_FRACTION = 0.25


@dataclass(frozen=True)
class SpeechUpdateResult:
    """One incremental update: whether the gate kept it, why, and what it measured."""

    accepted: bool
    reason: str
    metrics: dict[str, Any]
    new_clips: int
    replayed: int
    held_out: int
    adapter_id: int | None = None
    version: int | None = None
    parent_id: int | None = None


def _held_out(clips: list[LabelledClip], fraction: float) -> set[int]:
    """Held-out turns chosen by the clip's hash (a clip never moves between sets as data grows);
    at least one when there are two clips or more."""
    if len(clips) < 2:
        return set()
    bucket = {c.turn_id: int(c.ref.sha256[:8], 16) / 0xFFFFFFFF for c in clips}
    chosen = {t for t, b in bucket.items() if b < fraction}
    if not chosen:
        chosen = {min(bucket, key=lambda t: bucket[t])}
    if len(chosen) == len(clips):
        chosen.discard(max(bucket, key=lambda t: bucket[t]))
    return chosen


def update_adapter(
    store: Store,
    settings: Settings,
    program: str = SPEECH_PROGRAM,
    *,
    config: WhisperLoraConfig | None = None,
    gate: WhisperGate | None = None,
    held_out_turns: Sequence[int] | None = None,
    cancel: threading.Event | None = None,
) -> SpeechUpdateResult:
    """Train the program's Whisper adapter further on the clips corrected since the last update,
    replaying older ones, and keep it only if the gate passes (held-out WER, retention): a kept
    update is recorded with its lineage and published as a new program version serving it."""
    from minetune.models.audio import decode
    from minetune.models.spec import parse_spec
    from minetune.store import adapters as adapters_db
    from minetune.store.audio import clip_path, labelled_clips
    from minetune.train.base import adapters_root
    from minetune.train.whisper import SpeechExample, train_update

    version = speech_program(store, program)
    spec = parse_spec(version.model_spec or "")
    if spec.backend != "hf":
        raise MinetuneError(
            f"Program {program!r} transcribes with {version.model_spec!r}; weight updates need a local "
            "Whisper model (hf:<dir>). Transcribe with --model hf:<dir> first."
        )
    parent = adapters_db.active_adapter(store, program)
    lineage = {int(a) for a in (parent.lineage_attempt_ids if parent else [])}
    clips = labelled_clips(store, program, CORRECTION_SPEC)
    held = set(held_out_turns) if held_out_turns is not None else _held_out(clips, HELD_OUT_FRACTION)

    def example(c: LabelledClip) -> SpeechExample:
        data = clip_path(settings.home, store.user_name, c.ref).read_bytes()
        return SpeechExample(decode(data, f"clip.{c.ref.ext}").samples, c.text, c.attempt_ids)

    new = [example(c) for c in clips if c.turn_id not in held and not set(c.attempt_ids) <= lineage]
    replay = [example(c) for c in clips if c.turn_id not in held and set(c.attempt_ids) <= lineage]
    held_out = [example(c) for c in clips if c.turn_id in held]
    if not new:
        raise MinetuneError(f"No clips of {program!r} were corrected since the last update.")
    root = adapters_root(settings, program, store.user_name)
    work = root / f"incoming-{os.getpid()}-{time.time_ns()}"
    try:
        update = train_update(
            spec.model,
            work,
            new,
            parent_adapter=parent.path if parent else None,
            replay=replay,
            held_out=held_out,
            config=config,
            cancel=cancel,
            prompt=vocabulary_prompt(vocabulary_terms(version)),
        )
        decision = (gate or WhisperGate()).decide(update, len(held_out))
        metrics = decision.report | {"gate": decision.reason, "accepted": decision.accepted}
        if not decision.accepted:
            return SpeechUpdateResult(
                False,
                decision.reason,
                metrics,
                len(new),
                update.replayed,
                len(held_out),
                parent_id=parent.id if parent else None,
            )

        def place(adapter_id: int) -> str:
            final = root / str(adapter_id)
            if final.exists():
                shutil.rmtree(final)
            work.rename(final)
            private_tree(final)
            return str(final)

        adapter, published = adapters_db.publish_adapter(
            store,
            program,
            place=place,
            serve_spec=lambda path: f"hf:{spec.model}?adapter={path}",
            method=SPEECH_METHOD,
            base_model=spec.model,
            parent_id=parent.id if parent else None,
            example_attempt_ids=update.trained_attempt_ids,
            metrics=metrics | {"config": (config or WhisperLoraConfig()).as_dict()},
            note=f"Whisper LoRA update ({len(new)} new, {update.replayed} replayed): {decision.reason}",
        )
        return SpeechUpdateResult(
            True,
            decision.reason,
            metrics,
            len(new),
            update.replayed,
            len(held_out),
            adapter.id,
            published.number,
            parent.id if parent else None,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- datasets -------------------------------------------------------------------------------------

IMPORTED_SPEC = "import:audiofolder"


def export_dataset(
    store: Store, settings: Settings, out_dir: str | Path, program: str = SPEECH_PROGRAM
) -> int:
    """Write every labelled clip of ``program`` as a Hugging Face audiofolder dataset (its
    ``metadata.jsonl`` is the JSONL export); the number of clips."""
    from minetune.io.audiofolder import SpeechRow, write_audiofolder
    from minetune.store.audio import clip_path, labelled_clips

    speech_program(store, program)
    rows = []
    for clip in labelled_clips(store, program, CORRECTION_SPEC):
        attempts = {a.id: a for a in store.turn(clip.turn_id).attempts}
        first = attempts[min(attempts)]
        extra = next((a.extra or {} for a in attempts.values() if a.model_spec == CORRECTION_SPEC), {})
        rows.append(
            SpeechRow(
                clip_path(settings.home, store.user_name, clip.ref).read_bytes(),
                clip.ref.ext,
                clip.text,
                first.response if first.response != clip.text else None,
                list(extra.get("changes", [])),
                clip.ref.seconds,
            )
        )
    return write_audiofolder(rows, out_dir)


class _Given:
    """A 'backend' that hears what an imported dataset says was heard."""

    spec = IMPORTED_SPEC

    def __init__(self, text: str) -> None:
        self.text = text

    def transcribe(self, clip: Clip, prompt: str | None = None) -> Any:
        from minetune.models.transcribe import Transcription

        return Transcription(self.text, 1, 0.0)


def import_dataset(
    store: Store, settings: Settings, data_dir: str | Path, program: str = SPEECH_PROGRAM
) -> list[int]:
    """Import an audiofolder dataset: each clip is stored with what was heard (``original``, or
    its transcription) and, where the transcription differs, corrected to it (so its words join
    the vocabulary); a clip without an ``original`` is rated 5 stars. The transcript ids."""
    from minetune.io.audiofolder import read_audiofolder
    from minetune.models.audio import decode

    rows = read_audiofolder(data_dir)
    clips = [decode(row.data, f"clip.{row.ext}") for row in rows]
    version = speech_program(store, program)
    ids = []
    for row, clip in zip(rows, clips, strict=True):
        heard = row.original if row.original is not None else row.transcription
        stored = _store_transcript(store, settings, version, _Given(heard), clip, None)
        ids.append(stored.attempt_id)
        correct(store, stored.attempt_id, row.transcription)
    return ids
