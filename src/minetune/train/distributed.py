"""Multi-process LoRA training through PyTorch's standard launcher (``torchrun``).

:func:`minetune.train.engines.fit` with ``TrainConfig.processes > 1`` hands the run to
:func:`fit_distributed`: it writes the run (base model, method, examples, held-out sets, config)
to a private JSON file in the work folder and starts ``python -m torch.distributed.run
--standalone --nproc_per_node N -m minetune.train.distributed RUN.json``. Every process runs
``fit`` with the trl engine; the Hugging Face Trainer underneath wraps the model in DDP (NCCL on
GPUs, gloo on CPU) and shards each batch across processes. Rank 0 reports progress on stdout,
saves the adapter and writes the result, which :func:`fit_distributed` reads back.

The global batch stays the configured ``batch_size`` (each of N processes takes ``batch_size / N``),
so an N-process run takes the same optimizer steps on the same examples as a 1-process run.
Cancelling stops the processes; a resumed run continues from the newest saved checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from minetune.train.config import FitResult, Progress, ProgressCallback, TrainConfig, TrainingError
from minetune.train.datasets import DPOExample, KTOExample, SFTExample
from minetune.train.scoring import EvalSets

_EXAMPLE_TYPES: dict[str, type[Any]] = {"sft": SFTExample, "dpo": DPOExample, "kto": KTOExample}
RUN_FILE = "distributed-run.json"
RESULT_FILE = "distributed-result.json"
_PROGRESS = "minetune-progress "
_EVAL_SETS = ("pairs", "targets", "retain")


def world_size() -> int:
    """How many training processes the launcher started (1 outside ``torchrun``)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _examples_to_json(examples: Sequence[Any]) -> list[dict[str, Any]]:
    return [{"method": ex.method, **asdict(ex)} for ex in examples]


def _examples_from_json(rows: Sequence[dict[str, Any]]) -> list[Any]:
    out = []
    for row in rows:
        fields = dict(row)
        cls = _EXAMPLE_TYPES[fields.pop("method")]
        fields["attempt_ids"] = tuple(fields.get("attempt_ids", ()))
        out.append(cls(**fields))
    return out


def per_process_config(config: TrainConfig) -> TrainConfig:
    """The config each process runs, so the global batch stays ``config.batch_size``."""
    return replace(config, batch_size=config.batch_size // config.processes, engine="trl")


def fit_distributed(
    base_dir: Path,
    method: str,
    examples: Sequence[Any],
    config: TrainConfig,
    work_dir: Path,
    *,
    parent_adapter: Path | None = None,
    eval_sets: EvalSets | None = None,
    ewc_examples: Sequence[Any] = (),
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    resume: bool = False,
) -> FitResult:
    """:func:`minetune.train.engines.fit` with ``config.processes`` DDP processes (same contract).

    Raises :class:`TrainingError` with the end of the launcher's output when a process fails.
    """
    if config.engine == "resident":
        raise TrainingError("The resident engine trains in one process; use engine trl with processes > 1.")
    sets = eval_sets or EvalSets()
    run = {
        "base_dir": str(base_dir),
        "method": method,
        "config": per_process_config(config).to_dict(),
        "examples": _examples_to_json(examples),
        "eval_sets": {name: _examples_to_json(getattr(sets, name)) for name in _EVAL_SETS},
        "ewc_examples": _examples_to_json(ewc_examples),
        "work_dir": str(work_dir),
        "parent_adapter": str(parent_adapter) if parent_adapter else None,
        "resume": resume,
    }
    work_dir.mkdir(parents=True, exist_ok=True)
    run_file = work_dir / RUN_FILE
    result_file = work_dir / RESULT_FILE
    result_file.unlink(missing_ok=True)
    fd = os.open(run_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds training text
    with os.fdopen(fd, "w") as fh:
        json.dump(run, fh)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={config.processes}",
        "-m",
        "minetune.train.distributed",
        str(run_file),
    ]
    # One thread per process unless asked: N processes each taking every core only contend.
    env = os.environ | {"OMP_NUM_THREADS": str(config.threads or 1)}
    tail: list[str] = []
    try:
        with subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # so a cancel stops the launcher and every process it started
        ) as proc:
            watcher = _watch_cancel(proc, cancel)
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith(_PROGRESS):
                    if on_progress is not None:
                        on_progress(Progress(**json.loads(line[len(_PROGRESS) :])))
                else:
                    tail = (tail + [line.rstrip()])[-40:]
            proc.wait()
            watcher.set()
    finally:
        run_file.unlink(missing_ok=True)
    if cancel is not None and cancel.is_set():
        return FitResult(None, True, [], 0, 0, 0.0, 0, {}, {})
    if proc.returncode != 0 or not result_file.exists():
        message = " ".join(" ".join(tail).split()[-80:])
        raise TrainingError(f"Distributed training failed (exit {proc.returncode}): {message}")
    data = json.loads(result_file.read_text())
    result_file.unlink()
    adapter = data.pop("adapter_dir")
    return FitResult(adapter_dir=Path(adapter) if adapter else None, **data)


def _watch_cancel(proc: subprocess.Popen[str], cancel: threading.Event | None) -> threading.Event:
    """Stop ``proc``'s whole process group once ``cancel`` is set; the returned event ends the watch."""
    finished = threading.Event()
    if cancel is None:
        return finished

    def watch() -> None:
        while not finished.wait(0.2):
            if cancel.is_set():
                os.killpg(proc.pid, signal.SIGTERM)
                return

    threading.Thread(target=watch, name="minetune-ddp-cancel", daemon=True).start()
    return finished


def _run_one_process(run_file: Path) -> None:
    from minetune.train.engines import fit

    run = json.loads(run_file.read_text())

    def report(progress: Progress) -> None:
        print(_PROGRESS + json.dumps(asdict(progress)), flush=True)

    sets = run["eval_sets"]
    result = fit(
        Path(run["base_dir"]),
        run["method"],
        _examples_from_json(run["examples"]),
        TrainConfig.from_dict(run["config"]),
        Path(run["work_dir"]),
        parent_adapter=Path(run["parent_adapter"]) if run["parent_adapter"] else None,
        eval_sets=EvalSets(**{name: _examples_from_json(rows) for name, rows in sets.items()}),
        ewc_examples=_examples_from_json(run["ewc_examples"]),
        on_progress=report if is_main_process() else None,
        resume=run["resume"],
    )
    if is_main_process():
        data = asdict(result) | {"adapter_dir": str(result.adapter_dir) if result.adapter_dir else None}
        (Path(run["work_dir"]) / RESULT_FILE).write_text(json.dumps(data))


if __name__ == "__main__":
    _run_one_process(Path(sys.argv[1]))
