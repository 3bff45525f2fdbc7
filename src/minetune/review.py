"""Looking back at what was said: turns with their attempts and ratings, the dataset review
(filter, edit, exclude), and why an answer came out the way it did.

Everything here is read through a user-bound :class:`~minetune.store.Store`, so one user's ids
are "not found" for another.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

from minetune.errors import FeedbackError, NotFoundError
from minetune.store import Store, browse, effective_ratings
from minetune.store import adapters as adapters_db
from minetune.store.schema import COMPLETE, Attempt, Turn

MAX_EDIT_CHARS = 200_000


@dataclass(frozen=True)
class AttemptView:
    """An attempt as the UI shows it: the answer, its effective stars and what feedback it got."""

    id: int
    turn_id: int
    number: int
    text: str
    model: str
    version_id: int | None
    stars: int | None  # effective rating: the latest explicit one, else the latest other
    rated_explicitly: bool
    praised: bool
    critiques: list[str]
    user_edit: bool
    latency_ms: float
    prompt_tokens: int | None
    completion_tokens: int | None
    created_at: str
    # complete | streaming | interrupted: only a complete attempt can be rated (see app.exchange)
    status: str = COMPLETE

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TurnView:
    id: int
    conversation_id: int
    index: int
    user_message: str
    excluded: bool
    attempts_to_5: int | None
    created_at: str
    attempts: list[AttemptView] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _iso(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value is not None else ""


def attempt_view(attempt: Attempt) -> AttemptView:
    """The view of an attempt whose feedback is loaded."""
    feedback = sorted(attempt.feedback, key=lambda f: f.id)
    stars = effective_ratings((attempt.id, f.kind, f.stars) for f in feedback).get(attempt.id)
    return AttemptView(
        id=attempt.id,
        turn_id=attempt.turn_id,
        number=attempt.number,
        text=attempt.response,
        model=attempt.model_spec,
        version_id=attempt.version_id,
        stars=stars,
        rated_explicitly=any(f.kind == "explicit" and f.stars is not None for f in feedback),
        praised=any(f.kind == "praise" for f in feedback),
        critiques=[f.critique for f in feedback if f.critique],
        user_edit=attempt.model_spec == browse.USER_EDIT_MODEL,
        latency_ms=attempt.latency_ms,
        prompt_tokens=attempt.prompt_tokens,
        completion_tokens=attempt.completion_tokens,
        created_at=_iso(attempt.created_at),
        status=attempt.status,
    )


def turn_view(turn: Turn) -> TurnView:
    """The view of a turn whose attempts and their feedback are loaded."""
    return TurnView(
        id=turn.id,
        conversation_id=turn.conversation_id,
        index=turn.index,
        user_message=turn.user_message,
        excluded=bool(turn.excluded),
        attempts_to_5=turn.attempts_to_5,
        created_at=_iso(turn.created_at),
        attempts=[attempt_view(a) for a in sorted(turn.attempts, key=lambda a: a.number)],
    )


def conversation(store: Store, conversation_id: int) -> tuple[dict[str, Any], list[TurnView]]:
    """A conversation ({id, title, program}) and its turns in order."""
    program = browse.conversation_program(store, conversation_id)
    conv, turns = browse.conversation_turns(store, conversation_id)
    head = {"id": conv.id, "title": conv.title, "program": program, "created_at": _iso(conv.created_at)}
    return head, [turn_view(t) for t in turns]


def turn(store: Store, turn_id: int) -> TurnView:
    return turn_view(store.turn(turn_id))


def attempt(store: Store, attempt_id: int) -> AttemptView:
    return attempt_view(store.attempt(attempt_id))


# -- the dataset review -----------------------------------------------------------------------------


def star_range(
    stars: int | str | None = None, min_stars: int | str | None = None, max_stars: int | str | None = None
) -> tuple[int | None, int | None]:
    """(min, max) stars from an exact value or bounds, each 1-5; empty values mean no bound."""

    def parse(value: int | str | None, name: str) -> int | None:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise FeedbackError(f"{name} must be a whole number from 1 to 5, got {value!r}.") from None
        if not 1 <= number <= 5:
            raise FeedbackError(f"{name} must be a whole number from 1 to 5, got {number}.")
        return number

    exact = parse(stars, "stars")
    low, high = parse(min_stars, "min_stars"), parse(max_stars, "max_stars")
    if exact is not None:
        if low is not None or high is not None:
            raise FeedbackError("Give either stars or min_stars/max_stars, not both.")
        return exact, exact
    if low is not None and high is not None and low > high:
        raise FeedbackError(f"min_stars ({low}) is greater than max_stars ({high}).")
    return low, high


def dataset(
    store: Store, program: str, min_stars: int | None = None, max_stars: int | None = None, limit: int = 500
) -> list[TurnView]:
    """The program's newest turns with their complete attempts (a half answer, streaming or
    interrupted, is not data; a turn with no complete attempt drops out). With a star range, only
    turns where some attempt's effective rating lies in it (unrated turns drop out)."""
    views = []
    for view in (turn_view(t) for t in browse.program_turns(store, program, limit)):
        answers = [a for a in view.attempts if a.status == COMPLETE]
        if answers:
            views.append(replace(view, attempts=answers))
    if min_stars is None and max_stars is None:
        return views
    low, high = min_stars or 1, max_stars or 5
    return [v for v in views if any(a.stars is not None and low <= a.stars <= high for a in v.attempts)]


