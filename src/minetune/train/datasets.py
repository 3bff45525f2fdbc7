"""Training datasets built from the store, and exports in the formats trainers and providers take.

Three kinds of example come out of one program's rated interactions:

* **SFT** — every *accepted* answer: effective stars >= ``threshold`` (default 4), or praised
  with no explicit star rating (an explicit rating always wins over praise, as in
  :func:`~minetune.store.effective_ratings`).
* **DPO** — preference pairs, preferred answer first:

  - *retry chains*: each accepted attempt is preferred over every **earlier** attempt of the same
    turn that is rated lower, or not rated at all (the user asked for another try);
  - *rated siblings*: attempts of one turn rated differently pair too, the best-rated preferred
    over each lower-rated one (this also covers a good answer the user retried anyway);
  - *user edits*: an answer the user rewrote on the dataset page (an attempt whose model is
    ``user-edit``, rated 5 stars) is preferred over every earlier attempt of its turn, whatever
    their stars; those earlier attempts are no longer accepted answers (no SFT, no KTO-desirable).

  A pair is never emitted twice, so a 3-attempt chain ending in 5 stars gives exactly 2 pairs.
* **KTO** — every rated answer with a binary label: desirable when accepted (>= ``threshold``
  or praised), undesirable at 2 stars or fewer; 3-star (neutral) answers are left out.

The prompt of every example is the turn's **original** prompt: the exact messages sent for its
first attempt (system prompt as rendered then, conversation history, the user message), never the
retry transcript that later attempts saw. Every example carries the ids of the attempts it came
from (lineage). Examples are deduplicated on content; examples with the same prompt (and so all
examples of one turn) stay on the same side of the 90/10 train/validation split, which is fixed by
a seed and stable as data grows.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from minetune.errors import MinetuneError
from minetune.feedback import accepts_answer
from minetune.store import Store, effective_ratings
from minetune.store.browse import USER_EDIT_MODEL
from minetune.store.training import AttemptRecord, TurnRecord, rated_turns

METHODS = ("sft", "dpo", "kto")
MIN_EXAMPLES = 10
RECOMMENDED_EXAMPLES = 50
DEFAULT_THRESHOLD = 4
UNDESIRABLE_MAX_STARS = 2
DEFAULT_SEED = 1234
VALID_FRACTION = 0.1

Message = dict[str, Any]


class DatasetError(MinetuneError):
    """A dataset cannot be built or exported as asked."""


# -- examples --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SFTExample:
    """An accepted answer to the turn's original prompt."""

    method: ClassVar[str] = "sft"
    prompt: list[Message]
    response: str
    turn_id: int
    attempt_ids: tuple[int, ...]
    stars: int | None
    praised: bool


@dataclass(frozen=True)
class DPOExample:
    """A preference pair for one prompt: ``chosen`` is preferred over ``rejected``."""

    method: ClassVar[str] = "dpo"
    prompt: list[Message]
    chosen: str
    rejected: str
    turn_id: int
    attempt_ids: tuple[int, ...]
    chosen_attempt_id: int
    rejected_attempt_id: int
    chosen_stars: int | None
    rejected_stars: int | None
    source: str  # "retry" (chain ending in an accepted answer), "sibling" (rated differently) or "edit"


@dataclass(frozen=True)
class KTOExample:
    """One rated answer labelled desirable (True) or undesirable (False)."""

    method: ClassVar[str] = "kto"
    prompt: list[Message]
    completion: str
    label: bool
    turn_id: int
    attempt_ids: tuple[int, ...]
    stars: int | None
    praised: bool


Example = SFTExample | DPOExample | KTOExample


@dataclass(frozen=True)
class Eligibility:
    """Whether a method has enough examples, and what is missing when it has not."""

    method: str
    count: int
    minimum: int = MIN_EXAMPLES
    recommended: int = RECOMMENDED_EXAMPLES
    missing: tuple[str, ...] = ()
    details: dict[str, int] = field(default_factory=dict)

    @property
    def eligible(self) -> bool:
        return not self.missing

    @property
    def level(self) -> str:
        """'not enough', 'minimum' (trainable, below the recommendation) or 'recommended'."""
        if not self.eligible:
            return "not enough"
        return "recommended" if self.count >= self.recommended else "minimum"

    def summary(self) -> str:
        head = f"{self.method.upper()}: {self.count} example(s) — {self.level}"
        if self.missing:
            return head + ". " + " ".join(self.missing)
        if self.count < self.recommended:
            return head + (
                f". Trainable; {self.recommended}+ are recommended "
                f"({self.recommended - self.count} more) for a dependable result."
            )
        return head + "."


