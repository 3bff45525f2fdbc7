"""LoRA training with N DDP processes (``TrainConfig.processes``, launched by ``torchrun``) against
one process on the same data, in the same run: wall time of the whole run (launch, load, train,
save), training-loop time, and the loss curve's last value, so equal results and the launch
overhead are both visible.

On CPU the processes use gloo and each takes ``batch / N`` examples per step with
``--threads`` torch threads; on a GPU machine each process takes one GPU (NCCL). The model is the
test fixture's tiny Llama unless ``--base DIR`` names a transformers model folder.

    .venv/bin/python bench/train_ddp.py [--processes 2] [--steps 40] [--base DIR]
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--base", type=Path, help="a transformers model folder (default: the tiny fixture model)"
    )
    args = parser.parse_args()

    from minetune.train.config import TrainConfig
    from minetune.train.datasets import SFTExample
    from minetune.train.engines import fit

    work = Path(tempfile.mkdtemp(prefix="minetune-ddp-"))
    if args.base is None:
        from fakes import build_tiny_model

        base = build_tiny_model(work / "base")
    else:
        base = args.base
    examples = [
        SFTExample(
            [{"role": "user", "content": f"Question {i}: summarise item {i} of the report."}],
            f"Item {i}: three short bullet points about the report, then a one-line summary.",
            i,
            (i,),
            5,
            False,
        )
        for i in range(64)
    ]
    rows = []
    for processes in (1, args.processes):
        config = TrainConfig(
            max_steps=args.steps,
            batch_size=args.batch,
            learning_rate=2e-3,
            rank=16,
            max_length=128,
            threads=args.threads,
            save_steps=10_000,
            engine="trl",
            processes=processes,
        )
        started = time.perf_counter()
        result = fit(base, "sft", examples, config, work / f"p{processes}")
        wall = time.perf_counter() - started
        rows.append((processes, wall, result.train_s, result.first_loss, result.final_loss))
    load = os.getloadavg()[0]
    print(
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC · {platform.machine()} · "
        f"{os.cpu_count()} CPUs · load {load:.1f} · steps {args.steps} · global batch {args.batch}"
    )
    print("| processes | wall s | train loop s | first loss | last loss |")
    print("|---:|---:|---:|---:|---:|")
    for processes, wall, train_s, first, last in rows:
        print(f"| {processes} | {wall:.1f} | {train_s:.1f} | {first:.4f} | {last:.4f} |")


if __name__ == "__main__":
    main()
