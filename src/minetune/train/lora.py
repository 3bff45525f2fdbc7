"""Deprecated alias: local LoRA training now lives in modules by concern —
:mod:`~minetune.train.config` (TrainConfig, Progress, FitResult, errors),
:mod:`~minetune.train.base` (base models, adapter folders), :mod:`~minetune.train.rows`,
:mod:`~minetune.train.scoring`, :mod:`~minetune.train.engines` (fit, TRL, EWC, the resident
engine's selection), :mod:`~minetune.train.gate`, :mod:`~minetune.train.runs` (train, resume,
run) and :mod:`~minetune.train.examples`. Import from those; this module only re-exports."""

from minetune.train.base import BaseModel, base_for, base_from_spec, check_adapter_dir, resolve_base
from minetune.train.config import AdapterError, Progress, TrainConfig, TrainingError
from minetune.train.engines import fit
from minetune.train.examples import Selection, examples_for
from minetune.train.rows import encode, trl_row
from minetune.train.runs import resume, run, train

__all__ = [
    "AdapterError",
    "BaseModel",
    "Progress",
    "Selection",
    "TrainConfig",
    "TrainingError",
    "base_for",
    "base_from_spec",
    "check_adapter_dir",
    "encode",
    "examples_for",
    "fit",
    "resolve_base",
    "resume",
    "run",
    "train",
    "trl_row",
]