@dataclass
class Dataset:
    """One method's examples for a program (or all programs), split into train and validation."""

    method: str
    program: str | None
    train: list[Any]
    valid: list[Any]
    eligibility: Eligibility
    duplicates: int = 0
    conflicts: int = 0

    @property
    def examples(self) -> list[Any]:
        return self.train + self.valid

    @property
    def attempt_ids(self) -> list[int]:
        """Every attempt any example came from (the dataset's lineage), sorted."""
        return sorted({a for ex in self.examples for a in ex.attempt_ids})


# -- ratings and prompts ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rated:
    attempt: AttemptRecord
    stars: int | None  # effective stars
    praised: bool
    explicit: bool  # has an explicit star rating
    superseded: bool = False  # an earlier attempt of a turn the user answered by editing


def _rate(attempt: AttemptRecord, edited: int = 0) -> _Rated:
    stars = effective_ratings((attempt.id, f.kind, f.stars) for f in attempt.feedback).get(attempt.id)
    praised = any(f.kind == "praise" for f in attempt.feedback)
    explicit = any(f.kind == "explicit" and f.stars is not None for f in attempt.feedback)
    return _Rated(attempt, stars, praised, explicit, attempt.number < edited)


def _rated(turn: TurnRecord) -> list[_Rated]:
    """Each complete attempt of the turn rated (a streaming or interrupted one is no answer: never
    chosen, never rejected); attempts before the user's latest edit are superseded."""
    edited = max((a.number for a in turn.attempts if _is_edit(a)), default=0)
    return [_rate(a, edited) for a in turn.attempts if a.complete]


def _is_edit(attempt: AttemptRecord) -> bool:
    return attempt.model_spec == USER_EDIT_MODEL


def _accepted(r: _Rated, threshold: int) -> bool:
    """An accepted answer (:func:`minetune.feedback.accepts_answer`) the user has not replaced
    by an edit, with some text."""
    if r.superseded or not r.attempt.response.strip():
        return False
    return accepts_answer(r.stars, praised=r.praised, rated=r.explicit, threshold=threshold)


def accepted_answer_ids(store: Store, program: str, threshold: int = DEFAULT_THRESHOLD) -> list[int]:
    """The attempt ids of ``program``'s accepted answers: complete, not superseded by a user edit,
    in a turn not excluded from datasets, and accepted at ``threshold`` stars or praised. Every
    count of "accepted answers" (train, train buffer, program show) is the length of this list,
    and SFT rows and desirable KTO rows come from exactly these answers."""
    return sorted(
        r.attempt.id for turn in rated_turns(store, program) for r in _rated(turn) if _accepted(r, threshold)
    )


def _clean(message: dict[str, Any]) -> Message:
    content = message.get("content")
    return {"role": str(message.get("role", "user")), "content": content if isinstance(content, str) else ""}


def original_prompt(turn: TurnRecord) -> tuple[list[Message], int | None]:
    """The messages sent for the turn's first attempt, ending with the user message, and that
    attempt's id. Retry transcripts (earlier answers and feedback) are cut off; attempts stored
    without messages (some imports) give just the user message."""
    for attempt in turn.attempts:
        messages = [_clean(m) for m in attempt.messages if isinstance(m, dict)]
        for i in range(len(messages) - 1, -1, -1):
            if messages[i]["role"] == "user" and messages[i]["content"] == turn.user_message:
                return messages[: i + 1], attempt.id
    return [{"role": "user", "content": turn.user_message}], None


def _lineage(*ids: int | None) -> tuple[int, ...]:
    return tuple(sorted({i for i in ids if i is not None}))


# -- builders --------------------------------------------------------------------------------------


