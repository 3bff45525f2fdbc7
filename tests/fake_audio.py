"""A loopback fake of OpenAI's ``/v1/audio/transcriptions`` (multipart upload) that records what it
receives (file name and bytes, model, prompt, headers) and answers scripted transcripts."""

from __future__ import annotations

import json
import threading
from collections import deque
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeTranscriptions:
    """Use as a context manager; ``queue(text, ...)`` scripts replies (else ``"heard n"``);
    ``requests`` holds one dict per call: ``fields`` (form fields), ``file_name``, ``file``
    (bytes), ``headers``."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self._replies: deque[str] = deque()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def __enter__(self) -> FakeTranscriptions:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def queue(self, *texts: str) -> None:
        self._replies.extend(texts)

    def _answer(self, record: dict[str, Any]) -> str:
        with self._lock:
            self.requests.append(record)
            return self._replies.popleft() if self._replies else f"heard {len(self.requests)}"


def _parse(content_type: str, body: bytes) -> tuple[dict[str, str], str | None, bytes]:
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    fields: dict[str, str] = {}
    file_name, data = None, b""
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        raw = part.get_payload(decode=True)
        payload = raw if isinstance(raw, bytes) else b""
        filename = part.get_filename()
        if filename is not None:
            file_name, data = filename, payload
        elif name:
            fields[str(name)] = payload.decode("utf-8")
    return fields, file_name, data


def _handler(fake: FakeTranscriptions) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            pass

        def do_POST(self) -> None:  # noqa: N802 - stdlib name
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path != "/v1/audio/transcriptions":
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            fields, file_name, data = _parse(self.headers.get("Content-Type", ""), body)
            if not data or "model" not in fields:
                self._send(400, {"error": {"message": "file and model are required"}})
                return
            text = fake._answer(
                {"fields": fields, "file_name": file_name, "file": data, "headers": dict(self.headers)}
            )
            self._send(200, {"text": text})

        def _send(self, status: int, payload: Any) -> None:
            raw = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

    return Handler


def build_tiny_whisper(folder: Any) -> str:
    """A tiny random Whisper (d_model 64, 2+2 layers) with a byte-level BPE tokenizer trained
    here on a few words and the default feature extractor, saved to ``folder``; its path."""
    from pathlib import Path

    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    words = (
        "the quick brown fox jumps over the lazy dog kubernetes cluster containerization works "
        "pneumothorax tachycardia hello world deploy my pods zorblaxian quantum"
    )
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([words] * 20, vocab_size=400, min_frequency=1)
    bpe.save_model(str(out))
    tokenizer = WhisperTokenizer(
        str(out / "vocab.json"),
        str(out / "merges.txt"),
        unk_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    specials = [
        "<|startoftranscript|>",
        "<|en|>",
        "<|transcribe|>",
        "<|translate|>",
        "<|notimestamps|>",
        "<|startofprev|>",
        "<|nocaptions|>",
        "<|startoflm|>",
    ]
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        num_mel_bins=80,
        max_source_positions=1500,
        max_target_positions=64,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=int(tokenizer.convert_tokens_to_ids("<|startoftranscript|>")),  # type: ignore[arg-type]
        suppress_tokens=[],
        begin_suppress_tokens=[],
    )
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config)
    # Output logits are tied to the token embeddings: at the default init (std 0.02) they stay
    # near-uniform and no adapter can make them peak, so the tiny model gets wider embeddings.
    torch.nn.init.normal_(model.model.decoder.embed_tokens.weight, 0.0, 0.3)
    generation: Any = model.generation_config
    generation.no_timestamps_token_id = tokenizer.convert_tokens_to_ids("<|notimestamps|>")
    model.save_pretrained(out)
    WhisperProcessor(feature_extractor=WhisperFeatureExtractor(), tokenizer=tokenizer).save_pretrained(out)
    return str(out)


def speak(text: str, path: Any) -> str:
    """Synthesize ``text`` with espeak-ng into a WAV at ``path`` (22,050 Hz mono); its path."""
    import subprocess

    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True, timeout=60)
    return str(path)
