"""Reading audio for speech-to-text: decode a file (wav, flac, ogg through ``soundfile``), mix it
to mono, resample to 16 kHz and cut it into pieces of about 30 seconds (what Whisper reads at once).

numpy, scipy and soundfile load inside the functions (the ``speech`` extra).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from minetune.errors import MinetuneError

if TYPE_CHECKING:
    import numpy as np

SAMPLE_RATE = 16_000
CHUNK_SECONDS = 30.0
FORMATS = {"wav": "audio/wav", "flac": "audio/flac", "ogg": "audio/ogg", "mp3": "audio/mpeg"}
MAX_BYTES = 200 * 1024 * 1024


class AudioError(MinetuneError):
    """An audio file that cannot be read (unknown format, damaged, empty, too large)."""


@dataclass(frozen=True)
class Clip:
    """One audio file: its bytes as given, its name and format, and its samples at 16 kHz mono."""

    data: bytes
    name: str
    ext: str
    samples: np.ndarray
    seconds: float

    @property
    def mime(self) -> str:
        return FORMATS.get(self.ext, "application/octet-stream")


def _speech_extra() -> str:
    return "install the speech extra: pip install 'minetune[speech]'"


def decode(data: bytes, name: str = "audio.wav") -> Clip:
    """Decode audio bytes into a :class:`Clip` (AudioError when they are not readable audio)."""
    import io

    try:
        import numpy as np
        import soundfile as sf
    except ImportError as exc:  # pragma: no cover - the extra is installed in the dev venv
        raise AudioError(f"Reading audio needs soundfile ({_speech_extra()}).") from exc
    if not data:
        raise AudioError(f"{name} is empty.")
    if len(data) > MAX_BYTES:
        raise AudioError(f"{name} is {len(data):,} bytes; the limit is {MAX_BYTES:,}.")
    ext = Path(name).suffix.lower().lstrip(".") or "wav"
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, TypeError
        raise AudioError(f"{name} is not audio minetune can read (wav, flac, ogg): {exc}") from None
    mono = samples.mean(axis=1).astype(np.float32)
    if mono.size == 0:
        raise AudioError(f"{name} has no samples.")
    if ext not in FORMATS:
        ext = "wav"
    return Clip(data, Path(name).name, ext, resample(mono, int(rate)), mono.size / float(rate))


def read(path: str | Path) -> Clip:
    """Decode the audio file at ``path``."""
    target = Path(path)
    try:
        if target.stat().st_size > MAX_BYTES:
            raise AudioError(f"{target.name} is over {MAX_BYTES:,} bytes.")
        data = target.read_bytes()
    except OSError as exc:
        raise AudioError(f"Cannot read {target}: {exc.strerror or exc}") from None
    return decode(data, target.name)


def resample(samples: Any, rate: int, target: int = SAMPLE_RATE) -> Any:
    """``samples`` (mono float32) at ``target`` Hz (polyphase filtering; unchanged when equal)."""
    import math

    import numpy as np

    if rate == target:
        return np.asarray(samples, dtype=np.float32)
    from scipy.signal import resample_poly

    g = math.gcd(rate, target)
    return resample_poly(samples, target // g, rate // g).astype(np.float32)


def chunks(samples: Any, seconds: float = CHUNK_SECONDS, rate: int = SAMPLE_RATE) -> list[Any]:
    """``samples`` cut into consecutive pieces of at most ``seconds`` (at least one piece)."""
    size = max(1, int(seconds * rate))
    return [samples[i : i + size] for i in range(0, max(len(samples), 1), size)]


def wav_bytes(samples: Any, rate: int = SAMPLE_RATE) -> bytes:
    """16-bit PCM WAV bytes of mono float samples (to send one chunk over HTTP, or export)."""
    import io

    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()
