"""Re-optimization after feedback: keep the demo index in sync and learn lessons from critiques.

The demo index of a program is kept in memory per process and synchronised incrementally from
the store: only feedback newer than the last seen id is read, so one new rating costs a few
small indexed queries, a vector insert and the credit update of the demos the rated attempt was
shown (:mod:`minetune.learn.demos`), whatever the size of the history. Everything in the index
is derived from the store (ratings, embeddings, the demo lineage), so a fresh process rebuilds
the same index on first use.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from minetune.config import Settings
from minetune.errors import MinetuneError
from minetune.learn.demos import (
    DEFAULT_POLICY,
    Demo,
    DemoIndex,
    accepted_candidates,
    imitation_shares,
    policy_with_defaults,
)
from minetune.learn.embed import Embedder, from_bytes, load_embedder, to_bytes
from minetune.models.base import ChatModel
from minetune.store import Store, effective_ratings
from minetune.store.demo_lineage import shown_demos

if TYPE_CHECKING:
    import numpy as np

    from minetune.learn.judge import PersonalJudge

_INDEXES: dict[tuple[str, int, int, str, int, str], _SyncedIndex] = {}
_LOCK = threading.Lock()


@dataclass
class _SyncedIndex:
    index: DemoIndex
    min_stars: int
    half_life: float = float(DEFAULT_POLICY["half_life"])
    last_feedback_id: int = 0
    up_to: int | None = None  # frozen: only feedback ids up to this one (reoptimize off)


def drop_turns(turn_ids: Sequence[int]) -> None:
    """Remove turns from every demo index of this process (after :func:`minetune.app.forget.forget`
    deleted them): their demos, and what their ratings credited to other demos. Other processes
    drop a forgotten demo on their next selection, which checks the store, and forget its credit
    when they rebuild (restart, ``minetune optimize``)."""
    with _LOCK:
        for state in _INDEXES.values():
            for turn_id in turn_ids:
                state.index.forget_turn(turn_id)


@dataclass
class LearningReport:
    """What one re-optimization changed."""

    demo_candidates: int = 0
    turns_updated: int = 0
    demos_credited: int = 0  # demo stats changed by ratings of answers shown them
    version: int | None = None
    rule: str | None = None
    superseded: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    elapsed_ms: float = 0.0


class Learner:
    """Prompt-level learning for one program of one store."""

    def __init__(self, store: Store, settings: Settings, program: str) -> None:
        self.store = store
        self.settings = settings
        self.program = program
        self._embedder: Embedder | None = None

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = load_embedder(self.settings.embedder, self.settings.home)
        return self._embedder

    def _key(self, frozen_version: int = 0) -> tuple[str, int, int, str, int, str]:
        url = self.settings.resolved_database_url
        program = self.store.program(self.program)
        # The program's creation time too: a database emptied and filled again (a restored backup,
        # a test's fresh schema) reuses ids, and an index built for the old rows must not be reused.
        born = program.created_at.isoformat() if program.created_at else ""
        return (url, self.store.user_id, program.id, self.settings.embedder, frozen_version, born)

    def _policy(self) -> dict[str, Any]:
        return policy_with_defaults(self.store.active_version(self.program).demo_policy)

    # -- the demo index ------------------------------------------------------------------

    def _synced(self, report: LearningReport | None = None) -> tuple[_SyncedIndex, int]:
        """The program's index, brought up to date with feedback newer than it has seen.

        With ``reoptimize`` off the prompt is frozen: the index holds only feedback recorded up
        to when the active version was made, so new ratings change nothing until a new version
        is published (``minetune optimize`` does that explicitly)."""
        version = self.store.active_version(self.program)
        frozen = not self.settings.reoptimize
        key = self._key(version.id if frozen else 0)
        with _LOCK:
            state = _INDEXES.get(key)
            policy = policy_with_defaults(version.demo_policy)
            min_stars, half_life = int(policy["min_stars"]), float(policy["half_life"])
            if state is None or (state.min_stars, state.half_life) != (min_stars, half_life):
                up_to = self.store.feedback_watermark(version.created_at) if frozen else None
                state = _SyncedIndex(DemoIndex(half_life), min_stars, half_life, up_to=up_to)
                _INDEXES[key] = state
            return state, self._apply_new_feedback(state, report)

    def _apply_new_feedback(self, state: _SyncedIndex, report: LearningReport | None = None) -> int:
        newest, turn_ids = self.store.feedback_since(self.program, state.last_feedback_id, state.up_to)
        if not turn_ids:
            return 0
        rows = self.store.feedback_rows(self.program, turn_ids, state.up_to)
        index = state.index
        for attempt_id, turn_id, *_ in rows:  # the clock: turns in the order of their first feedback
            index.note_turn(turn_id)
            index.attach(attempt_id, turn_id)
        candidates = {c.turn_id: c for c in accepted_candidates(rows, state.min_stars)}
        vectors = self._vectors(list(candidates), {c.turn_id: c.user for c in candidates.values()})
        for turn_id in turn_ids:
            if turn_id in candidates:
                index.upsert(candidates[turn_id], vectors[turn_id])
            else:
                index.remove_turn(turn_id)
        # Credit: each rated attempt's current rating is evidence about the demos it was shown.
        ratings = effective_ratings((a, kind, stars) for a, _, _, _, _, kind, stars in rows)
        turn_of = {a: t for a, t, *_ in rows}
        answer_of = {a: response for a, _, _, _, response, _, _ in rows}
        shown = shown_demos(self.store, self.program, list(ratings))
        for attempt_id, stars in ratings.items():
            demos = shown.get(attempt_id, [])
            shares = imitation_shares(answer_of[attempt_id], [index.response_of(d) for d in demos])
            changed = index.credit(attempt_id, turn_of[attempt_id], stars, demos, shares)
            if changed and report is not None:
                report.demos_credited += len(demos)
        state.last_feedback_id = newest
        return len(turn_ids)

    def _vectors(self, turn_ids: list[int], texts: dict[int, str]) -> dict[int, np.ndarray]:
        """Stored embeddings of these turns; missing ones are computed once and stored."""
        name = self.settings.embedder
        stored = self.store.turn_embeddings(turn_ids, name)
        vectors = {t: from_bytes(blob, self.embedder.dim) for t, blob in stored.items()}
        missing = [t for t in turn_ids if t not in vectors]
        if missing:
            fresh = self.embedder.encode([texts[t] for t in missing])
            vectors.update(zip(missing, fresh, strict=True))
            self.store.save_turn_embeddings(
                {t: to_bytes(vectors[t]) for t in missing}, name, self.embedder.dim
            )
        return vectors

    def embed(self, text: str) -> np.ndarray:
        return self.embedder.encode([text])[0]

    def demos_for(
        self, message: str, exclude_turns: Sequence[int] = ()
    ) -> tuple[list[Demo], np.ndarray | None]:
        """Demos for ``message`` under the active policy, and the message's embedding (None when
        there are no candidates, so the embedder is not loaded for nothing)."""
        state, _ = self._synced()
        if not len(state.index):
            return [], None
        query = self.embed(message)
        policy = self._policy()
        with _LOCK:  # the server syncs indexes from background threads while requests select
            demos = state.index.select(query, policy, exclude_turns)
        alive = self.store.existing_attempt_ids([d.attempt_id for d in demos])
        with _LOCK:
            for demo in demos:
                if demo.attempt_id not in alive:  # deleted elsewhere since the index saw it
                    state.index.forget_turn(demo.turn_id)
        return [d for d in demos if d.attempt_id in alive], query

    def remember_embedding(self, turn_id: int, vector: np.ndarray | None) -> None:
        if vector is not None:
            name, dim = self.settings.embedder, self.embedder.dim
            self.store.save_turn_embeddings({turn_id: to_bytes(vector)}, name, dim)

    def exclude_turn(self, turn_id: int, excluded: bool = True) -> None:
        """Keep a turn but never use it for demos or training (``excluded=False`` brings it back)."""
        from minetune.store.browse import set_excluded

        set_excluded(self.store, turn_id, excluded)
        with _LOCK:
            if excluded:
                for state in _INDEXES.values():
                    state.index.forget_turn(turn_id)
            else:  # rebuilt from the store (stored embeddings) on next use, with the turn back
                program = self._key()[:4]
                for key in [k for k in _INDEXES if k[:4] == program]:
                    del _INDEXES[key]

    # -- after feedback -------------------------------------------------------------------

    def on_feedback(self, feedback_id: int, model: ChatModel | None = None) -> LearningReport:
        """Re-optimize after one feedback event: sync demos; distil a critique into a lesson."""
        start = time.perf_counter()
        report = LearningReport()
        state, report.turns_updated = self._synced(report)
        report.demo_candidates = len(state.index)
        feedback = self.store.feedback(feedback_id)
        if feedback.critique and model is not None:
            self._learn_lesson(feedback_id, feedback.critique, feedback.stars, model, report)
        report.elapsed_ms = (time.perf_counter() - start) * 1000
        return report

    def _learn_lesson(
        self, feedback_id: int, critique: str, stars: int | None, model: ChatModel, report: LearningReport
    ) -> None:
        from minetune.learn.lessons import learn_from_critique

        attempt = self.store.attempt(self.store.feedback(feedback_id).attempt_id)
        turn = self.store.turn(attempt.turn_id)
        try:
            version, reflection = learn_from_critique(
                self.store,
                self.program,
                model,
                feedback_id,
                turn.user_message,
                attempt.response,
                stars,
                critique,
            )
        except MinetuneError as exc:
            report.warnings.append(f"No lesson learned: {exc}")
            return
        report.rule = reflection.rule
        report.superseded = reflection.supersedes
        report.version = version.number if version is not None else None

    # -- the personal judge -----------------------------------------------------------------

    def judge(self) -> PersonalJudge:
        """The program's judge, brought up to date with ratings newer than it has seen, and saved.

        Each rated attempt counts once with its current effective rating; a re-rated attempt's
        old rating is removed first.
        """
        from minetune.learn.judge import PersonalJudge

        name = self.settings.embedder
        state = self.store.judge_state(self.program)
        if state is not None and state.embedder == name:
            judge = PersonalJudge.from_bytes(state.state)
            meta = dict(state.metrics)
        else:
            judge = PersonalJudge(self.embedder.dim, embedder=name)
            meta = {}
        added: dict[str, int] = dict(meta.get("added", {}))
        newest, turn_ids = self.store.feedback_since(self.program, int(meta.get("last_feedback_id", 0)))
        if not turn_ids:
            return judge
        ratings = effective_ratings(
            (a, k, st) for a, _, _, _, _, k, st in self.store.feedback_rows(self.program, turn_ids)
        )
        changed = {a: stars for a, stars in ratings.items() if added.get(str(a)) != stars}
        texts = self.store.attempt_texts(list(changed))
        if texts:
            ids = list(texts)
            msg = self._vectors([texts[a][0] for a in ids], {texts[a][0]: texts[a][1] for a in ids})
            responses = self.embedder.encode([texts[a][2] for a in ids])
            for a, response in zip(ids, responses, strict=True):
                old = added.get(str(a))
                if old is not None:
                    judge.remove(msg[texts[a][0]], response, old)
                judge.add(msg[texts[a][0]], response, changed[a])
                added[str(a)] = changed[a]
        if judge.ready:
            judge.fit()
        meta |= {"added": added, "last_feedback_id": newest, "report": judge.evaluate().as_dict()}
        self.store.save_judge(self.program, name, judge.n_ratings, judge.to_bytes(), meta)
        return judge

    def judge_report(self) -> Any:
        """The judge's held-out agreement with the user's ratings (always shown next to it)."""
        return self.judge().evaluate()

    def rank(self, message: str, candidates: list[str]) -> tuple[list[int], str]:
        """Candidate indices best first by the judge, and a note; input order when it is not ready."""
        judge = self.judge()
        if not judge.ready:
            return list(range(len(candidates))), f"judge not used: {judge.reason}"
        order = judge.rank(self.embed(message), self.embedder.encode(candidates))
        return order, judge.evaluate().summary()

    def rebuild(self) -> LearningReport:
        """Forget the in-memory index and rebuild it from the store (``minetune optimize``)."""
        start = time.perf_counter()
        frozen = 0 if self.settings.reoptimize else self.store.active_version(self.program).id
        with _LOCK:
            _INDEXES.pop(self._key(frozen), None)
        state, updated = self._synced()
        return LearningReport(
            demo_candidates=len(state.index),
            turns_updated=updated,
            elapsed_ms=(time.perf_counter() - start) * 1000,
        )
