"""One incremental LoRA update on a GPU: minetune's resident trainer against TRL's SFTTrainer
defaults, on Qwen2.5-0.5B- and Llama-3.2-1B-shaped models (random weights, real shapes), on the
same data in the same run. Skips cleanly (exit 0) where there is no CUDA GPU.

Every contender trains a rank-16 LoRA (alpha 32) on all linear layers, bf16, batch 8, one epoch
over ``--new`` new + ``--replay`` replayed rows of ``--tokens`` random token ids each, with the
loss on every token. The model is built once per contender, directly on the GPU.

* minetune resident — :class:`minetune.train.fast.ResidentLoRA`: the base stays on the GPU
  between updates; an update restores the parent adapter, trains, and saves a PEFT adapter
  directory. "time to adapt" is that whole update; the first update (warm-up, and compilation
  with ``compile``) is reported as set-up. Measured eager and with ``torch.compile`` per layer.
* TRL SFTTrainer defaults — only ``output_dir``, one epoch, ``report_to="none"`` and no
  checkpoint saving are set; everything else (bf16, gradient checkpointing, batch 8, ...) is
  TRL's default. Set-up is building the trainer; ``train()`` runs twice and the second (warm)
  run gives the tokens/s, which flatters TRL slightly.

"MFU" counts 4 x parameters x tokens per second (forward + input-gradient backward through the
frozen weights; the LoRA and attention FLOPs are not counted) against the GPU's dense bf16 peak.

    python bench/train_gpu.py [--shapes qwen2.5-0.5b,llama-3.2-1b] [--updates 3] [--json OUT]
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

# Dense bf16 tensor-core peaks (FLOP/s) by device name; used only for the MFU column.
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12}

SHAPES: dict[str, dict[str, Any]] = {
    "qwen2.5-0.5b": {
        "model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
        "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936,
        "tie_word_embeddings": True, "rope_theta": 1_000_000.0, "max_position_embeddings": 32768,
    },
    "llama-3.2-1b": {
        "model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
        "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 128256,
        "tie_word_embeddings": True, "rope_theta": 500_000.0, "max_position_embeddings": 131072,
    },
    # For checking this script on a CPU (``--device cpu --shapes tiny``); not a benchmark.
    "tiny": {
        "model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512,
        "tie_word_embeddings": True, "max_position_embeddings": 2048,
    },
}


def build_model(shape: str, device: str, seed: int) -> Any:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = dict(SHAPES[shape])
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    return model


def make_rows(count: int, tokens: int, vocab: int, seed: int) -> list[list[int]]:
    import random

    rng = random.Random(seed)
    return [[rng.randrange(2, vocab) for _ in range(tokens)] for _ in range(count)]


def free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")


def bench_resident(
    shape: str, rows: list[list[int]], args: argparse.Namespace, work: Path, compile: bool
) -> dict[str, Any]:
    from minetune.train.fast import ResidentLoRA, Row

    start = time.perf_counter()
    model = build_model(shape, args.device, args.seed)
    trainer = ResidentLoRA(model, rank=16, alpha=32, compile=compile)
    data = [Row(r) for r in rows]
    kwargs = {"batch_size": args.batch, "learning_rate": 1e-4}
    warm = trainer.update(data, out_dir=work / "parent", **kwargs)  # warm-up (and compilation)
    setup_s = time.perf_counter() - start
    updates = [
        trainer.update(data, parent=work / "parent", out_dir=work / f"update-{i}", **kwargs)
        for i in range(args.updates)
    ]
    best = min(updates, key=lambda u: u.total_s)
    median_total = sorted(u.total_s for u in updates)[len(updates) // 2]
    median_train = sorted(u.train_s for u in updates)[len(updates) // 2]
    result = {
        "setup_s": setup_s,
        "warmup_update_s": warm.total_s,
        "adapt_s": median_total,
        "adapt_best_s": best.total_s,
        "train_s": median_train,
        "tokens": updates[0].tokens,
        "steps": updates[0].steps,
        "loss_first": updates[0].losses[0],
        "loss_last": updates[0].losses[-1],
        "peak_gib": peak_gib(args.device),
    }
    del trainer, model
    free(args.device)
    return result


def bench_trl(shape: str, rows: list[list[int]], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from datasets import Dataset
    from peft import LoraConfig
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast, PrinterCallback
    from trl import SFTConfig, SFTTrainer

    # The rows are already token ids; the tokenizer only supplies the pad and eos ids.
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(WordLevel({"<pad>": 0, "<eos>": 1}, unk_token="<pad>")),
        pad_token="<pad>",
        eos_token="<eos>",
    )
    start = time.perf_counter()
    model = build_model(shape, args.device, args.seed)
    cpu = {"use_cpu": True, "bf16": False} if args.device == "cpu" else {}
    config = SFTConfig(
        output_dir=str(work), num_train_epochs=1, report_to="none", save_strategy="no", **cpu
    )
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list([{"input_ids": r} for r in rows]),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    trainer.remove_callback(PrinterCallback)
    setup_s = time.perf_counter() - start
    times = []
    for _ in range(2):
        t = time.perf_counter()
        trainer.train()
        times.append(time.perf_counter() - t)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    result = {
        "setup_s": setup_s,
        "warmup_update_s": times[0],
        "adapt_s": times[1],
        "adapt_best_s": times[1],
        "train_s": times[1],
        "tokens": sum(len(r) for r in rows),
        "steps": trainer.state.global_step,
        "loss_first": losses[0] if losses else float("nan"),
        "loss_last": losses[-1] if losses else float("nan"),
        "peak_gib": peak_gib(args.device),
        "defaults": {
            "gradient_checkpointing": config.gradient_checkpointing,
            "bf16": config.bf16,
            "per_device_train_batch_size": config.per_device_train_batch_size,
            "learning_rate": config.learning_rate,
        },
    }
    del trainer, model
    free(args.device)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="qwen2.5-0.5b,llama-3.2-1b")
    parser.add_argument("--new", type=int, default=16)
    parser.add_argument("--replay", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--updates", type=int, default=3, help="timed updates after the warm-up one")
    parser.add_argument("--arms", default="eager,compiled,trl", help="which of eager,compiled,trl to run")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("skipped: no CUDA GPU here (bench/train_gpu.py needs one; bench/train_cpu.py runs anywhere)")
        return 0
    import warnings

    warnings.filterwarnings("ignore")
    import transformers

    transformers.logging.set_verbosity_error()
    try:
        import datasets

        datasets.disable_progress_bars()
    except ImportError:
        pass

    gpu = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    peak = next((v for k, v in PEAK_BF16.items() if k in gpu), None)
    arms = args.arms.split(",")
    results: dict[str, dict[str, Any]] = {}
    for shape in args.shapes.split(","):
        vocab = SHAPES[shape]["vocab_size"]
        rows = make_rows(args.new + args.replay, args.tokens, vocab, args.seed)
        probe = build_model(shape, "meta" if args.device == "cuda" else "cpu", args.seed)
        params = sum(p.numel() for p in probe.parameters())
        del probe
        for arm in arms:
            work = Path(tempfile.mkdtemp(prefix=f"minetune-gpu-{arm}-"))
            name = f"{shape} · {arm}"
            print(f"running {name} ...", flush=True)
            try:
                if arm == "trl":
                    results[name] = bench_trl(shape, rows, args, work)
                else:
                    results[name] = bench_resident(shape, rows, args, work, compile=arm == "compiled")
            except Exception as exc:  # report and go on with the other contenders
                print(f"  failed: {type(exc).__name__}: {str(exc)[:400]}", flush=True)
                free(args.device)
                continue
            results[name].update(shape=shape, arm=arm, params=params)
            print("  " + json.dumps(results[name], default=str), flush=True)

    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    print(
        f"\n{when} · {gpu} · torch {torch.__version__} · transformers {transformers.__version__}\n"
        f"data: {args.new} new + {args.replay} replayed rows x {args.tokens} tokens, batch {args.batch}, "
        f"LoRA r=16 all-linear; MFU peak {peak / 1e12 if peak else float('nan'):.0f} TFLOP/s bf16\n"
    )
    print(
        "| shape | run | set-up (s) | time to adapt (s) | tokens/s | vs TRL | MFU | "
        "loss first→last | peak GiB |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---|---:|")
    for r in results.values():
        rate = r["tokens"] / r["train_s"]
        trl = results.get(f"{r['shape']} · trl")
        vs = f"{rate / (trl['tokens'] / trl['train_s']):.2f}×" if trl else "—"
        mfu = f"{4 * r['params'] * rate / peak:.1%}" if peak else "—"
        print(
            f"| {r['shape']} ({r['params'] / 1e9:.2f}B) | {r['arm']} | {r['setup_s']:.1f} | "
            f"{r['adapt_s']:.2f} | {rate:,.0f} | {vs} | {mfu} | "
            f"{r['loss_first']:.2f}→{r['loss_last']:.2f} | {r['peak_gib']:.1f} |"
        )
    if args.json:
        summary = {"gpu": gpu, "when": when, "results": results}
        args.json.write_text(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
