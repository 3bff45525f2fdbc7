"""Speech-to-text backends behind one small protocol, picked by a model spec string:

    openai:<model>                              OpenAI's /v1/audio/transcriptions (e.g. openai:whisper-1)
    openai-compatible:<model>@<http(s)://url>   any server with /v1/audio/transcriptions (whisper.cpp's
    vllm:<model>@<http(s)://url>                server, faster-whisper servers, vLLM, ...)
    hf:<dir>[?adapter=<dir>]                    a local Whisper-family model through transformers,
                                                optionally with a PEFT LoRA adapter

Both kinds take a *prompt* (Whisper's ``prompt`` / initial prompt): minetune renders the program's
learned vocabulary into it (:func:`vocabulary_prompt`). HTTP goes through the official ``openai``
SDK with only the key scoped to that base URL (:mod:`minetune.models.keys`); torch, transformers and
peft load only when a local model is first used. :func:`word_changes` aligns a transcript with its
correction word by word (jiwer) and names what was wrong.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from minetune.config import Settings
from minetune.errors import ModelError
from minetune.models import keys
from minetune.models.audio import CHUNK_SECONDS, SAMPLE_RATE, Clip, chunks, wav_bytes
from minetune.models.spec import parse_spec

# Longest clip sent whole over HTTP; longer ones go as 30 s WAV chunks (OpenAI takes 25 MB).
MAX_HTTP_SECONDS = 600.0
MAX_HTTP_BYTES = 24 * 1024 * 1024
MAX_PROMPT_CHARS = 800  # Whisper reads at most 224 prompt tokens


@dataclass(frozen=True)
class Transcription:
    """What a backend heard: the text, how many pieces it was sent in, and how long it took."""

    text: str
    chunks: int
    latency_ms: float


class Transcriber(Protocol):
    spec: str

    def transcribe(self, clip: Clip, prompt: str | None = None) -> Transcription: ...


def vocabulary_prompt(terms: list[str]) -> str | None:
    """The prompt that steers Whisper towards the user's words (None without any): the terms as
    a glossary sentence, newest first, cut to what Whisper reads."""
    seen: list[str] = []
    for term in terms:
        t = " ".join(term.split())
        if t and t.lower() not in {s.lower() for s in seen}:
            seen.append(t)
    if not seen:
        return None
    text = "Glossary: "
    kept: list[str] = []
    for term in seen:
        if len(text) + len(", ".join([*kept, term])) + 1 > MAX_PROMPT_CHARS:
            break
        kept.append(term)
    return text + ", ".join(kept) + "."


def resolve_transcriber(settings: Settings, spec_text: str, *, timeout: float = 300.0) -> Transcriber:
    """The backend for ``spec_text`` (ModelError naming the valid forms when it cannot be one)."""
    spec = parse_spec(spec_text)
    if spec.backend == "hf":
        return LocalWhisper(spec.model, adapter=spec.adapter, spec=spec.raw)
    if spec.backend == "ollama":
        raise ModelError(
            "Ollama has no speech-to-text endpoint; use openai:whisper-1, "
            "openai-compatible:<model>@<url> or hf:<whisper dir>"
        )
    base_url = settings.openai_base_url if spec.backend == "openai" else spec.base_url
    assert base_url is not None
    key = keys.key_for(settings, base_url, also=[spec.raw])
    if spec.backend == "openai" and key is None:
        raise ModelError(f"{spec.raw} needs an API key: {keys.key_help(settings, base_url)}")
    return HTTPTranscriber(
        spec.model,
        base_url,
        api_key=key.value if key else None,
        spec=spec.raw,
        timeout=timeout,
        auth_help=keys.key_help(settings, base_url, also=[spec.raw]),
    )


class HTTPTranscriber:
    """An OpenAI-compatible ``/audio/transcriptions`` endpoint through the official SDK."""

    def __init__(
        self,
        model: str,
        base_url: str,
        *,
        api_key: str | None = None,
        spec: str | None = None,
        timeout: float = 300.0,
        max_retries: int = 2,
        auth_help: str = "set a key for this server",
    ) -> None:
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.spec = spec or f"openai-compatible:{model}@{self.base_url}"
        self._api_key = api_key or None
        self._timeout = timeout
        self._max_retries = max_retries
        self._auth_help = auth_help
        self._client: Any = None

    def __repr__(self) -> str:
        return f"HTTPTranscriber(spec={self.spec!r}, api_key={'set' if self._api_key else 'none'})"

    def _sdk(self) -> Any:
        if self._client is None:
            import openai

            client = openai.OpenAI(
                api_key=self._api_key or "",
                admin_api_key="",
                organization="",
                project="",
                webhook_secret="",
                base_url=self.base_url,
                timeout=self._timeout,
                max_retries=self._max_retries,
            )
            client.organization = None
            client.project = None
            self._client = client
        return self._client

    def transcribe(self, clip: Clip, prompt: str | None = None) -> Transcription:
        """POST the clip (whole, or 30 s WAV chunks when long) with ``prompt``; the joined text."""
        start = time.perf_counter()
        if clip.seconds <= MAX_HTTP_SECONDS and len(clip.data) <= MAX_HTTP_BYTES:
            pieces = [(clip.name, clip.data, clip.mime)]
        else:
            stem = Path(clip.name).stem
            pieces = [
                (f"{stem}-{i}.wav", wav_bytes(part), "audio/wav")
                for i, part in enumerate(chunks(clip.samples, CHUNK_SECONDS))
            ]
        texts = [self._post(piece, prompt) for piece in pieces]
        text = " ".join(t.strip() for t in texts if t.strip())
        return Transcription(text, len(pieces), (time.perf_counter() - start) * 1000)

    def _post(self, piece: tuple[str, bytes, str], prompt: str | None) -> str:
        import openai

        extra: dict[str, Any] = {}
        if prompt:
            extra["prompt"] = prompt
        headers: Any = None if self._api_key else {"Authorization": openai.Omit()}
        try:
            result = self._sdk().audio.transcriptions.create(
                model=self.model, file=piece, response_format="json", extra_headers=headers, **extra
            )
        except openai.APIStatusError as exc:
            hint = f"; {self._auth_help}" if exc.status_code in (401, 403) else ""
            raise ModelError(
                f"{self.base_url} refused the transcription ({exc.status_code}): {_short(exc.message)}{hint}"
            ) from None
        except openai.APITimeoutError:
            raise ModelError(f"{self.base_url} did not answer within {self._timeout:g}s") from None
        except openai.APIConnectionError:
            raise ModelError(f"cannot reach {self.base_url} (is the speech server running?)") from None
        text = getattr(result, "text", None)
        if text is None and isinstance(result, dict):
            text = result.get("text")
        if not isinstance(text, str):
            raise ModelError(f"{self.base_url} returned no transcript text")
        return text


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- local Whisper --------------------------------------------------------------------------------

_LOCAL: dict[tuple[str, str | None], tuple[Any, Any]] = {}
_LOCAL_LOCK = threading.Lock()


def load_whisper(model_dir: str, adapter: str | None = None) -> tuple[Any, Any]:
    """(processor, model) for a local Whisper folder, with a PEFT adapter attached when given;
    loaded once per process and kept in eval mode."""
    key = (str(Path(model_dir).expanduser().resolve()), adapter)
    with _LOCAL_LOCK:
        if key in _LOCAL:
            return _LOCAL[key]
        try:
            from transformers import AutoProcessor, WhisperForConditionalGeneration
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ModelError("hf: speech models need the hf extra: pip install 'minetune[hf]'") from exc
        folder = Path(key[0])
        if not (folder / "config.json").is_file():
            raise ModelError(f"hf:{model_dir}: no Whisper model folder there (config.json missing)")
        try:
            processor = AutoProcessor.from_pretrained(folder)
            model: Any = WhisperForConditionalGeneration.from_pretrained(folder)
            if adapter:
                from peft import PeftModel

                model = PeftModel.from_pretrained(model, adapter)
        except (OSError, ValueError) as exc:
            raise ModelError(
                f"hf:{model_dir}: cannot load it as a Whisper model: {_short(str(exc))}"
            ) from None
        model.eval()
        _LOCAL[key] = (processor, model)
        return processor, model


def forget_loaded(adapter: str | None = None) -> None:
    """Drop cached models (all, or those carrying ``adapter``), e.g. after an adapter was deleted."""
    with _LOCAL_LOCK:
        for key in [k for k in _LOCAL if adapter is None or k[1] == adapter]:
            del _LOCAL[key]


def generate_text(processor: Any, model: Any, samples: Any, prompt: str | None = None) -> str:
    """Greedy transcript of one piece (at most 30 s) of 16 kHz samples."""
    import torch

    features = processor.feature_extractor(samples, sampling_rate=SAMPLE_RATE, return_tensors="pt")
    config = getattr(model, "config", None)
    limit = int(getattr(config, "max_target_positions", 448))
    kwargs: dict[str, Any] = {}
    if prompt:
        prompt_ids = processor.tokenizer.get_prompt_ids(prompt, return_tensors="pt")
        prompt_ids = prompt_ids[-(limit // 2) :]
        kwargs["prompt_ids"] = prompt_ids
        limit -= int(prompt_ids.shape[-1])
    with torch.no_grad():
        out = model.generate(
            input_features=features.input_features,
            max_new_tokens=max(1, min(limit - 4, 440)),
            do_sample=False,
            **kwargs,
        )
    text = processor.tokenizer.decode(out[0], skip_special_tokens=True)
    if prompt and text.strip().startswith(prompt.strip()):
        text = text.strip()[len(prompt.strip()) :]
    return " ".join(str(text).split())


@dataclass
class LocalWhisper:
    """A local Whisper-family model folder (transformers), optionally with a LoRA adapter."""

    model_dir: str
    adapter: str | None = None
    spec: str = ""
    _loaded: tuple[Any, Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.spec = self.spec or (
            f"hf:{self.model_dir}" + (f"?adapter={self.adapter}" if self.adapter else "")
        )

    def transcribe(self, clip: Clip, prompt: str | None = None) -> Transcription:
        """Transcribe 30 s pieces one after another; the joined text."""
        processor, model = load_whisper(self.model_dir, self.adapter)
        start = time.perf_counter()
        pieces = chunks(clip.samples, CHUNK_SECONDS)
        texts = [generate_text(processor, model, piece, prompt) for piece in pieces]
        text = " ".join(t for t in texts if t)
        return Transcription(text, len(pieces), (time.perf_counter() - start) * 1000)


# -- corrections ----------------------------------------------------------------------------------

_WORD = re.compile(r"[^\w'+#.-]+", re.UNICODE)
# Corrected words not worth learning as vocabulary on their own.
_COMMON = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "for",
        "from",
        "has",
        "have",
        "he",
        "her",
        "his",
        "i",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "our",
        "she",
        "so",
        "that",
        "the",
        "their",
        "them",
        "there",
        "they",
        "this",
        "to",
        "was",
        "we",
        "were",
        "what",
        "when",
        "which",
        "who",
        "will",
        "with",
        "you",
        "your",
    ]
)


@dataclass(frozen=True)
class WordChange:
    """One aligned difference: what the model heard and what the user said (either may be empty)."""

    kind: str  # substitute | missing (said, not heard) | extra (heard, not said)
    heard: str
    said: str

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "heard": self.heard, "said": self.said}


def _norm(word: str) -> str:
    return _WORD.sub("", word.lower()).strip(".-")


def word_changes(transcript: str, corrected: str) -> tuple[list[WordChange], float]:
    """Align ``transcript`` with the ``corrected`` text word by word (case and punctuation ignored);
    the differences and the transcript's word error rate against the correction."""
    import jiwer

    said_words = [w for w in corrected.split() if _norm(w)]
    heard_words = [w for w in transcript.split() if _norm(w)]
    if not said_words:
        return ([WordChange("extra", " ".join(heard_words), "")] if heard_words else []), 0.0
    if not heard_words:
        return [WordChange("missing", "", " ".join(said_words))], 1.0
    result = jiwer.process_words(" ".join(map(_norm, said_words)), " ".join(map(_norm, heard_words)))
    changes: list[WordChange] = []
    run: list[Any] = []  # neighbouring differences are one change ("cube and eighties" -> "Kubernetes")
    for chunk in [*result.alignments[0], None]:
        if chunk is not None and chunk.type != "equal":
            run.append(chunk)
            continue
        if run:
            said = " ".join(said_words[run[0].ref_start_idx : run[-1].ref_end_idx])
            heard = " ".join(heard_words[run[0].hyp_start_idx : run[-1].hyp_end_idx])
            kind = "substitute" if said and heard else "missing" if said else "extra"
            changes.append(WordChange(kind, heard, said))
            run = []
    return changes, float(result.wer)


