"""Local LoRA training on CPU with the fixture model: one incremental update, and tokens/s against
TRL's SFTTrainer defaults and a plain PyTorch + PEFT loop on the same data, in the same run.

The data is synthetic: ``--new`` new examples plus ``--replay`` replayed older ones, each about
``--tokens`` tokens long (prompt and answer, as the chat template renders them). Every contender
trains a rank-16 LoRA on all linear layers for one epoch over the same rows, in fp32 on CPU:

* minetune — :func:`minetune.train.engines.fit` continuing a parent adapter (what an incremental
  update runs): TRL's SFTTrainer with minetune's settings (batch 4, no gradient checkpointing,
  loss on the answer only). "time to adapt" is the whole update: load the base and the parent
  adapter, set up, train, save.
* minetune resident — :class:`minetune.train.fast.ResidentLoRA` with the base already loaded
  (what a long-running ``minetune serve`` does between updates): restore the parent, train, save.
* TRL defaults — SFTTrainer with its defaults (batch 8, gradient checkpointing on, lr 2e-5); only
  ``use_cpu=True``, ``bf16=False``, one epoch and no checkpoints are set, and the same LoRA config.
* plain loop — PEFT + torch.optim.AdamW, batch 4, right-padded, loss on the answer only.

Tokens are the rendered prompt + answer tokens of the rows (padding excluded), the same count for
every contender. "model FLOP/s" counts 4 x parameters x tokens (forward + backward through frozen
weights). The fixture is a 2-layer, 64-wide Llama, so this measures overheads more than kernels.

    .venv/bin/python bench/train_cpu.py [--new 16] [--replay 64] [--tokens 512] [--threads 1]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

TEXT = (
    "the quick brown fox jumps over the lazy dog a journey of a thousand miles begins with a single step "
    "please write a short poem about the sea sure here is a short poem about the sea and the sky summarise "
    "this email in one sentence the meeting moved to thursday at three in the afternoon translate hello "
    "world into french bonjour le monde thank you that was perfect good one explain recursion simply"
)


def make_examples(tokenizer: Any, count: int, tokens: int, seed: int) -> list[Any]:
    """``count`` SFT examples whose rendered prompt + answer is about ``tokens`` tokens."""
    import random

    from minetune.train.datasets import SFTExample
    from minetune.train.rows import encode

    rng = random.Random(seed)
    words_pool = TEXT.split()
    out = []
    for i in range(count):
        answer = " ".join(rng.choice(words_pool) for _ in range(tokens // 8))
        words: list[str] = []
        while True:
            words += [rng.choice(words_pool) for _ in range(16)]
            prompt = [{"role": "user", "content": " ".join(words)}]
            ids, _ = encode(tokenizer, prompt, answer, 10_000)
            if len(ids) >= tokens:
                break
        out.append(SFTExample(prompt, answer, turn_id=i, attempt_ids=(i,), stars=5, praised=False))
    return out


def count_tokens(tokenizer: Any, examples: list[Any], max_length: int) -> int:
    from minetune.train.rows import encode

    return sum(len(encode(tokenizer, ex.prompt, ex.response, max_length)[0]) for ex in examples)


def bench_minetune(
    model_dir: Path, parent: Path, rows: list[Any], work: Path, max_length: int
) -> dict[str, float]:
    from minetune.train.config import TrainConfig
    from minetune.train.engines import fit

    config = TrainConfig(epochs=1.0, batch_size=4, rank=16, max_length=max_length, learning_rate=1e-4)
    start = time.perf_counter()
    result = fit(model_dir, "sft", rows, config, work, parent_adapter=parent)
    return {"adapt_s": time.perf_counter() - start, "train_s": result.train_s, "steps": result.steps}


def bench_resident(
    model_dir: Path, parent: Path, rows: list[Any], work: Path, max_length: int
) -> dict[str, float]:
    """minetune's resident trainer: the base stays loaded, so an update is restore + train + save."""
    from minetune.train.fast import ResidentLoRA, Row
    from minetune.train.rows import encode

    trainer = ResidentLoRA.load(model_dir, device="cpu", rank=16, alpha=32)
    data = [Row(*encode(trainer.tokenizer, ex.prompt, ex.response, max_length)) for ex in rows]
    trainer.update(data[:8], batch_size=4)  # warm-up, as a long-running process would have done
    result = trainer.update(data, parent=parent, out_dir=work, batch_size=4, learning_rate=1e-4)
    return {"adapt_s": result.total_s, "train_s": result.train_s, "steps": result.steps}