def edit_answer(store: Store, turn_id: int, text: str) -> AttemptView:
    """Make ``text`` the turn's preferred answer: a new ``user-edit`` attempt rated 5 stars, which
    the datasets prefer over every earlier attempt (see :mod:`minetune.train.datasets`)."""
    if len(text) > MAX_EDIT_CHARS:
        raise FeedbackError(
            f"The edited answer is {len(text):,} characters; the limit is {MAX_EDIT_CHARS:,}."
        )
    return attempt(store, browse.add_user_edit(store, turn_id, text).id)


# -- why this answer ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoUsed:
    attempt_id: int
    turn_id: int | None
    user: str
    response: str
    stars: int | None
    forgotten: bool  # deleted since the answer was made


@dataclass(frozen=True)
class Explanation:
    """What produced an answer: the program version (instructions, rules), the demos shown, the
    model and adapter, and the exact system prompt sent."""

    attempt_id: int
    program: str
    version: dict[str, Any] | None
    rules: list[str]
    demos: list[DemoUsed]
    demos_source: str
    model: str
    adapter: dict[str, Any] | None
    active_adapter: dict[str, Any] | None
    system_prompt: str
    critique_used: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_ms: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _adapter_dict(adapter: Any) -> dict[str, Any] | None:
    if adapter is None:
        return None
    return {
        "id": adapter.id,
        "domain": adapter.domain,
        "method": adapter.method,
        "base_model": adapter.base_model,
        "path": adapter.path,
        "status": adapter.status,
        "tainted": adapter.tainted_at is not None,
    }


def explain(store: Store, attempt_id: int) -> Explanation:
    """Why this answer: read from what the attempt stored (version id, demo attempt ids, messages)."""
    program, _conversation, _turn = browse.attempt_location(store, attempt_id)
    row = store.attempt(attempt_id)
    version = None
    rules: list[str] = []
    adapter = None
    if row.version_id is not None:
        try:
            v = browse.version_by_id(store, row.version_id)
        except NotFoundError:
            v = None
        if v is not None:
            rules = [str(item.get("text", "")) if isinstance(item, dict) else str(item) for item in v.lessons]
            version = {
                "id": v.id,
                "number": v.number,
                "note": v.note,
                "instructions": v.instructions,
                "model_spec": v.model_spec,
                "adapter": v.adapter,
            }
            adapter = (
                _adapter_dict(adapters_db.adapter_by_path(store, program, v.adapter)) if v.adapter else None
            )
    demos = []
    texts = store.attempt_texts([int(a) for a in row.demo_attempt_ids])
    for demo_id in (int(a) for a in row.demo_attempt_ids):
        if demo_id not in texts:
            demos.append(DemoUsed(demo_id, None, "", "", None, True))
            continue
        turn_id, user, response = texts[demo_id]
        demos.append(DemoUsed(demo_id, turn_id, user, response, attempt(store, demo_id).stars, False))
    system = "\n\n".join(
        str(m.get("content", "")) for m in row.messages if isinstance(m, dict) and m.get("role") == "system"
    )
    return Explanation(
        attempt_id=row.id,
        program=program,
        version=version,
        rules=rules,
        demos=demos,
        demos_source="the demo attempt ids stored with the answer when it was made",
        model=row.model_spec,
        adapter=adapter,
        active_adapter=_adapter_dict(adapters_db.active_adapter(store, program)),
        system_prompt=system,
        critique_used=row.critique_used,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        latency_ms=row.latency_ms,
    )
