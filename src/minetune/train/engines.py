"""Training engines: :func:`fit` trains one adapter from examples on a local base model.

Two engines share :func:`fit`'s contract (same inputs, same :class:`FitResult`):

* **trl** — TRL's ``SFTTrainer`` (prompt/completion, loss on the answer only), ``DPOTrainer`` or
  ``KTOTrainer`` with a PEFT LoRA config, or continuing an existing adapter
  (``PeftModel.from_pretrained(base, dir, is_trainable=True)``), optionally with an EWC penalty.
  It saves checkpoints, so a cancelled run can be resumed.
* **resident** — :mod:`minetune.train.fast`: SFT on a base model kept on its device.

It reports progress, stops cleanly on a cancel event (the first Ctrl-C), and scores held-out sets
before and after training (:class:`~minetune.train.scoring.Scorer`). torch, transformers, trl and
peft are imported inside functions.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from minetune.train.base import check_adapter_dir, device_and_precision, load_base, quiet
from minetune.train.config import (
    AdapterError,
    Engine,
    FitResult,
    Progress,
    ProgressCallback,
    TrainConfig,
    TrainingError,
)
from minetune.train.datasets import METHODS
from minetune.train.distributed import fit_distributed, world_size
from minetune.train.fast import RESIDENT, fit_resident
from minetune.train.rows import encode, interleave_kto, trl_row
from minetune.train.scoring import EvalSets, Scorer, answer_texts, score


@contextlib.contextmanager
def _first_ctrl_c_cancels(cancel: threading.Event) -> Iterator[None]:
    """While training in the main thread, the first Ctrl-C sets ``cancel`` (the run stops after
    the current step and saves a checkpoint); a second one interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        if cancel.is_set():
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        cancel.set()

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _trainer_parts(method: str) -> tuple[Any, Any]:
    if method == "sft":
        from trl import SFTConfig, SFTTrainer

        return SFTConfig, SFTTrainer
    if method == "dpo":
        from trl import DPOConfig, DPOTrainer

        return DPOConfig, DPOTrainer
    if method == "kto":
        from trl import KTOConfig, KTOTrainer

        return KTOConfig, KTOTrainer
    raise TrainingError(f"Unknown training method {method!r}; choose one of: {', '.join(METHODS)}.")


def _trl_args(method: str, config: TrainConfig, out: Path, cuda: bool, precision: str) -> Any:
    config_cls, _ = _trainer_parts(method)
    wanted: dict[str, Any] = {
        "output_dir": str(out),
        "per_device_train_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.grad_accum,
        "learning_rate": config.lr(method),
        "num_train_epochs": config.epochs,
        "max_steps": config.max_steps if config.max_steps is not None else -1,
        "lr_scheduler_type": config.scheduler,
        "warmup_steps": config.warmup_steps,
        "weight_decay": config.weight_decay,
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": max(1, config.save_steps),
        "save_total_limit": 1,
        "report_to": "none",
        "seed": config.seed,
        "data_seed": config.seed,
        "disable_tqdm": True,
        "use_cpu": not cuda,
        "bf16": precision == "bf16",
        "fp16": precision == "fp16",
        "gradient_checkpointing": config.gradient_checkpointing,
        "activation_checkpointing": config.gradient_checkpointing,
        "max_length": config.max_length,
        "dataloader_pin_memory": cuda,
        "dataset_num_proc": None,
        # Under torchrun the Trainer wraps the model in DDP; NCCL needs GPUs, so CPU runs use gloo.
        "ddp_backend": None if cuda or world_size() == 1 else "gloo",
    }
    if method == "sft":
        wanted["completion_only_loss"] = True
        wanted["packing"] = False
    else:
        wanted["beta"] = config.beta
    known = {f.name for f in fields(config_cls)}
    return config_cls(**{k: v for k, v in wanted.items() if k in known})


class _EWC:
    """Elastic weight consolidation on the trainable (LoRA) weights: λ/2 · Σ F (θ − θ*)²."""

    def __init__(self, model: Any, tokenizer: Any, examples: Sequence[Any], strength: float, max_length: int):
        import torch

        self.strength = strength
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.anchor = {n: p.detach().clone() for n, p in self.params.items()}
        self.fisher = {n: torch.zeros_like(p) for n, p in self.params.items()}
        texts = answer_texts(examples)
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        for prompt, answer in texts:
            row, begin = encode(tokenizer, prompt, answer, max_length)
            ids = torch.tensor([row], device=device)
            labels = ids.clone()
            labels[0, :begin] = -100
            model.zero_grad(set_to_none=True)
            model(input_ids=ids, labels=labels).loss.backward()
            for n, p in self.params.items():
                if p.grad is not None:
                    self.fisher[n] += p.grad.detach() ** 2 / max(1, len(texts))
        model.zero_grad(set_to_none=True)
        if was_training:
            model.train()

    def penalty(self) -> Any:
        total: Any = 0.0
        for n, p in self.params.items():
            total = total + (self.fisher[n] * (p - self.anchor[n]) ** 2).sum()
        return self.strength / 2 * total


