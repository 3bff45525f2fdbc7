"""Speech-to-text that learns its user's words: transcribe (HTTP and a tiny local Whisper) →
correct → vocabulary in the next prompt; forget a clip erases its audio, transcript and terms."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fake_audio import FakeTranscriptions, build_tiny_whisper, speak
from minetune.app import speech
from minetune.app.forget import forget
from minetune.config import load_settings
from minetune.errors import MinetuneError
from minetune.models.audio import AudioError, read
from minetune.models.transcribe import learned_terms, vocabulary_prompt, wer, word_changes
from minetune.store import Store
from minetune.store.adapters import publish_adapter
from minetune.store.audio import clip_path, parse_ref

CANARY = "Zorblaxian"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "minetune.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "40"},
        timeout=120,
    )


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_tiny_whisper(tmp_path_factory.mktemp("tiny-whisper"))


@pytest.fixture
def fake_stt() -> Iterator[FakeTranscriptions]:
    with FakeTranscriptions() as fake:
        yield fake


def test_transcribe_correct_then_the_vocabulary_is_in_the_next_prompt(
    tmp_path: Path, fake_stt: FakeTranscriptions
) -> None:
    clip = speak("deploy my pods on kubernetes", tmp_path / "pods.wav")
    spec = f"openai-compatible:whisper-1@{fake_stt.base_url}"
    fake_stt.queue("deploy my pods on cube and eighties")
    first = run("transcribe", clip, "--model", spec)
    assert first.returncode == 0, first.stderr
    transcript_id = int(re.search(r"transcript (\d+)", first.stdout).group(1))  # type: ignore[union-attr]
    sent = fake_stt.requests[0]
    assert sent["fields"]["model"] == "whisper-1"
    assert "prompt" not in sent["fields"]  # nothing learned yet
    assert sent["file"] == Path(clip).read_bytes() and sent["file_name"] == "pods.wav"
    assert "Authorization" not in sent["headers"]  # no key is scoped to this URL

    fixed = run("correct", str(transcript_id), "deploy my pods on Kubernetes")
    assert fixed.returncode == 0, fixed.stderr
    assert "Kubernetes" in fixed.stdout

    second = run(
        "transcribe", speak("kubernetes again", tmp_path / "again.wav")
    )  # the program keeps its model
    assert second.returncode == 0, second.stderr
    assert "Kubernetes" in fake_stt.requests[1]["fields"]["prompt"]

    store = Store.open(load_settings())
    attempt = store.attempt(transcript_id)
    turn = store.turn(attempt.turn_id)
    assert [a.response for a in turn.attempts] == [
        "deploy my pods on cube and eighties",
        "deploy my pods on Kubernetes",
    ]
    assert turn.attempts_to_5 == 2  # the corrected text is the preferred answer
    assert attempt.model_spec == spec and attempt.latency_ms >= 0 and attempt.version_id is not None
    assert (turn.attempts[1].extra or {})["changes"] == [
        {"kind": "substitute", "heard": "cube and eighties", "said": "Kubernetes"}
    ]
    ref = parse_ref(turn.user_message)
    assert (
        ref is not None
        and clip_path(load_settings().home, "local", ref).read_bytes() == Path(clip).read_bytes()
    )
    listed = run("vocab", "list")
    assert "Kubernetes" in listed.stdout


def test_audio_files_are_private_and_content_addressed(tmp_path: Path, fake_stt: FakeTranscriptions) -> None:
    clip = speak("hello world", tmp_path / "hello.wav")
    settings = load_settings()
    store = Store.open(settings)
    spec = f"openai-compatible:w@{fake_stt.base_url}"
    a, b = speech.transcribe(store, settings, [clip, clip], model=spec)
    ref = parse_ref(store.turn(a.turn_id).user_message)
    assert ref is not None and ref == parse_ref(store.turn(b.turn_id).user_message)
    path = clip_path(settings.home, "local", ref)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for folder in (path.parent, path.parent.parent, path.parent.parent.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    # forgetting one of two transcripts of the same clip keeps the file; the second deletes it
    forget(store, settings, turns=[a.turn_id])
    assert path.exists()
    report = forget(store, settings, turns=[b.turn_id])
    assert report.audio_files == [str(path)] and not path.exists()


def test_forget_a_clip_erases_audio_transcript_vocabulary_and_taints_the_adapter(
    tmp_path: Path, database_url: str, fake_stt: FakeTranscriptions
) -> None:
    settings = load_settings()
    store = Store.open(settings)
    spec = f"openai-compatible:w@{fake_stt.base_url}"
    fake_stt.queue("my favourite word is sorb laxian", "another clip", "third clip")
    (planted,) = speech.transcribe(
        store, settings, [speak("my favourite word", tmp_path / "a.wav")], model=spec
    )
    (kept,) = speech.transcribe(store, settings, [speak("another clip", tmp_path / "b.wav")])
    correction = speech.correct(store, planted.attempt_id, f"my favourite word is {CANARY}")
    assert correction.learned == [CANARY]
    (later,) = speech.transcribe(store, settings, [speak("third clip", tmp_path / "c.wav")])
    assert CANARY in (later.prompt or "")
    adapter, _ = publish_adapter(
        store,
        "speech",
        place=lambda i: str(tmp_path / f"adapter-{i}"),
        serve_spec=lambda p: None,
        method="whisper",
        base_model="hf:tiny",
        example_attempt_ids=[planted.attempt_id, correction.corrected_id, kept.attempt_id],
    )
    audio = clip_path(settings.home, "local", parse_ref(store.turn(planted.turn_id).user_message))  # type: ignore[arg-type]
    assert audio.exists()

    report = forget(store, settings, turns=[planted.turn_id])

    assert not audio.exists() and report.audio_files == [str(audio)]
    assert adapter.id in report.tainted_adapters
    assert [t.text for t in speech.vocabulary(store)] == []
    assert CANARY not in (vocabulary_prompt(speech.vocabulary_terms(store.active_version("speech"))) or "")
    for version in store.versions("speech"):
        assert CANARY not in repr((version.lessons, version.sources, version.note, version.instructions))
    assert CANARY not in repr(store.attempt(later.attempt_id).messages)
    store.close()
    hits = [p for p in Path(settings.home).rglob("*") if p.is_file() and CANARY.encode() in p.read_bytes()]
    assert hits == []


def test_a_tiny_local_whisper_transcribes_with_the_vocabulary_prompt(
    tmp_path: Path, tiny_whisper: str
) -> None:
    settings = load_settings()
    store = Store.open(settings)
    speech.add_terms(store, ["Kubernetes", "containerization"])
    long = tmp_path / "long.wav"
    speak("kubernetes " * 60, long)  # longer than 30 s: sent in pieces
    short = speak("containerization", tmp_path / "short.wav")
    results = speech.transcribe(store, settings, [short, long], model=f"hf:{tiny_whisper}")
    assert [r.chunks for r in results] == [1, 2]
    assert results[0].prompt == "Glossary: containerization, Kubernetes."
    stored = store.attempt(results[0].attempt_id)
    assert stored.model_spec == f"hf:{tiny_whisper}" and stored.messages[0]["content"] == results[0].prompt
    assert stored.response == results[0].text and isinstance(stored.response, str)


def test_word_changes_name_what_was_wrong() -> None:
    changes, rate = word_changes(
        "deploy my pods on cube and eighties today", "Deploy my pods on Kubernetes, today."
    )
    assert [c.as_dict() for c in changes] == [
        {"kind": "substitute", "heard": "cube and eighties", "said": "Kubernetes,"}
    ]
    assert learned_terms(changes) == ["Kubernetes"]
    assert rate == pytest.approx(3 / 6)
    missing, _ = word_changes("the", "the tachycardia")
    assert missing[0].kind == "missing" and learned_terms(missing) == ["tachycardia"]
    phrase, _ = word_changes("", "deploy my pods on Kubernetes with containerization")
    assert learned_terms(phrase) == ["Kubernetes", "containerization"]
    assert wer(["a b c"], [""]) == 1.0 and wer(["A, b."], ["a b"]) == 0.0


def test_vocabulary_is_versioned_editable_and_removable(tmp_path: Path) -> None:
    added = run("vocab", "add", "pneumothorax", "tachycardia")
    assert added.returncode == 0, added.stderr
    store = Store.open(load_settings())
    first = store.active_version("speech")
    assert speech.vocabulary_terms(first) == ["tachycardia", "pneumothorax"]
    removed = run("vocab", "remove", "pneumothorax")
    assert removed.returncode == 0, removed.stderr
    assert speech.vocabulary_terms(store.active_version("speech")) == ["tachycardia"]
    store.rollback("speech")  # versions are pointer moves: the older vocabulary comes back
    assert speech.vocabulary_terms(store.active_version("speech")) == ["tachycardia", "pneumothorax"]
    bad = run("vocab", "remove", "nosuchterm")
    assert bad.returncode == 1 and "No vocabulary term" in bad.stderr


def test_bad_audio_and_non_transcripts_are_refused(tmp_path: Path, fake_stt: FakeTranscriptions) -> None:
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio at all")
    with pytest.raises(AudioError):
        read(junk)
    result = run("transcribe", str(junk), "--model", f"openai-compatible:w@{fake_stt.base_url}")
    assert result.returncode == 1 and "not audio" in result.stderr and fake_stt.requests == []
    store = Store.open(load_settings())
    assert "speech" not in [p.name for p in store.programs()]  # a bad file stores nothing
    with pytest.raises(MinetuneError, match="no speech model"):
        speech.transcribe(store, load_settings(), [speak("hi", tmp_path / "hi.wav")])


def test_corrections_export_as_an_audiofolder_dataset_and_import_back(
    tmp_path: Path, fake_stt: FakeTranscriptions, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings()
    store = Store.open(settings)
    fake_stt.queue("deploy my pods on cube and eighties", "hello world")
    clips = [
        speak("deploy my pods on kubernetes", tmp_path / "a.wav"),
        speak("hello world", tmp_path / "b.wav"),
    ]
    first, second = speech.transcribe(
        store, settings, clips, model=f"openai-compatible:w@{fake_stt.base_url}"
    )
    speech.correct(store, first.attempt_id, "deploy my pods on Kubernetes")
    speech.correct(store, second.attempt_id, "hello world")  # confirmed as heard
    out = tmp_path / "dataset"
    assert speech.export_dataset(store, settings, out) == 2
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert [r["transcription"] for r in rows] == ["deploy my pods on Kubernetes", "hello world"]
    assert rows[0]["original"] == "deploy my pods on cube and eighties" and "original" not in rows[1]
    assert (out / rows[0]["file_name"]).read_bytes() == Path(clips[0]).read_bytes()
    assert stat.S_IMODE((out / "metadata.jsonl").stat().st_mode) == 0o600

    # The layout is the audiofolder one (metadata.jsonl with file_name); loading it through
    # `datasets` needs torchcodec for audio columns, which this environment does not install.
    assert all(set(r) >= {"file_name", "transcription"} and r["file_name"].startswith("clips/") for r in rows)

    monkeypatch.setenv("MINETUNE_HOME", str(tmp_path / "other-home"))
    other_settings = load_settings()
    other = Store.open(other_settings)
    ids = speech.import_dataset(other, other_settings, out)
    assert len(ids) == 2
    assert [t.text for t in speech.vocabulary(other)] == ["Kubernetes"]
    turn = other.turn(other.attempt(ids[0]).turn_id)
    assert [a.response for a in turn.attempts] == [
        "deploy my pods on cube and eighties",
        "deploy my pods on Kubernetes",
    ]
    assert speech.export_dataset(other, other_settings, tmp_path / "again") == 2
    assert (tmp_path / "again" / "metadata.jsonl").read_text() == (out / "metadata.jsonl").read_text()