def _turn_sft(turn: TurnRecord, threshold: int) -> list[SFTExample]:
    prompt, prompt_id = original_prompt(turn)
    out = []
    for r in _rated(turn):
        if _accepted(r, threshold):
            out.append(
                SFTExample(
                    prompt, r.attempt.response, turn.id, _lineage(prompt_id, r.attempt.id), r.stars, r.praised
                )
            )
    return out


def _prefers(a: _Rated, b: _Rated) -> bool:
    return a.stars is not None and b.stars is not None and a.stars > b.stars


def _turn_dpo(turn: TurnRecord, threshold: int) -> list[DPOExample]:
    prompt, prompt_id = original_prompt(turn)
    rated = [r for r in _rated(turn) if r.attempt.response.strip()]
    pairs: list[tuple[_Rated, _Rated, str]] = []
    for chosen in rated:
        if not _accepted(chosen, threshold):
            continue
        for earlier in rated:
            if earlier.attempt.number >= chosen.attempt.number or _accepted(earlier, threshold):
                continue
            if _is_edit(chosen.attempt):
                pairs.append((chosen, earlier, "edit"))
            elif earlier.stars is None or chosen.stars is None or _prefers(chosen, earlier):
                pairs.append((chosen, earlier, "retry"))
    starred = [r for r in rated if r.stars is not None]
    if starred:
        top = max(r.stars for r in starred if r.stars is not None)
        for best in (r for r in starred if r.stars == top and not r.superseded):
            pairs.extend((best, other, "sibling") for other in starred if _prefers(best, other))
    out, seen = [], set()
    for chosen, rejected, source in pairs:
        key = (chosen.attempt.id, rejected.attempt.id)
        if key in seen or chosen.attempt.response == rejected.attempt.response:
            continue
        seen.add(key)
        out.append(
            DPOExample(
                prompt=prompt,
                chosen=chosen.attempt.response,
                rejected=rejected.attempt.response,
                turn_id=turn.id,
                attempt_ids=_lineage(prompt_id, chosen.attempt.id, rejected.attempt.id),
                chosen_attempt_id=chosen.attempt.id,
                rejected_attempt_id=rejected.attempt.id,
                chosen_stars=chosen.stars,
                rejected_stars=rejected.stars,
                source=source,
            )
        )
    return out


def _turn_kto(turn: TurnRecord, threshold: int) -> list[KTOExample]:
    prompt, prompt_id = original_prompt(turn)
    out = []
    for r in _rated(turn):
        if not r.attempt.response.strip():
            continue
        if _accepted(r, threshold):
            label = True
        elif r.stars is not None and r.stars <= UNDESIRABLE_MAX_STARS:
            label = False
        else:
            continue
        out.append(
            KTOExample(
                prompt,
                r.attempt.response,
                label,
                turn.id,
                _lineage(prompt_id, r.attempt.id),
                r.stars,
                r.praised,
            )
        )
    return out


_BUILDERS: dict[str, Callable[[TurnRecord, int], Sequence[Any]]] = {
    "sft": _turn_sft,
    "dpo": _turn_dpo,
    "kto": _turn_kto,
}


def _prompt_key(prompt: list[Message]) -> str:
    return json.dumps(prompt, sort_keys=True, ensure_ascii=False)


def _content_key(ex: Any) -> tuple[str, ...]:
    prompt = _prompt_key(ex.prompt)
    if isinstance(ex, SFTExample):
        return (prompt, ex.response)
    if isinstance(ex, DPOExample):
        return (prompt, ex.chosen, ex.rejected)
    return (prompt, ex.completion)


def _dedupe(examples: Iterable[Any]) -> tuple[list[Any], int, int]:
    """Drop repeated examples (same content); KTO examples labelled both ways are dropped as
    conflicts. Returns (kept, duplicates, conflicts)."""
    kept: dict[tuple[str, ...], Any] = {}
    duplicates = 0
    conflicted: set[tuple[str, ...]] = set()
    for ex in examples:
        key = _content_key(ex)
        if key in conflicted:
            duplicates += 1
            continue
        if key in kept:
            duplicates += 1
            if isinstance(ex, KTOExample) and kept[key].label != ex.label:
                conflicted.add(key)
                del kept[key]
            continue
        kept[key] = ex
    return list(kept.values()), duplicates, len(conflicted)