def bench_trl_defaults(model_dir: Path, rows: list[Any], work: Path) -> dict[str, float]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
    from trl import SFTConfig, SFTTrainer

    from minetune.train.rows import trl_row

    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    args = SFTConfig(
        output_dir=str(work),
        use_cpu=True,
        bf16=False,
        num_train_epochs=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list([trl_row(ex) for ex in rows]),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    trainer.remove_callback(PrinterCallback)  # no per-step log lines in the table output
    setup = time.perf_counter() - start
    t = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - t
    return {"adapt_s": setup + train_s, "train_s": train_s, "steps": trainer.state.global_step}


def bench_plain_loop(model_dir: Path, rows: list[Any], max_length: int) -> dict[str, float]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from minetune.train.rows import encode

    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model = get_peft_model(
        model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    encoded = [encode(tokenizer, ex.prompt, ex.response, max_length) for ex in rows]
    pad = tokenizer.pad_token_id or 0
    setup = time.perf_counter() - start
    t = time.perf_counter()
    model.train()
    steps = 0
    for i in range(0, len(encoded), 4):
        batch = encoded[i : i + 4]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.full((len(batch), width), pad)
        labels = torch.full((len(batch), width), -100)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for j, (row, begin) in enumerate(batch):
            ids[j, : len(row)] = torch.tensor(row)
            labels[j, begin : len(row)] = torch.tensor(row[begin:])
            mask[j, : len(row)] = 1
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        steps += 1
    train_s = time.perf_counter() - t
    return {"adapt_s": setup + train_s, "train_s": train_s, "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--new", type=int, default=16)
    parser.add_argument("--replay", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the fixture is tiny)")
    args = parser.parse_args()

    import warnings

    warnings.filterwarnings("ignore")
    import datasets
    import torch
    import transformers
    from transformers import AutoTokenizer

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    torch.set_num_threads(args.threads)

    from fakes import build_tiny_model
    from minetune.train.config import TrainConfig
    from minetune.train.engines import fit

    tmp = Path(tempfile.mkdtemp(prefix="minetune-bench-"))
    model_dir = build_tiny_model(tmp / "model")
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    max_length = args.tokens + 16
    new = make_examples(tokenizer, args.new, args.tokens, seed=1)
    old = make_examples(tokenizer, args.replay, args.tokens, seed=2)
    rows = new + old
    tokens = count_tokens(tokenizer, rows, max_length)
    params = sum(
        p.numel() for p in transformers.AutoModelForCausalLM.from_pretrained(str(model_dir)).parameters()
    )

    # The parent adapter the incremental update continues (trained on the older examples).
    parent = fit(model_dir, "sft", old[:8], TrainConfig(max_steps=2, batch_size=4, rank=16), tmp / "parent")
    assert parent.adapter_dir is not None

    results = {
        "minetune incremental update": bench_minetune(
            model_dir, parent.adapter_dir, rows, tmp / "update", max_length
        ),
        "minetune resident trainer (model kept loaded)": bench_resident(
            model_dir, parent.adapter_dir, rows, tmp / "resident", max_length
        ),
        "TRL SFTTrainer defaults": bench_trl_defaults(model_dir, rows, tmp / "trl"),
        "plain PyTorch + PEFT loop": bench_plain_loop(model_dir, rows, max_length),
    }
    trl = results["TRL SFTTrainer defaults"]
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"\n{when} · {platform.machine()} · {os.cpu_count()} CPUs · torch {torch.__version__} · "
        f"{args.threads} thread(s) · load {load:.1f} · fixture {params / 1e6:.2f}M params\n"
        f"data: {args.new} new + {args.replay} replayed examples, {tokens} tokens "
        f"({tokens / len(rows):.0f}/example)\n"
    )
    print("| run | time to adapt (s) | train loop (s) | steps | tokens/s | vs TRL defaults | model GFLOP/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        rate = tokens / r["train_s"]
        flops = 4 * params * tokens / r["train_s"] / 1e9
        print(
            f"| {name} | {r['adapt_s']:.2f} | {r['train_s']:.2f} | {int(r['steps'])} | {rate:,.0f} | "
            f"{rate / (tokens / trl['train_s']):.2f}× | {flops:.2f} |"
        )


if __name__ == "__main__":
    main()
