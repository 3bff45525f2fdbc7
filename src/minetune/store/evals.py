"""Store helpers for offline evaluations (``minetune eval``) and the lineage that decides which
rated turns are held out from a candidate. Every query is scoped to the store's user through the
program; each call is one transaction committed on return."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from minetune.errors import NotFoundError
from minetune.store.repo import Store
from minetune.store.schema import Adapter, Attempt, EvalItem, EvalRun, Feedback, Lesson, Program

ITEM_FIELDS = (
    "turn_id",
    "prompt",
    "reference",
    "user_stars",
    "answer_a",
    "answer_b",
    "judge_a",
    "judge_b",
    "exact_a",
    "exact_b",
    "fuzzy_a",
    "fuzzy_b",
    "judge_winner",
    "reference_winner",
)


def create_run(store: Store, program: str, items: Iterable[dict[str, Any]], **fields: Any) -> EvalRun:
    """Record a finished run of ``program`` with its items (dicts of :data:`ITEM_FIELDS`)."""
    with store.db.transaction() as s:
        prog = store.program_row(s, program)
        run = EvalRun(program_id=prog.id, **fields)
        s.add(run)
        s.flush()
        for item in items:
            s.add(EvalItem(run_id=run.id, **{k: item.get(k) for k in ITEM_FIELDS}))
        s.flush()
        return run


def _owned(store: Store) -> Any:
    return (
        select(EvalRun)
        .join(Program, Program.id == EvalRun.program_id)
        .where(Program.user_id == store.user_id)
    )


def get_run(store: Store, run_id: int) -> tuple[EvalRun, list[EvalItem]]:
    """A run of this user's and its items (in turn order), else NotFoundError."""
    with store.db.transaction() as s:
        run = s.scalar(_owned(store).where(EvalRun.id == run_id))
        if run is None:
            raise NotFoundError(f"No evaluation run {run_id}.")
        items = list(s.scalars(select(EvalItem).where(EvalItem.run_id == run.id).order_by(EvalItem.id)))
        return run, items


def list_runs(store: Store, program: str, limit: int = 10) -> list[EvalRun]:
    """The newest runs of ``program``, newest first."""
    with store.db.transaction() as s:
        prog = store.program_row(s, program)
        query = select(EvalRun).where(EvalRun.program_id == prog.id).order_by(EvalRun.id.desc())
        return list(s.scalars(query.limit(limit)))


# -- lineage: what a candidate learned from --------------------------------------------------------


def attempt_turns(store: Store, attempt_ids: Iterable[int]) -> set[int]:
    """The turns of these attempts (this user's only)."""
    from minetune.store.adapters import attempt_turns as by_attempt

    return set(by_attempt(store, attempt_ids).values())


def lesson_turns(store: Store, program: str, lesson_ids: Iterable[int]) -> set[int]:
    """The turns whose feedback the given lessons of ``program`` were learned from."""
    ids = sorted({int(i) for i in lesson_ids})
    if not ids:
        return set()
    with store.db.transaction() as s:
        prog = store.program_row(s, program)
        rows = s.execute(
            select(Attempt.turn_id)
            .join(Feedback, Feedback.attempt_id == Attempt.id)
            .join(Lesson, Lesson.feedback_id == Feedback.id)
            .where(Lesson.id.in_(ids), Lesson.program_id == prog.id)
        )
        return {turn for (turn,) in rows}


def adapter_lineage(store: Store, program: str, path: str | None = None) -> set[int]:
    """Attempt ids the program's adapters were trained from (with ancestors): the adapter at
    ``path``, or every adapter of the program when ``path`` is None (a routed model)."""
    with store.db.transaction() as s:
        prog = store.program_row(s, program)
        query = select(Adapter.lineage_attempt_ids, Adapter.example_attempt_ids).where(
            Adapter.program_id == prog.id
        )
        if path is not None:
            query = query.where(Adapter.path == path)
        return {
            int(a) for lineage, examples in s.execute(query) for a in [*(lineage or []), *(examples or [])]
        }


# -- forget ----------------------------------------------------------------------------------------


def runs_with_turns(s: Session, turn_ids: Iterable[int]) -> list[int]:
    """Ids of the runs holding items of these turns (inside the caller's transaction)."""
    ids = sorted(set(turn_ids))
    if not ids:
        return []
    return sorted(set(s.scalars(select(EvalItem.run_id).where(EvalItem.turn_id.in_(ids)))))


def items_of_programs(s: Session, program_ids: Iterable[int], exclude_turns: Iterable[int]) -> list[EvalItem]:
    """Every eval item of these programs except those of ``exclude_turns`` (to redact)."""
    excluded = set(exclude_turns)
    query = (
        select(EvalItem)
        .join(EvalRun, EvalRun.id == EvalItem.run_id)
        .where(EvalRun.program_id.in_(sorted(set(program_ids))))
        .order_by(EvalItem.id)
    )
    return [item for item in s.scalars(query) if item.turn_id not in excluded]


def run_rows(s: Session, run_ids: Iterable[int]) -> list[tuple[EvalRun, list[EvalItem]]]:
    """These runs with their remaining items (inside the caller's transaction)."""
    out = []
    for run_id in sorted(set(run_ids)):
        run = s.get(EvalRun, run_id)
        if run is not None:
            items = list(s.scalars(select(EvalItem).where(EvalItem.run_id == run_id).order_by(EvalItem.id)))
            out.append((run, items))
    return out


def count_items(s: Session, turn_ids: Iterable[int]) -> int:
    """How many eval items hold these turns."""
    ids = sorted(set(turn_ids))
    if not ids:
        return 0
    return len(list(s.scalars(select(EvalItem.id).where(EvalItem.turn_id.in_(ids)))))