def build_examples(
    store: Store, program: str, method: str, threshold: int = DEFAULT_THRESHOLD
) -> tuple[list[Any], int, int]:
    """Deduplicated examples of one method for one program: (examples, duplicates, conflicts)."""
    if method not in METHODS:
        raise DatasetError(f"Unknown training method {method!r}; choose one of: {', '.join(METHODS)}.")
    if not 1 <= threshold <= 5:
        raise DatasetError(f"The acceptance threshold must be 1-5 stars, got {threshold}.")
    build = _BUILDERS[method]
    return _dedupe(ex for turn in rated_turns(store, program) for ex in build(turn, threshold))


def split(
    examples: Sequence[Any], seed: int = DEFAULT_SEED, valid_fraction: float = VALID_FRACTION
) -> tuple[list[Any], list[Any]]:
    """A deterministic train/validation split by prompt group (so one turn never straddles it).

    Groups are ranked by a seeded hash of their prompt; the lowest-ranked ``valid_fraction`` of
    groups (at least one when there are two or more) become validation. Adding data moves few
    groups, so the validation set stays comparable as a program grows.
    """
    groups: dict[str, list[Any]] = {}
    for ex in examples:
        groups.setdefault(_prompt_key(ex.prompt), []).append(ex)
    if len(groups) < 2 or valid_fraction <= 0:
        return list(examples), []
    ranked = sorted(groups, key=lambda k: hashlib.sha256(f"{seed}\0{k}".encode()).hexdigest())
    n_valid = max(1, round(len(groups) * valid_fraction))
    valid_keys = set(ranked[:n_valid])
    train = [ex for ex in examples if _prompt_key(ex.prompt) not in valid_keys]
    valid = [ex for ex in examples if _prompt_key(ex.prompt) in valid_keys]
    return train, valid


def eligibility(method: str, examples: Sequence[Any], threshold: int = DEFAULT_THRESHOLD) -> Eligibility:
    """Is there enough for ``method`` (minimum 10, 50+ recommended), and what is missing?"""
    n = len(examples)
    short = MIN_EXAMPLES - n
    missing: list[str] = []
    details: dict[str, int] = {}
    if method == "sft":
        if short > 0:
            missing.append(
                f"Needs at least {MIN_EXAMPLES} accepted answers (rated ≥ {threshold}★ or praised) "
                f"as distinct SFT examples; has {n}: accept {short} more."
            )
    elif method == "dpo":
        details = {
            "retry": sum(1 for ex in examples if ex.source == "retry"),
            "sibling": sum(1 for ex in examples if ex.source == "sibling"),
            "edit": sum(1 for ex in examples if ex.source == "edit"),
        }
        if short > 0:
            missing.append(
                f"Needs at least {MIN_EXAMPLES} preference pairs; has {n}: {short} more. Pairs come from "
                f"retries — rate a weak answer, /retry, and rate the retry {threshold}★ or higher "
                "(each earlier attempt gives one pair) — or from attempts of one message rated differently."
            )
    elif method == "kto":
        good = sum(1 for ex in examples if ex.label)
        details = {"desirable": good, "undesirable": n - good}
        if short > 0:
            missing.append(
                f"Needs at least {MIN_EXAMPLES} labelled answers (desirable: {threshold}★+ or praised; "
                f"undesirable: {UNDESIRABLE_MAX_STARS}★ or less; 3★ is not used); has {n}: {short} more."
            )
        if n and (good == 0 or good == n):
            kind = "undesirable (rated 1-2★)" if good else "desirable (rated 4-5★ or praised)"
            missing.append(f"Needs both kinds of answer; there are no {kind} ones yet.")
        if n == 0:
            details = {"desirable": 0, "undesirable": 0}
    else:
        raise DatasetError(f"Unknown training method {method!r}; choose one of: {', '.join(METHODS)}.")
    return Eligibility(method, n, missing=tuple(missing), details=details)


def _program_names(store: Store, program: str | None) -> list[str]:
    return [program] if program is not None else [p.name for p in store.programs()]


