"""``minetune eval`` as a core operation: pick held-out rated prompts, replay them through two
arms (two versions, or the active version with and without its adapter), score the answers with
the personal judge and against the user's accepted answers, and store the run.

Held out means the arms did not learn from the prompt. A rated turn is left out when either arm's
version pins one of its answers as a demo or trained a DSPy program on it, holds a lesson learned
from its feedback, or is served by an adapter whose lineage includes one of its attempts (a routed
spec: any of the program's adapters). Demos chosen at replay time never include the item's own
turn. The judge itself is trained on all of the user's ratings, the held-out ones included: it
knows what the user thought of the answers they saw, not the new ones it scores.

"Accepted" is the exchange's policy (:func:`minetune.app.exchange.is_accepted`: ``[continual]
stars`` or more, or praised): an item's reference is its best accepted answer.

The run is a job (kind ``eval``, its own lane, so it never waits for training) with progress per
item; the result is one ``eval_runs`` row and one ``eval_items`` row per prompt. Forgetting a
turn deletes its items and recounts the runs that held them (:func:`recount_after_forget`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from minetune.app import jobs
from minetune.config import Settings
from minetune.errors import MinetuneError
from minetune.learn import evaluate as ev
from minetune.learn.abtest import Arm, adapter_arms, version_arms
from minetune.learn.demos import accepted_candidates
from minetune.models.base import ChatModel
from minetune.store import Store, effective_ratings
from minetune.store import evals as evals_db
from minetune.store.schema import EvalItem as EvalItemRow
from minetune.store.schema import EvalRun

DEFAULT_LIMIT = 50

ModelFor = Callable[[str | None], ChatModel]


class EvalError(MinetuneError):
    """An evaluation cannot run as asked (nothing held out, bad arms)."""


@dataclass(frozen=True)
class HeldOut:
    """The items to replay, and how many rated turns were left out per reason."""

    items: list[ev.EvalItem]
    rated: int
    excluded: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RunView:
    """A stored run as interfaces show it: B's record against A on the headline basis."""

    id: int
    created_at: datetime
    arm_a: str
    arm_b: str
    model_a: str
    model_b: str
    basis: str
    wins: int
    losses: int
    ties: int
    summary: dict[str, Any]

    @property
    def tally(self) -> ev.Tally:
        return ev.Tally(self.basis, self.wins, self.losses, self.ties)

    @property
    def n(self) -> int:
        return self.tally.n

    @property
    def win_rate(self) -> float | None:
        return self.tally.win_rate

    @property
    def interval(self) -> tuple[float, float]:
        return self.tally.interval

    @property
    def items(self) -> int:
        return int(self.summary.get("items", self.n))

    @property
    def verdict(self) -> str:
        """One line: whether B helped, judged by the interval (not by the point estimate alone)."""
        if not self.n:
            return "nothing scored"
        low, high = self.interval
        if low > 0.5:
            return f"{self.arm_b} is better"
        if high < 0.5:
            return f"{self.arm_a} is better"
        return "no clear difference"

    def as_dict(self) -> dict[str, Any]:
        low, high = self.interval
        return {
            "id": self.id,
            "created_at": self.created_at.isoformat(timespec="seconds"),
            "a": {"label": self.arm_a, "model": self.model_a},
            "b": {"label": self.arm_b, "model": self.model_b},
            "basis": self.basis,
            "wins": self.wins,
            "losses": self.losses,
            "ties": self.ties,
            "n": self.n,
            "win_rate": self.win_rate,
            "low": low,
            "high": high,
            "verdict": self.verdict,
            "summary": self.summary,
        }


def _view(run: EvalRun) -> RunView:
    return RunView(
        run.id,
        run.created_at,
        run.arm_a,
        run.arm_b,
        run.model_a,
        run.model_b,
        run.basis,
        run.wins,
        run.losses,
        run.ties,
        dict(run.summary or {}),
    )


@dataclass(frozen=True)
class EvalOutcome:
    """A finished evaluation: the stored run, the full report, what was held out, the job."""

    run: RunView
    report: ev.EvalReport
    held_out: HeldOut
    job_id: int


# -- arms -----------------------------------------------------------------------------------------


def parse_version(text: str) -> int:
    """``v3`` or ``3`` -> 3; EvalError otherwise."""
    raw = text.strip().lower().removeprefix("v")
    if not raw.isdigit():
        raise EvalError(f"{text!r} is not a version; write it as v3 or 3.")
    return int(raw)


def arms(store: Store, program: str, a: str | None, b: str | None, adapter: bool = False) -> tuple[Arm, Arm]:
    """Versions ``a`` and ``b`` of ``program`` (each with its own model spec), or with ``adapter``
    the active version without (A) and with (B) its LoRA adapter."""
    if adapter:
        if a or b:
            raise EvalError("Give either --a and --b (two versions) or --adapter, not both.")
        return adapter_arms(store, program)
    if not a or not b:
        raise EvalError("Name the two versions to compare (--a v3 --b v5), or use --adapter.")
    return version_arms(store, program, parse_version(a), parse_version(b))


