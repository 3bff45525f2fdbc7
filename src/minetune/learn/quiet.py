"""Quiet model loading: loading the demo embedder (or building its int8 copy) is not work the user
asked for, so it prints no "Loading weights" progress bar, tracer warning or ONNX quantisation hint.
Progress bars stay on for long work the user started (training)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_loading() -> Iterator[None]:
    """Within the block: no transformers / huggingface_hub progress bars, no Python warnings and no
    log records below ERROR. Bars are turned back on afterwards when they were on before."""
    bars_were_on = _set_progress_bars(False)
    previous_disable = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous_disable)
        if bars_were_on:
            _set_progress_bars(True)


def _set_progress_bars(on: bool) -> bool:
    """Turn the transformers and huggingface_hub progress bars on or off; whether they were on."""
    was_on = False
    try:
        from transformers.utils import logging as hf_logging

        was_on = bool(hf_logging.is_progress_bar_enabled())
        hf_logging.enable_progress_bar() if on else hf_logging.disable_progress_bar()
    except ImportError:
        pass
    try:
        from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

        enable_progress_bars() if on else disable_progress_bars()
    except ImportError:
        pass
    return was_on