def build_dataset(
    store: Store,
    program: str | None,
    method: str,
    *,
    threshold: int = DEFAULT_THRESHOLD,
    seed: int = DEFAULT_SEED,
    valid_fraction: float = VALID_FRACTION,
) -> Dataset:
    """Examples of ``method`` for ``program`` (None: every program of the store's user), split."""
    train: list[Any] = []
    valid: list[Any] = []
    duplicates = conflicts = 0
    for name in _program_names(store, program):
        examples, dup, conf = build_examples(store, name, method, threshold)
        t, v = split(examples, seed, valid_fraction)
        train += t
        valid += v
        duplicates += dup
        conflicts += conf
    return Dataset(
        method, program, train, valid, eligibility(method, train + valid, threshold), duplicates, conflicts
    )


def eligibility_report(
    store: Store, program: str | None, threshold: int = DEFAULT_THRESHOLD
) -> dict[str, Eligibility]:
    """Eligibility of every method for ``program`` (None: all programs)."""
    return {m: build_dataset(store, program, m, threshold=threshold).eligibility for m in METHODS}


# -- formats ---------------------------------------------------------------------------------------


def _assistant(text: str) -> Message:
    return {"role": "assistant", "content": text}


def _openai_prompt(prompt: list[Message]) -> list[Message]:
    """History answers are context only: ``weight: 0`` keeps them out of the loss (OpenAI's
    documented per-assistant-message ``weight`` key, 0 or 1)."""
    return [m | {"weight": 0} if m["role"] == "assistant" else dict(m) for m in prompt]


def _system_and_turns(prompt: list[Message]) -> tuple[str, list[tuple[str, str]], str]:
    """(system prompt, [(user, assistant) history], final user message) of a prompt."""
    system = "\n\n".join(m["content"] for m in prompt if m["role"] == "system")
    rest = [m for m in prompt if m["role"] != "system"]
    user = rest[-1]["content"] if rest else ""
    history: list[tuple[str, str]] = []
    pending: str | None = None
    for m in rest[:-1]:
        if m["role"] == "user":
            if pending is not None:
                history.append((pending, ""))
            pending = m["content"]
        elif m["role"] == "assistant":
            history.append((pending or "", m["content"]))
            pending = None
    if pending is not None:
        history.append((pending, ""))
    return system, history, user


def openai_chat_row(ex: SFTExample) -> dict[str, Any]:
    """OpenAI supervised fine-tuning (chat): {"messages": [system?, ..., user, assistant]}."""
    return {"messages": [*_openai_prompt(ex.prompt), _assistant(ex.response)]}


def openai_dpo_row(ex: DPOExample) -> dict[str, Any]:
    """OpenAI preference fine-tuning (DPO):
    {"input": {"messages": [...]}, "preferred_output": [assistant], "non_preferred_output": [assistant]}."""
    return {
        "input": {"messages": [dict(m) for m in ex.prompt]},
        "preferred_output": [_assistant(ex.chosen)],
        "non_preferred_output": [_assistant(ex.rejected)],
    }


def trl_sft_row(ex: SFTExample) -> dict[str, Any]:
    """TRL conversational language modeling (SFTTrainer): {"messages": [...]}."""
    return {"messages": [*(dict(m) for m in ex.prompt), _assistant(ex.response)]}


def trl_dpo_row(ex: DPOExample) -> dict[str, Any]:
    """TRL conversational preference (DPOTrainer): {"prompt": [...], "chosen": [...], "rejected": [...]}."""
    return {
        "prompt": [dict(m) for m in ex.prompt],
        "chosen": [_assistant(ex.chosen)],
        "rejected": [_assistant(ex.rejected)],
    }


def trl_kto_row(ex: KTOExample) -> dict[str, Any]:
    """TRL conversational unpaired preference (KTOTrainer): {"prompt", "completion", "label"}."""
    return {
        "prompt": [dict(m) for m in ex.prompt],
        "completion": [_assistant(ex.completion)],
        "label": ex.label,
    }