def _with_ewc(trainer_cls: Any, ewc: _EWC) -> Any:
    class EWCTrainer(trainer_cls):
        def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False, **kwargs: Any) -> Any:
            result = super().compute_loss(model, inputs, return_outputs=return_outputs, **kwargs)
            if return_outputs:
                loss, outputs = result
                return loss + ewc.penalty(), outputs
            return result + ewc.penalty()

    return EWCTrainer


def last_checkpoint(folder: Path) -> str | None:
    if not folder.is_dir():
        return None
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(folder))


@quiet()  # a context manager used as a decorator: quiet for the whole call
def fit(
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
    """Train a LoRA adapter on ``examples`` and save it to ``work_dir/adapter``.

    With ``config.processes`` > 1 the run is launched on that many DDP processes
    (:mod:`minetune.train.distributed`).

    Checkpoints go to ``work_dir/checkpoints`` (``resume`` continues from the newest). With
    ``parent_adapter`` that adapter is trained further instead of a new one. ``eval_sets`` are
    scored before and after. When ``cancel`` is set (or on the first Ctrl-C in the main thread)
    training stops after the current step with a checkpoint, and the result has no adapter.
    """
    config.check(method)
    if not examples:
        raise TrainingError("There are no examples to train on.")
    if config.processes > 1 and world_size() == 1:
        return fit_distributed(
            base_dir,
            method,
            examples,
            config,
            work_dir,
            parent_adapter=parent_adapter,
            eval_sets=eval_sets,
            ewc_examples=ewc_examples,
            on_progress=on_progress,
            cancel=cancel,
            resume=resume,
        )
    if select_engine(method, config, resume=resume) is RESIDENT:
        return fit_resident(
            base_dir,
            examples,
            config,
            work_dir,
            parent_adapter=parent_adapter,
            eval_sets=eval_sets,
            on_progress=on_progress,
            cancel=cancel,
        )
    stop: threading.Event = cancel or threading.Event()
    notify = on_progress or (lambda _p: None)
    started = time.perf_counter()
    notify(Progress("loading"))
    import torch
    from transformers import set_seed

    if config.threads:
        torch.set_num_threads(config.threads)
    cuda, precision = device_and_precision(config)
    set_seed(config.seed)  # before the LoRA weights are initialised, so runs repeat exactly
    model, tokenizer = load_base(base_dir, precision)
    if cuda:
        model.to("cuda")
    from peft import LoraConfig, PeftModel

    peft_config = None
    if parent_adapter is not None:
        check_adapter_dir(parent_adapter)
        try:
            model = PeftModel.from_pretrained(model, str(parent_adapter), is_trainable=True)
        except Exception as exc:
            raise AdapterError(
                f"Could not load the adapter {parent_adapter} onto {base_dir}: "
                f"{' '.join(str(exc).split())[:300]}"
            ) from None
    else:
        from peft import get_peft_model

        peft_config = LoraConfig(
            r=config.rank,
            lora_alpha=config.alpha or 2 * config.rank,
            lora_dropout=config.dropout,
            target_modules=config.target_modules,
            task_type="CAUSAL_LM",
        )
        # Wrapped here (not by the trainer) so the untrained model can be scored first.
        model = get_peft_model(model, peft_config)
    scorer = Scorer(model, tokenizer, config.max_length)
    sets = eval_sets or EvalSets()
    before = score(scorer, sets) if not sets.empty() else {}
    ewc = None
    if config.ewc_lambda > 0 and ewc_examples:
        ewc = _EWC(
            model, tokenizer, list(ewc_examples)[: config.ewc_examples], config.ewc_lambda, config.max_length
        )

    from datasets import Dataset
    from transformers import PrinterCallback, ProgressCallback, TrainerCallback

    rows = [trl_row(ex) for ex in (interleave_kto(examples) if method == "kto" else examples)]
    args = _trl_args(method, config, work_dir / "checkpoints", cuda, precision)
    _, trainer_cls = _trainer_parts(method)
    if ewc is not None:
        trainer_cls = _with_ewc(trainer_cls, ewc)
    curve: list[dict[str, Any]] = []
    last_log: dict[str, Any] = {}

    class Reporter(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            if logs and "loss" in logs:
                point = {"step": int(state.global_step), "train_loss": float(logs["loss"])}
                if "epoch" in logs:
                    point["epoch"] = round(float(logs["epoch"]), 4)
                curve.append(point)
                last_log.clear()
                last_log.update({k: v for k, v in logs.items() if isinstance(v, int | float)})
                notify(
                    Progress(
                        "training",
                        int(state.global_step),
                        int(state.max_steps),
                        float(logs["loss"]),
                        point.get("epoch"),
                        time.perf_counter() - started,
                    )
                )
            self.on_step_end(args, state, control)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if stop.is_set():
                control.should_save = True
                control.should_training_stop = True

    try:
        trainer = trainer_cls(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            callbacks=[Reporter()],
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise TrainingError(
            f"Could not set up {method.upper()} training: {' '.join(str(exc).split())[:300]}"
        ) from None
    for callback in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(callback)
    checkpoint = last_checkpoint(work_dir / "checkpoints") if resume else None
    if resume and checkpoint is None:
        raise TrainingError(f"No checkpoint to resume from in {work_dir / 'checkpoints'}.")
    notify(Progress("training", 0, 0, None, None, time.perf_counter() - started))
    train_started = time.perf_counter()
    with _first_ctrl_c_cancels(stop):
        output = trainer.train(resume_from_checkpoint=checkpoint)
    train_s = time.perf_counter() - train_started
    state = trainer.state
    runtime = time.perf_counter() - started
    tokens = int(last_log.get("num_tokens", 0)) or _count_tokens(tokenizer, examples, config, state)
    if stop.is_set() and state.global_step < state.max_steps:
        return FitResult(
            None,
            True,
            curve,
            int(state.global_step),
            int(state.max_steps),
            runtime,
            tokens,
            before,
            {},
            {},
            train_s,
        )
    notify(Progress("evaluating", int(state.global_step), int(state.max_steps), None, None, runtime))
    after = score(scorer, sets) if not sets.empty() else {}
    notify(Progress("saving", int(state.global_step), int(state.max_steps), None, None, runtime))
    adapter_dir = work_dir / "adapter"
    if trainer.is_world_process_zero():  # every process holds the same weights after DDP
        if adapter_dir.exists():
            shutil.rmtree(adapter_dir)
        trainer.model.save_pretrained(str(adapter_dir), selected_adapters=["default"])
    log = last_log | {"train_loss_mean": float(getattr(output, "training_loss", float("nan")))}
    notify(
        Progress(
            "done", int(state.global_step), int(state.max_steps), None, None, time.perf_counter() - started
        )
    )
    return FitResult(
        adapter_dir,
        False,
        curve,
        int(state.global_step),
        int(state.max_steps),
        time.perf_counter() - started,
        tokens,
        before,
        after,
        log,
        train_s,
    )


TRL = Engine(
    name="trl",
    methods=METHODS,
    options=frozenset(f.name for f in fields(TrainConfig)),
    values={"precision": ("auto", "fp32", "bf16", "fp16")},
    resumable=True,
)
ENGINES = {"trl": TRL, "resident": RESIDENT}


def check_engine(method: str, config: TrainConfig, *, resume: bool = False) -> None:
    """Refuse a config the engine it names (``trl`` or ``resident``) would not train as asked;
    ``auto`` picks an engine that can (:func:`select_engine`), so it is never refused here."""
    if config.engine in ENGINES:
        ENGINES[config.engine].check(method, config, resume=resume)


def select_engine(method: str, config: TrainConfig, *, resume: bool = False) -> Engine:
    """The engine :func:`fit` uses: the one asked for (checked), or for ``auto`` the resident
    trainer when it supports everything the run asks for and a GPU is present (where TRL's
    per-run set-up dominates a small update); TRL otherwise."""
    check_engine(method, config, resume=resume)
    if config.engine != "auto":
        return ENGINES[config.engine]
    if resume or world_size() > 1 or RESIDENT.problems(method, config):
        return TRL  # the resident trainer runs in one process
    import torch

    return RESIDENT if torch.cuda.is_available() else TRL


def _count_tokens(tokenizer: Any, examples: Sequence[Any], config: TrainConfig, state: Any) -> int:
    """Approximate tokens trained on: example lengths × the epochs run (DPO counts both answers)."""
    per_epoch = 0
    for ex in examples:
        row = trl_row(ex)
        for key in ("completion", "chosen", "rejected"):
            if key in row:
                per_epoch += len(
                    encode(tokenizer, row["prompt"], row[key][0]["content"], config.max_length)[0]
                )
    epochs = float(getattr(state, "epoch", 0.0) or 0.0)
    return int(per_epoch * epochs)
