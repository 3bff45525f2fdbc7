"""Examples (:mod:`minetune.train.datasets` objects) as TRL rows and as token ids."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from minetune.train.config import TrainingError
from minetune.train.datasets import DPOExample, KTOExample, SFTExample


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def prompt_messages(ex: Any) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": m["content"]} for m in ex.prompt]


def trl_row(ex: Any) -> dict[str, Any]:
    """The TRL conversational row of an example: prompt/completion (SFT: the loss is on the
    completion only, whatever the chat template), prompt/chosen/rejected, prompt/completion/label."""
    if isinstance(ex, SFTExample):
        return {"prompt": prompt_messages(ex), "completion": _assistant(ex.response)}
    if isinstance(ex, DPOExample):
        return {
            "prompt": prompt_messages(ex),
            "chosen": _assistant(ex.chosen),
            "rejected": _assistant(ex.rejected),
        }
    if isinstance(ex, KTOExample):
        return {
            "prompt": prompt_messages(ex),
            "completion": _assistant(ex.completion),
            "label": bool(ex.label),
        }
    raise TrainingError(f"Not a training example: {type(ex).__name__}")


def target_text(ex: Any) -> str | None:
    """The answer an example says is good (for measuring loss on it), or None."""
    if isinstance(ex, SFTExample):
        return ex.response
    if isinstance(ex, DPOExample):
        return ex.chosen
    if isinstance(ex, KTOExample):
        return ex.completion if ex.label else None
    return None


def interleave_kto(examples: Sequence[Any]) -> list[Any]:
    good = [e for e in examples if e.label]
    bad = [e for e in examples if not e.label]
    out: list[Any] = []
    for i in range(max(len(good), len(bad))):
        out.extend(x[i] for x in (good, bad) if i < len(x))
    return out


def encode(
    tokenizer: Any, prompt: Sequence[dict[str, str]], completion: str, max_length: int
) -> tuple[list[int], int]:
    """Token ids of prompt + completion as the chat template renders them, and where the
    completion starts. Long prompts lose their beginning; long completions their end."""
    messages = [{"role": m["role"], "content": m["content"]} for m in prompt]
    eos = tokenizer.eos_token or ""
    if getattr(tokenizer, "chat_template", None):
        head = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(messages + _assistant(completion), tokenize=False)
        tail = full[len(head) :] if full.startswith(head) else completion + eos
    else:
        head = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in messages) + "Assistant:"
        tail = " " + completion + eos
    p_ids = list(tokenizer(head, add_special_tokens=False)["input_ids"])
    c_ids = list(tokenizer(tail, add_special_tokens=False)["input_ids"])
    c_ids = c_ids[: max(1, max_length - 1)]
    keep = max(1, max_length - len(c_ids))
    p_ids = p_ids[-keep:]
    return p_ids + c_ids, len(p_ids)