def sharegpt_row(ex: SFTExample) -> dict[str, Any]:
    """ShareGPT: {"conversations": [{"from": "system"|"human"|"gpt", "value": ...}, ...]}; the
    system prompt, when there is one, is the first entry (as axolotl and LLaMA-Factory read it)."""
    names = {"system": "system", "user": "human", "assistant": "gpt"}
    turns = [{"from": names.get(m["role"], "human"), "value": m["content"]} for m in ex.prompt]
    return {"conversations": [*turns, {"from": "gpt", "value": ex.response}]}


def alpaca_row(ex: SFTExample) -> dict[str, Any]:
    """Alpaca (with LLaMA-Factory's system/history columns):
    {"instruction", "input", "output", "system", "history": [[user, assistant], ...]}."""
    system, history, user = _system_and_turns(ex.prompt)
    return {
        "instruction": user,
        "input": "",
        "output": ex.response,
        "system": system,
        "history": [[u, a] for u, a in history],
    }


@dataclass(frozen=True)
class Format:
    name: str
    method: str
    row: Callable[[Any], dict[str, Any]]
    doc: str


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("openai-chat", "sft", openai_chat_row, "OpenAI supervised fine-tuning chat JSONL"),
        Format("openai-dpo", "dpo", openai_dpo_row, "OpenAI preference (DPO) fine-tuning JSONL"),
        Format("trl-sft", "sft", trl_sft_row, "TRL conversational 'messages' (SFTTrainer)"),
        Format("trl-dpo", "dpo", trl_dpo_row, "TRL conversational prompt/chosen/rejected (DPOTrainer)"),
        Format("trl-kto", "kto", trl_kto_row, "TRL conversational prompt/completion/label (KTOTrainer)"),
        Format("sharegpt", "sft", sharegpt_row, "ShareGPT 'conversations' with from/value"),
        Format("alpaca", "sft", alpaca_row, "Alpaca instruction/input/output with system and history"),
    )
}


def get_format(name: str) -> Format:
    try:
        return FORMATS[name]
    except KeyError:
        raise DatasetError(f"Unknown dataset format {name!r}; choose one of: {', '.join(FORMATS)}.") from None


def to_jsonl(examples: Iterable[Any], fmt: str | Format) -> bytes:
    """The examples as JSON Lines (UTF-8, one object per line) in format ``fmt``."""
    f = get_format(fmt) if isinstance(fmt, str) else fmt
    lines = []
    for ex in examples:
        if ex.method != f.method:
            raise DatasetError(f"Format {f.name} takes {f.method.upper()} examples, not {ex.method.upper()}.")
        lines.append(json.dumps(f.row(ex), ensure_ascii=False) + "\n")
    return "".join(lines).encode("utf-8")


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def split_paths(out: Path) -> tuple[Path, Path]:
    """FILE.train.jsonl and FILE.valid.jsonl for ``--out FILE`` (a .jsonl/.json suffix is dropped)."""
    base = out.with_suffix("") if out.suffix.lower() in (".jsonl", ".json") else out
    return base.with_name(base.name + ".train.jsonl"), base.with_name(base.name + ".valid.jsonl")


@dataclass
class ExportResult:
    format: str
    dataset: Dataset
    files: dict[str, Path]  # "all" or "train"/"valid" -> path
    counts: dict[str, int]


def export_dataset(
    store: Store,
    fmt: str,
    out: Path,
    *,
    program: str | None = None,
    split_files: bool = False,
    threshold: int = DEFAULT_THRESHOLD,
    seed: int = DEFAULT_SEED,
) -> ExportResult:
    """Write ``program``'s examples (None: all programs) to ``out`` in format ``fmt``; with
    ``split_files`` write FILE.train.jsonl and FILE.valid.jsonl instead. Files are replaced atomically."""
    f = get_format(fmt)
    dataset = build_dataset(store, program, f.method, threshold=threshold, seed=seed)
    if split_files:
        train_path, valid_path = split_paths(out)
        _write_atomic(train_path, to_jsonl(dataset.train, f))
        _write_atomic(valid_path, to_jsonl(dataset.valid, f))
        files = {"train": train_path, "valid": valid_path}
        counts = {"train": len(dataset.train), "valid": len(dataset.valid)}
    else:
        _write_atomic(out, to_jsonl(dataset.examples, f))
        files = {"all": out}
        counts = {"all": len(dataset.examples)}
    return ExportResult(f.name, dataset, files, counts)