def learned_terms(changes: list[WordChange]) -> list[str]:
    """The user's words among the corrections: each corrected span without its common words,
    keeping the user's spelling (what the vocabulary learns); from a longer span only the words
    that look like jargon (8+ letters, a capital or a digit)."""
    terms: list[str] = []
    for change in changes:
        words = [w.strip(',;:!?"()[]') for w in change.said.split()]
        words = [w.rstrip(".") if not re.search(r"\w\.\w", w) else w for w in words]
        kept = [w for w in words if w and _norm(w) not in _COMMON and len(_norm(w)) >= 2]
        if len(kept) > 2:  # a whole phrase was misheard: keep only the words that look like jargon
            terms += [w for w in kept if len(w) >= 8 or any(c.isupper() or c.isdigit() for c in w)]
        elif kept:
            terms.append(" ".join(kept))
    return terms


def wer(references: list[str], hypotheses: list[str]) -> float:
    """Word error rate of ``hypotheses`` against ``references`` (case and punctuation ignored)."""
    import jiwer

    errors = words = 0
    for ref, hyp in zip(references, hypotheses, strict=True):
        r = " ".join(_norm(w) for w in ref.split() if _norm(w))
        h = " ".join(_norm(w) for w in hyp.split() if _norm(w))
        if not r:
            continue
        n = len(r.split())
        words += n
        if not h:
            errors += n
            continue
        out = jiwer.process_words(r, h)
        errors += out.substitutions + out.deletions + out.insertions
    return errors / words if words else 0.0
