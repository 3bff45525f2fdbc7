"""Where a program's learning stands, for a live notice in the chat ("learned a rule · now v7"):
its active version, how many rules it holds, and whether background learning is still running."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from minetune.store import Store
from minetune.store import jobs as jobs_db
from minetune.store.jobs import ACTIVE


@dataclass(frozen=True)
class LearningStatus:
    program: str
    version: int  # the active version's number
    note: str  # what made it (e.g. "rule from critique on attempt 12")
    rules: int  # active lessons
    learning: bool  # a learn job of the program is queued or running

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def learning_status(store: Store, program: str) -> LearningStatus:
    """The program's :class:`LearningStatus` now."""
    version = store.active_version(program)
    running = jobs_db.list_jobs(store, program, kinds=["learn"], statuses=list(ACTIVE), limit=1)
    return LearningStatus(
        program=program,
        version=version.number,
        note=version.note or "",
        rules=len(store.lessons(program)),
        learning=bool(running),
    )