# -- held-out items --------------------------------------------------------------------------------


def _learned_from(
    store: Store, settings: Settings, program: str, pair: tuple[Arm, Arm]
) -> dict[str, set[int]]:
    """Turns each arm learned from, by kind of lineage (see the module docstring)."""
    from minetune.models.spec import is_routed, parse_spec

    demo_attempts: set[int] = set()
    lesson_ids: set[int] = set()
    adapter_attempts: set[int] = set()
    for arm in pair:
        version = arm.version
        for demo in (version.demo_policy or {}).get("pinned", []):
            if isinstance(demo, dict) and isinstance(demo.get("attempt_id"), int):
                demo_attempts.add(demo["attempt_id"])
        demo_attempts |= {int(a) for a in (version.sources or {}).get("trainset_attempt_ids", [])}
        lesson_ids |= {int(x["id"]) for x in version.lessons or [] if isinstance(x, dict) and "id" in x}
        spec = arm.model_spec or settings.model  # what the arm is answered by
        if spec and is_routed(spec):
            adapter_attempts |= evals_db.adapter_lineage(store, program)
        elif spec:
            path = parse_spec(spec).adapter
            if path:
                adapter_attempts |= evals_db.adapter_lineage(store, program, path)
    return {
        "pinned or trained demo": evals_db.attempt_turns(store, demo_attempts),
        "lesson learned from it": evals_db.lesson_turns(store, program, lesson_ids),
        "adapter trained on it": evals_db.attempt_turns(store, adapter_attempts),
    }


def held_out(
    store: Store, settings: Settings, program: str, pair: tuple[Arm, Arm], limit: int = DEFAULT_LIMIT
) -> HeldOut:
    """The newest ``limit`` rated turns of ``program`` neither arm learned from, as items with
    their history, the user's best stars and their best accepted answer (if any)."""
    rows = store.feedback_rows(program)
    stars = effective_ratings((a, kind, st) for a, _, _, _, _, kind, st in rows)
    turns: dict[int, tuple[int, str]] = {}  # turn -> (conversation, message)
    best: dict[int, int] = {}
    for attempt_id, turn_id, conversation_id, message, _resp, _kind, _st in rows:
        turns[turn_id] = (conversation_id, message)
        if attempt_id in stars:
            best[turn_id] = max(best.get(turn_id, 0), stars[attempt_id])
    rated = sorted(best, reverse=True)
    # The exchange's accepted policy: [continual] stars or more (is_accepted), or praised.
    references = {c.turn_id: c.response for c in accepted_candidates(rows, settings.continual.stars)}
    excluded: dict[str, int] = {}
    leaked: set[int] = set()
    for reason, turn_ids in _learned_from(store, settings, program, pair).items():
        hit = (turn_ids & set(rated)) - leaked
        if hit:
            excluded[reason] = len(hit)
            leaked |= hit
    items = []
    for turn_id in [t for t in rated if t not in leaked][:limit]:
        conversation_id, message = turns[turn_id]
        history = tuple(store.history(conversation_id, before_turn=turn_id))
        items.append(ev.EvalItem(turn_id, message, history, references.get(turn_id), best[turn_id]))
    return HeldOut(items, len(rated), excluded)


# -- running ---------------------------------------------------------------------------------------


def model_resolver(store: Store, settings: Settings, program: str) -> ModelFor:
    """spec -> ChatModel, each built once (None: ``settings.model`` / auto-detection; a routed
    spec routes between ``program``'s domain adapters)."""
    from minetune.models import resolve_model
    from minetune.models.spec import is_routed

    built: dict[str | None, ChatModel] = {}

    def model_for(spec: str | None) -> ChatModel:
        if spec not in built:
            if spec and is_routed(spec):
                from minetune.train.adapters import routed_model

                built[spec] = routed_model(store, settings, program, spec)
            else:
                built[spec] = resolve_model(settings, spec)
        return built[spec]

    return model_for


def _judge(store: Store, settings: Settings, program: str) -> tuple[ev.JudgeScores | None, str]:
    from minetune.learn.reoptimize import Learner

    learner = Learner(store, settings, program)
    judge = learner.judge()
    if not judge.ready:
        return None, f"judge not used: {judge.reason}"

    def scores(prompt: str, answers: list[str]) -> list[float]:
        predicted = judge.predict(learner.embed(prompt), learner.embedder.encode(answers))
        return [float(v) for v in predicted]

    return scores, judge.evaluate().summary()


def _demos_for(store: Store, settings: Settings, program: str) -> ev.DemosFor:
    from minetune.learn.reoptimize import Learner

    learner = Learner(store, settings, program)

    def demos(item: ev.EvalItem) -> list[Any]:
        return learner.demos_for(item.prompt, [item.turn_id])[0]

    return demos


