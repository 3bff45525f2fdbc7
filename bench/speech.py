"""Speech weight layer on CPU: one incremental Whisper LoRA update (minetune.train.whisper) against
Hugging Face ``Seq2SeqTrainer`` on the same clips, model and LoRA, in the same run; plus local
transcription speed in audio-seconds per second.

    .venv/bin/python bench/speech.py [--steps 20] [--clips 4]

The model is the tests' tiny random Whisper (d_model 64, 2+2 layers, a tokenizer trained here),
the clips espeak-ng speech of a jargon vocabulary. A random model shows cost, not quality: its
word error rate stays at 1.0 whatever it learns, so no WER learning curve is printed here.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

JARGON = [
    "kubernetes cluster",
    "containerization works",
    "pneumothorax tachycardia",
    "deploy my pods",
    "quantum zorblaxian",
    "hello world",
    "the quick brown fox",
    "lazy dog jumps",
]


def _clips(folder: Path, count: int) -> list[Any]:
    from minetune.models.audio import read
    from minetune.train.whisper import SpeechExample

    out = []
    for i in range(count):
        text = JARGON[i % len(JARGON)]
        path = folder / f"clip{i}.wav"
        subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
        out.append(SpeechExample(read(path).samples, text, (i,)))
    return out


def _minetune(model_dir: str, clips: list[Any], steps: int, out: Path) -> tuple[float, float]:
    from minetune.train.whisper import WhisperLoraConfig, train_update

    config = WhisperLoraConfig(steps=steps, batch_size=2)
    start = time.perf_counter()
    update = train_update(model_dir, out, clips, config=config)
    return time.perf_counter() - start, update.audio_seconds / update.seconds


def _hf_trainer(model_dir: str, clips: list[Any], steps: int, out: Path) -> tuple[float, float]:
    import torch
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments

    from minetune.train.whisper import WhisperLoraConfig, _batch, load_trainable

    config = WhisperLoraConfig(steps=steps, batch_size=2)
    start = time.perf_counter()
    processor, model = load_trainable(model_dir, None, config)

    class Clips(torch.utils.data.Dataset[Any]):
        def __len__(self) -> int:
            return len(clips)

        def __getitem__(self, i: int) -> Any:
            return clips[i]

    def collate(batch: list[Any]) -> dict[str, Any]:
        features, labels = _batch(processor, model, batch)
        return {"input_features": features, "labels": labels}

    args = Seq2SeqTrainingArguments(
        output_dir=str(out),
        max_steps=steps,
        per_device_train_batch_size=2,
        learning_rate=config.learning_rate,
        use_cpu=True,
        bf16=False,
        fp16=False,
        report_to=[],
        save_strategy="no",
        logging_steps=steps,
        remove_unused_columns=False,
        disable_tqdm=True,
        dataloader_num_workers=0,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.01,
    )
    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=Clips(), data_collator=collate)
    fit_start = time.perf_counter()
    trainer.train()
    fit = time.perf_counter() - fit_start
    model.save_pretrained(str(out))
    seen = sum(min(len(c.samples), 30 * 16000) for c in clips) / 16000 * (steps * 2 / len(clips))
    return time.perf_counter() - start, seen / fit


def _transcribe(model_dir: str, clips: list[Any]) -> float:
    from minetune.models.transcribe import generate_text, load_whisper

    processor, model = load_whisper(model_dir)
    generate_text(processor, model, clips[0].samples)  # warm
    start = time.perf_counter()
    for clip in clips:
        generate_text(processor, model, clip.samples, "Glossary: Kubernetes, containerization.")
    seconds = sum(len(c.samples) for c in clips) / 16000
    return seconds / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--clips", type=int, default=4)
    args = parser.parse_args()
    import torch

    from fake_audio import build_tiny_whisper

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir = build_tiny_whisper(root / "tiny-whisper")
        clips = _clips(root, args.clips)
        ours = _minetune(model_dir, clips, args.steps, root / "ours")
        peer = _hf_trainer(model_dir, clips, args.steps, root / "peer")
        speed = _transcribe(model_dir, clips)
    audio = sum(len(c.samples) for c in clips) / 16000
    print(
        f"# speech.py  {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC  "
        f"python {platform.python_version()}  torch {torch.__version__}  "
        f"threads {torch.get_num_threads()}  load {os.getloadavg()[0]:.2f}"
    )
    print(
        f"# tiny random Whisper, {len(clips)} espeak-ng clips ({audio:.1f} s of audio), "
        f"{args.steps} steps, batch 2"
    )
    print("| what | wall s (load + train + save) | train audio-s/s |")
    print("|---|---:|---:|")
    print(f"| minetune train_update (incl. before/after loss+WER evals) | {ours[0]:.1f} | {ours[1]:.1f} |")
    print(f"| HF Seq2SeqTrainer (no evals) | {peer[0]:.1f} | {peer[1]:.1f} |")
    print(f"| local transcription (greedy, with a prompt) | | {speed:.1f} audio-s/s |")


if __name__ == "__main__":
    main()
