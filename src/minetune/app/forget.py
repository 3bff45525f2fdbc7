"""Forget is erasure: delete interactions and remove their text from every place it was copied to.

:func:`forget` (the core operation behind ``minetune forget``, the web app's delete and the
library) takes turns, conversations, imports (every conversation a ``minetune import`` brought,
and its record), everything before a date, or everything (which includes the import records), and
in ONE transaction:

* deletes the turns with their attempts, feedback (ratings, critiques, praise texts), embeddings,
  comparisons and evaluation items (``minetune eval``; the runs that held them are recounted from
  the items left, see :func:`minetune.app.evaluate.recount_after_forget`); conversations named, or
  left empty, go too;
* redacts later prompts (``attempts.messages`` of every other attempt of the program, and the
  stored prompts and answers of A/B comparisons and evaluation items). **Choice:** a forgotten user
  message that appears as conversation history is *dropped together with the assistant reply after
  it*, so what remains is the conversation as if that exchange never happened (and datasets built
  from these prompts train on a coherent history); a forgotten exchange shown as a demo (``User:
  …\\nAssistant: …``) or a forgotten lesson line is removed from system prompts; any other
  occurrence of a forgotten text (at least :data:`MIN_REDACT_CHARS` characters; also its
  whitespace-normalised and clipped forms, as persona prompts quote them) is replaced by
  :data:`MARKER`. Everything else in the record (model, latency, tokens, the rest of the messages)
  is kept;
* re-titles conversations whose title came from a forgotten first message;
* retires lessons learned from forgotten feedback and overwrites their text with :data:`MARKER`,
  publishing a version without them (as before);
* rewrites program versions in place — the one sanctioned exception to their immutability, see
  :func:`minetune.store.forget.redact_version`: forgotten lessons are dropped from ``lessons``,
  pinned DSPy demos of forgotten attempts from ``demo_policy``, persona sections built from
  samples that were forgotten are rebuilt from the remaining samples (with the counting template,
  not a model: a model-written voice description may paraphrase the forgotten sample), and any
  remaining occurrence is replaced as above;
* resets the personal judge when it learned from a forgotten rating, removes demo links to the
  forgotten attempts, and marks every adapter whose lineage includes one as tainted.
* deletes the audio file of a forgotten transcript once no remaining turn references it (after
  the commit; see :mod:`minetune.store.audio`).

After the commit it drops the turns from this process's demo indexes, deletes training job folders
(checkpoints) of jobs that trained on the data, optionally retrains tainted adapters and deletes
the tainted weights once replaced (``retrain=True``), deletes files uploaded to a hosted
fine-tuning provider (``DELETE /files/{id}``), and scrubs the database (:func:`minetune.store.forget.scrub`).

With ``dry_run=True`` nothing is written anywhere; the report lists every artifact it would touch.
Limits it cannot remove are in :attr:`ForgetReport.limits` (e.g. a hosted fine-tuned model cannot
be untrained); interfaces print them.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from minetune.app.evaluate import recount_after_forget
from minetune.config import Settings, load_settings
from minetune.errors import MinetuneError
from minetune.learn.persona import PERSONA_HEADING, Pair, categorize, compose_persona_prompt
from minetune.store import Store
from minetune.store import evals as evals_db
from minetune.store import forget as forget_db
from minetune.store.audio import delete_unreferenced
from minetune.store.repo import new_version
from minetune.store.schema import Program

if TYPE_CHECKING:
    import httpx

MARKER = "[forgotten]"
# Forgotten texts shorter than this are not searched for inside unrelated text ("ok", "hi" would
# match everywhere); they are still removed wherever they appear as history, a demo or a lesson.
MIN_REDACT_CHARS = 8
# Lengths persona prompts clip quoted samples to (see minetune.learn.persona).
_CLIPS = (60, 80, 100, 160, 300, 400)


def _norm(text: str) -> str:
    return " ".join(text.split())


class Redactor:
    """Removes forgotten texts from strings and JSON values (see the module docstring)."""

    def __init__(
        self,
        texts: Iterable[str],
        *,
        demos: Iterable[tuple[str, str]] = (),
        lessons: Iterable[str] = (),
        replacements: dict[str, str] | None = None,
    ) -> None:
        self.replacements = {k: v for k, v in (replacements or {}).items() if k and k != v}
        self.blocks = sorted({f"User: {u}\nAssistant: {r}" for u, r in demos}, key=len, reverse=True)
        self.lessons = sorted({t for t in lessons if t.strip() and t != MARKER}, key=len, reverse=True)
        parts: set[str] = set()
        for text in texts:
            norm = _norm(text)
            for variant in (text, text.strip(), norm, (text.strip().splitlines() or [""])[0]):
                parts.add(variant)
            for limit in _CLIPS:  # persona._clip: the first limit-1 characters, then "…"
                if len(norm) > limit:
                    parts.add(norm[: limit - 1].rstrip())
        self.parts = sorted((p for p in parts if len(p) >= MIN_REDACT_CHARS), key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self.replacements or self.blocks or self.lessons or self.parts)

    def text(self, value: str) -> str:
        for old, new in self.replacements.items():
            value = value.replace(old, new)
        for block in self.blocks:
            if block in value:
                value = value.replace("\n\n" + block, "").replace(block + "\n\n", "").replace(block, "")
        for lesson in self.lessons:
            if lesson in value:
                value = value.replace("\n- " + lesson, "").replace("- " + lesson + "\n", "")
        for part in self.parts:
            if part in value:
                value = value.replace(part, MARKER)
        return value

    def json(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.json(v) for v in value]
        if isinstance(value, dict):
            return {k: self.json(v) for k, v in value.items()}
        return value

    def messages(self, messages: list[Any], history: set[str], own_message: str) -> list[Any]:
        """A stored prompt with forgotten history exchanges dropped (a user message in ``history``
        other than the attempt's own, and the assistant reply after it) and the rest redacted."""
        out: list[Any] = []
        skip_reply = False
        for m in messages:
            if not isinstance(m, dict):
                out.append(self.json(m))
                continue
            role, content = m.get("role"), m.get("content")
            if skip_reply and role == "assistant":
                skip_reply = False
                continue
            skip_reply = False
            if role == "user" and isinstance(content, str) and content in history and content != own_message:
                skip_reply = True
                continue
            out.append(self.json(m))
        return out


@dataclass
class ForgetReport:
    """What one forget removed, redacted and marked (or, with ``dry_run``, would)."""

    dry_run: bool = False
    conversations: int = 0  # conversations deleted
    turns: int = 0
    attempts: int = 0
    feedback: int = 0
    imports: int = 0
    turn_ids: list[int] = field(default_factory=list)
    conversation_ids: list[int] = field(default_factory=list)  # deleted
    attempts_redacted: list[int] = field(default_factory=list)
    comparisons_redacted: list[int] = field(default_factory=list)
    eval_items: int = 0  # evaluation items of the forgotten turns (deleted with them)
    eval_items_redacted: list[int] = field(default_factory=list)
    eval_runs_deleted: list[int] = field(default_factory=list)  # runs left with no item
    titles_changed: list[int] = field(default_factory=list)
    versions_redacted: dict[str, list[int]] = field(default_factory=dict)  # program -> version numbers
    persona_rebuilt: dict[str, list[int]] = field(default_factory=dict)  # program -> version numbers
    pinned_demos_removed: int = 0
    demo_links_removed: int = 0
    retired_lessons: list[int] = field(default_factory=list)
    redacted_lessons: list[int] = field(default_factory=list)
    new_versions: dict[str, int] = field(default_factory=dict)  # program -> version without the lessons
    judges_reset: list[str] = field(default_factory=list)
    tainted_adapters: list[int] = field(default_factory=list)
    active_tainted: dict[str, int] = field(default_factory=dict)  # program -> tainted adapter it serves
    retrained: dict[int, int] = field(default_factory=dict)  # tainted adapter -> its replacement
    adapters_deleted: list[int] = field(default_factory=list)  # tainted adapters whose files were deleted
    not_replaced: dict[int, str] = field(default_factory=dict)  # tainted adapter -> why it stays
    job_folders: list[str] = field(default_factory=list)
    hosted_files: list[str] = field(default_factory=list)
    hosted_files_deleted: list[str] = field(default_factory=list)
    hosted_files_failed: dict[str, str] = field(default_factory=dict)
    hosted_models: list[str] = field(default_factory=list)
    audio_files: list[str] = field(default_factory=list)  # clips no remaining turn references, deleted
    scrub: str = ""
    limits: list[str] = field(default_factory=list)


def forget(
    store: Store,
    settings: Settings | None = None,
    *,
    turns: Sequence[int] = (),
    conversations: Sequence[int] = (),
    imports: Sequence[int] = (),
    before: datetime | None = None,
    everything: bool = False,
    program: str | None = None,
    dry_run: bool = False,
    retrain: bool = False,
    retrain_config: Any | None = None,
    retrain_minimum: int | None = None,
    hosted_transport: httpx.BaseTransport | None = None,
    cancel: threading.Event | None = None,
) -> ForgetReport:
    """Forget the given turns and conversations and what the given imports brought, plus (within
    ``program``, else all of this user's programs) every turn before ``before`` or, with
    ``everything``, every conversation and import record; see the module docstring for every place
    the text is removed from."""
    if not (turns or conversations or imports or before or everything):
        raise MinetuneError(
            "Say what to forget: a turn id, --conversation ID, --import ID, --before DATE or --all."
        )
    settings = settings or load_settings()
    report = ForgetReport(dry_run=dry_run)
    job_dirs: list[Path] = []
    hosted: list[tuple[int, str | None, list[str]]] = []  # (job id, provider, file ids)
    with store.db.transaction() as s:
        forget_db.lock_programs(s, store.program_ids(s, None))
        scope = forget_db.resolve_scope(
            s,
            store.user_id,
            store.program_ids(s, program),
            turn_ids=list(turns),
            conversation_ids=list(conversations),
            import_ids=list(imports),
            before=before,
            everything=everything,
        )
        gone = forget_db.forgotten_turns(s, scope.turns)
        lessons = forget_db.lessons_from_feedback(s, scope.feedback)
        report.turn_ids = sorted(scope.turns)
        report.turns, report.attempts, report.feedback = (
            len(scope.turns),
            len(scope.attempts),
            len(scope.feedback),
        )
        report.imports = len(scope.imports)

        # Adapters and training jobs that learned from the data.
        now = datetime.now(UTC)
        for adapter in forget_db.user_adapters(s, store.user_id):
            hit = scope.attempts & {int(a) for a in adapter.lineage_attempt_ids or []}
            if not hit:
                continue
            report.tainted_adapters.append(adapter.id)
            if not dry_run:
                reason = f"trained on {len(hit)} forgotten attempt(s)"
                if adapter.tainted_at is None:
                    adapter.tainted_at, adapter.taint_reason = now, reason
                else:
                    adapter.taint_reason = f"{adapter.taint_reason}; {reason}"
        names = dict(s.execute(forget_db.program_names(store.user_id)).all())
        for job in forget_db.user_jobs(s, store.user_id):
            if not scope.attempts & {int(a) for a in job.example_attempt_ids or []}:
                continue
            if job.kind == "hosted":
                files = [str(f) for f in (job.metrics or {}).get("files", {}).values() if f]
                deleted = set((job.metrics or {}).get("files_deleted", []))
                files = [f for f in files if f not in deleted]
                report.hosted_files += files
                hosted.append((job.id, job.provider, files))
                if job.result_model:
                    report.hosted_models.append(job.result_model)
            else:
                from minetune.train.base import job_dir

                folder = job_dir(settings, names.get(job.program_id, ""), store.user_name, job.id)
                if folder.exists():
                    job_dirs.append(folder)
                    report.job_folders.append(str(folder))

        # What the text is: messages, answers, critiques, lessons; persona sections to rebuild.
        texts = [t.user_message for t in gone] + [r for t in gone for r in t.responses]
        texts += [n for t in gone for n in t.notes] + [lesson.text for lesson in lessons]
        demos = [(t.user_message, r) for t in gone for r in t.responses]
        all_versions = forget_db.versions(s, scope.programs)
        replacements, rebuilt = _persona_replacements(s, all_versions, scope)
        redactor = Redactor(
            texts, demos=demos, lessons=[lesson.text for lesson in lessons], replacements=replacements
        )
        history_by_conv: dict[int, set[str]] = {}
        for t in gone:
            history_by_conv.setdefault(t.conversation_id, set()).add(t.user_message)

        # Later prompts: every other attempt of these programs.
        own = {t.turn_id for t in gone}
        for attempt, conversation_id, message in forget_db.other_attempts(s, scope.programs, own):
            changed = False
            demo_ids = list(attempt.demo_attempt_ids or [])
            kept_ids = [d for d in demo_ids if d not in scope.attempts]
            if len(kept_ids) != len(demo_ids):
                report.demo_links_removed += len(demo_ids) - len(kept_ids)
                changed = True
            messages = redactor.messages(
                list(attempt.messages or []), history_by_conv.get(conversation_id, set()), message
            )
            critique = (
                redactor.text(attempt.critique_used) if attempt.critique_used else attempt.critique_used
            )
            changed |= messages != attempt.messages or critique != attempt.critique_used
            if changed:
                report.attempts_redacted.append(attempt.id)
                if not dry_run:
                    attempt.demo_attempt_ids, attempt.messages, attempt.critique_used = (
                        kept_ids,
                        messages,
                        critique,
                    )
        for comp in forget_db.comparisons(s, scope.programs, own):
            fields = {
                "prompt": redactor.text(comp.prompt),
                "messages_a": redactor.json(comp.messages_a),
                "messages_b": redactor.json(comp.messages_b),
                "answer_a": redactor.text(comp.answer_a),
                "answer_b": redactor.text(comp.answer_b),
            }
            if any(getattr(comp, k) != v for k, v in fields.items()):
                report.comparisons_redacted.append(comp.id)
                if not dry_run:
                    for k, v in fields.items():
                        setattr(comp, k, v)

        for item in evals_db.items_of_programs(s, scope.programs, own):
            fields = {
                k: redactor.text(v) if v is not None else v
                for k in ("prompt", "reference", "answer_a", "answer_b")
                for v in [getattr(item, k)]
            }
            if any(getattr(item, k) != v for k, v in fields.items()):
                report.eval_items_redacted.append(item.id)
                if not dry_run:
                    for k, v in fields.items():
                        setattr(item, k, v)
        report.eval_items = evals_db.count_items(s, own)
        eval_runs = evals_db.runs_with_turns(s, own)

        # Titles derived from a forgotten first message.
        first_gone = {(t.conversation_id, t.index) for t in gone}
        for conv in forget_db.conversations(s, scope.touched_conversations - scope.conversations):
            left = forget_db.remaining_turns(s, conv.id, own)
            if not left:
                continue
            was_first = any(c == conv.id and i < left[0].index for c, i in first_gone)
            if was_first or redactor.text(conv.title) != conv.title:
                report.titles_changed.append(conv.id)
                if not dry_run:
                    first = left[0].user_message.strip()
                    conv.title = first.splitlines()[0][:80] if first else ""

        # Lessons learned from forgotten feedback: retired, their text gone, a version without them.
        retired_by_program: dict[int, list[int]] = {}
        for lesson in lessons:
            report.redacted_lessons.append(lesson.id)
            if lesson.status == "active":
                report.retired_lessons.append(lesson.id)
                retired_by_program.setdefault(lesson.program_id, []).append(lesson.id)
            if not dry_run:
                lesson.status = "retired" if lesson.status == "active" else lesson.status
                lesson.text = MARKER
        forgotten_lessons = {lesson.id for lesson in lessons}
        if not dry_run:
            s.flush()
            for program_id, retired in retired_by_program.items():
                prog = s.get(Program, program_id)
                assert prog is not None
                active = forget_db.active_lessons(s, program_id)
                version = new_version(
                    s,
                    prog,
                    f"forgot {len(retired)} lesson(s) learned from forgotten feedback",
                    True,
                    lessons=[{"id": lesson.id, "text": lesson.text} for lesson in active],
                    sources={"lessons": [lesson.id for lesson in active], "forgotten_lessons": retired},
                )
                report.new_versions[prog.name] = version.number
                all_versions.append(version)
        else:
            for program_id in retired_by_program:
                report.new_versions[scope.names.get(program_id, str(program_id))] = -1

        # Program versions, in place (the sanctioned exception to their immutability).
        for version in all_versions:
            values = _redacted_version(version, redactor, forgotten_lessons, scope.attempts, report)
            if not values:
                continue
            name = scope.names.get(version.program_id, str(version.program_id))
            report.versions_redacted.setdefault(name, []).append(version.number)
            if version.id in rebuilt and "instructions" in values:
                report.persona_rebuilt.setdefault(name, []).append(version.number)
            if not dry_run:
                forget_db.redact_version(s, version.id, values)

        # The personal judge, when it learned from a forgotten rating.
        for judge in forget_db.judges(s, scope.programs):
            seen = {int(a) for a in (judge.metrics or {}).get("added", {})}
            if seen & scope.attempts or everything:
                report.judges_reset.append(scope.names.get(judge.program_id, str(judge.program_id)))
                if not dry_run:
                    forget_db.delete_judge(s, judge)

        if dry_run:
            report.conversation_ids = forget_db.conversations_left_empty(s, scope)
            report.conversations = len(report.conversation_ids)
            report.active_tainted = {
                scope.names.get(p, str(p)): a
                for p, a in forget_db.serving_adapters(s, scope.programs).items()
                if a in report.tainted_adapters
            }
        else:
            report.conversation_ids = forget_db.conversations_left_empty(s, scope)
            report.conversations = forget_db.delete_scope(s, scope)
            report.eval_runs_deleted = recount_after_forget(s, eval_runs)
            report.active_tainted = {
                scope.names.get(p, str(p)): a for p, a in forget_db.serving_tainted(s, scope.programs).items()
            }
    report.tainted_adapters.sort()
    report.audio_files = delete_unreferenced(
        store, settings.home, [t.user_message for t in gone], dry_run=dry_run
    )
    _limits(report, retrain)
    if dry_run:
        return report

    _drop_from_indexes(report.turn_ids)
    for folder in job_dirs:
        shutil.rmtree(folder, ignore_errors=True)
    if hosted:
        _delete_hosted_files(store, settings, hosted, report, hosted_transport)
    if retrain and report.tainted_adapters:
        _retrain(store, settings, report, retrain_config, retrain_minimum, cancel)
    report.scrub = forget_db.scrub(store.db)
    return report


def _persona_replacements(
    s: Any, versions: list[Any], scope: forget_db.Scope
) -> tuple[dict[str, str], set[int]]:
    """old persona section -> section rebuilt from the samples that remain, for every bootstrap
    version whose sample conversations lost a turn; and the ids of the versions carrying one."""
    touched = scope.touched_conversations
    replacements: dict[str, str] = {}
    for version in versions:
        sources = version.sources or {}
        convs = {int(c) for c in sources.get("conversation_ids", []) or []}
        if not convs & touched or PERSONA_HEADING not in (version.instructions or ""):
            continue
        head, _, tail = version.instructions.partition(PERSONA_HEADING)
        old = PERSONA_HEADING + tail
        pairs: list[Pair] = []
        for conv_id in sorted(convs):
            left = forget_db.remaining_turns(s, conv_id, scope.turns)
            replies = forget_db.best_responses(s, [t.id for t in left])
            pairs += [
                Pair(t.user_message, replies[t.id], categorize(t.user_message))
                for t in left
                if t.id in replies
            ]
        if pairs:
            name = sources.get("assistant_name")
            text = compose_persona_prompt(head.strip(), pairs, None, persona_name=name).text
            new = PERSONA_HEADING + text.partition(PERSONA_HEADING)[2]
        else:
            new = ""
        replacements[old.rstrip()] = new
    carrying = {v.id for v in versions if any(old in (v.instructions or "") for old in replacements)}
    return replacements, carrying


def _redacted_version(
    version: Any, redactor: Redactor, lessons: set[int], attempts: set[int], report: ForgetReport
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    kept = [x for x in (version.lessons or []) if not (isinstance(x, dict) and x.get("id") in lessons)]
    kept = redactor.json(kept)
    if kept != (version.lessons or []):
        values["lessons"] = kept
    policy = dict(version.demo_policy or {})
    pinned = policy.get("pinned")
    if isinstance(pinned, list):
        keep = [p for p in pinned if not (isinstance(p, dict) and p.get("attempt_id") in attempts)]
        report.pinned_demos_removed += len(pinned) - len(keep)
        policy["pinned"] = keep
    policy = redactor.json(policy)
    if policy != (version.demo_policy or {}):
        values["demo_policy"] = policy
    for key in ("instructions", "note"):
        new = redactor.text(getattr(version, key) or "")
        if new != (getattr(version, key) or ""):
            values[key] = new
    sources = redactor.json(version.sources or {})
    if sources != (version.sources or {}):
        values["sources"] = sources
    return values


def _limits(report: ForgetReport, retrain: bool) -> None:
    for model in report.hosted_models:
        report.limits.append(
            f"The hosted fine-tuned model {model} was trained on forgotten data; a hosted model cannot be "
            "untrained. Stop using it, delete it at the provider, and fine-tune again."
        )
    if report.tainted_adapters and not retrain:
        report.limits.append(
            f"Adapter(s) {', '.join(map(str, report.tainted_adapters))} learned from forgotten data and "
            "keep it in their weights until retrained: `minetune train --retrain-tainted` (or forget with "
            "--retrain) trains them again without it and deletes the tainted weights."
        )
    report.limits.append(
        "Copies outside minetune's home (exports and bundles made earlier, backups, a provider's logs) and "
        "paraphrases of the text in rules or instructions a model rewrote are not found."
    )


def _drop_from_indexes(turn_ids: Sequence[int]) -> None:
    from minetune.learn.reoptimize import drop_turns

    drop_turns(turn_ids)


def _delete_hosted_files(
    store: Store,
    settings: Settings,
    hosted: list[tuple[int, str | None, list[str]]],
    report: ForgetReport,
    transport: httpx.BaseTransport | None,
) -> None:
    from minetune.store import training as jobs_db
    from minetune.train.hosted import FineTuneClient, load_config

    for job_id, provider, files in hosted:
        if not files:
            continue
        try:
            config = load_config(settings, **({"base_url": provider} if provider else {}))
        except MinetuneError as exc:
            for f in files:
                report.hosted_files_failed[f] = str(exc)
            continue
        deleted: list[str] = []
        with FineTuneClient(config, transport) as client:
            for file_id in files:
                try:
                    client.delete_file(file_id)
                    deleted.append(file_id)
                except MinetuneError as exc:
                    report.hosted_files_failed[file_id] = str(exc)
        report.hosted_files_deleted += deleted
        if deleted:
            job = jobs_db.get_job(store, job_id)
            done = sorted(set((job.metrics or {}).get("files_deleted", [])) | set(deleted))
            jobs_db.update_job(store, job_id, metrics=dict(job.metrics or {}) | {"files_deleted": done})
    if report.hosted_files_failed:
        report.limits.append(
            "Hosted file(s) could not be deleted: "
            + "; ".join(f"{f}: {why}" for f, why in report.hosted_files_failed.items())
        )


def _retrain(
    store: Store,
    settings: Settings,
    report: ForgetReport,
    config: Any | None,
    minimum: int | None,
    cancel: threading.Event | None,
) -> None:
    from minetune.train.adapters import retrain_tainted

    kwargs: dict[str, Any] = {"config": config, "purge": True, "cancel": cancel}
    if minimum is not None:
        kwargs["minimum"] = minimum
    tainted = set(report.tainted_adapters)
    for result in retrain_tainted(store, settings, **kwargs):
        if result.old.id not in tainted:
            continue
        outcome = result.outcome
        if outcome is not None and outcome.status == "succeeded" and outcome.adapter is not None:
            report.retrained[result.old.id] = outcome.adapter.id
            report.adapters_deleted.append(result.old.id)
        elif result.skipped and result.skipped.startswith("superseded"):
            report.adapters_deleted.append(result.old.id)
        else:
            why = result.skipped or (outcome.status if outcome is not None else "not retrained")
            report.not_replaced[result.old.id] = why
    for adapter_id, why in report.not_replaced.items():
        report.limits.append(
            f"Adapter {adapter_id} could not be replaced ({why}); it stays tainted and its weights still "
            f"encode forgotten data. Retire it (`minetune adapter retire {adapter_id} --force`) and "
            "delete its folder to erase them."
        )