def _item_fields(item: ev.ItemResult) -> dict[str, Any]:
    return {k: getattr(item, k) for k in evals_db.ITEM_FIELDS}


def run(
    store: Store,
    settings: Settings,
    program: str,
    pair: tuple[Arm, Arm],
    *,
    limit: int = DEFAULT_LIMIT,
    model_for: ModelFor | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    inline: bool = True,
) -> EvalOutcome:
    """Evaluate arm B against arm A on held-out prompts as an ``eval`` job and store the run.

    Runs in this thread by default (the CLI); EvalError when nothing is held out; model errors
    propagate (the job row records them, nothing else is stored)."""
    found = held_out(store, settings, program, pair, limit)
    if not found.items:
        left_out = ", ".join(f"{n} ({reason})" for reason, n in found.excluded.items())
        raise EvalError(
            f"Program {program!r} has no held-out rated answers to replay ({found.rated} rated"
            + (f"; left out: {left_out}" if left_out else "")
            + "). Rate some answers first."
        )
    model_for = model_for or model_resolver(store, settings, program)
    arm_a, arm_b = pair
    payload = {"a": arm_a.label, "b": arm_b.label, "limit": limit, "items": len(found.items)}

    def work(ctx: jobs.JobContext) -> EvalOutcome:
        ctx.progress(phase="judge", step=0, total=len(found.items), message="updating the personal judge")
        judge, note = _judge(store, settings, program)
        a = ev.Candidate(arm_a.label, arm_a.version, model_for(arm_a.model_spec))
        b = ev.Candidate(arm_b.label, arm_b.version, model_for(arm_b.model_spec))

        def on_item(done: int, total: int) -> None:
            ctx.progress(phase="answering", step=done, total=total, message=f"{done}/{total} prompts")
            if on_progress is not None:
                on_progress(done, total)

        result = ev.evaluate(
            found.items,
            a,
            b,
            demos_for=_demos_for(store, settings, program),
            judge=judge,
            judge_note=note,
            temperature=settings.temperature,
            max_tokens=settings.max_tokens,
            on_item=on_item,
            cancelled=ctx.cancelled,
        )
        if len(result.items) < len(found.items):
            ctx.ended_as("cancelled")
        headline = result.headline
        row = evals_db.create_run(
            store,
            program,
            [_item_fields(i) for i in result.items],
            job_id=ctx.job_id,
            arm_a=arm_a.label,
            arm_b=arm_b.label,
            version_a_id=arm_a.version.id,
            version_b_id=arm_b.version.id,
            model_a=a.model.spec,
            model_b=b.model.spec,
            basis=result.basis,
            wins=headline.wins,
            losses=headline.losses,
            ties=headline.ties,
            summary=result.summary() | {"rated": found.rated, "excluded": found.excluded},
        )
        view = _view(row)
        low, high = view.interval
        ctx.result.update({"run": row.id, "n": view.n, "win_rate": view.win_rate, "low": low, "high": high})
        return EvalOutcome(view, result, found, ctx.job_id)

    handle = jobs.submit(store, program, "eval", work, payload=payload, inline=inline)
    assert handle is not None
    if not inline:
        handle.wait()
    if handle.error is not None:
        raise handle.error
    outcome: EvalOutcome = handle.value
    return outcome


# -- reading ---------------------------------------------------------------------------------------


def latest_runs(store: Store, program: str, limit: int = 5) -> list[RunView]:
    """The newest stored runs of ``program``, newest first."""
    return [_view(r) for r in evals_db.list_runs(store, program, limit)]


def get_run(store: Store, run_id: int) -> tuple[RunView, list[EvalItemRow]]:
    run_row, items = evals_db.get_run(store, run_id)
    return _view(run_row), items


# -- forget ----------------------------------------------------------------------------------------


def recount_after_forget(s: Session, run_ids: Iterable[int]) -> list[int]:
    """Recount runs whose items were deleted (inside the forget transaction): their tallies and
    numbers come from the items left; a run left with none is deleted. Returns the deleted runs."""
    deleted = []
    for run_row, items in evals_db.run_rows(s, run_ids):
        if not items:
            s.delete(run_row)
            deleted.append(run_row.id)
            continue
        old = dict(run_row.summary or {})
        results = [ev.ItemResult(**{k: getattr(i, k) for k in evals_db.ITEM_FIELDS}) for i in items]
        report = ev.report(
            run_row.arm_a,
            run_row.arm_b,
            results,
            judge_ready=run_row.basis == "judge",
            judge_note=str(old.get("judge_note", "")),
            method=old.get("fuzzy_method"),
        )
        headline = report.headline
        run_row.wins, run_row.losses, run_row.ties = headline.wins, headline.losses, headline.ties
        forgotten = int(old.get("forgotten", 0)) + int(old.get("items", len(items))) - len(items)
        keep = {k: old[k] for k in ("rated", "excluded") if k in old}
        run_row.summary = report.summary() | keep | {"forgotten": forgotten}
    return deleted
