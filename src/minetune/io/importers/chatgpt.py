"""ChatGPT data exports (Settings → Data controls → Export data): a zip, its unpacked folder, or a
single ``conversations.json``.

Each conversation is a tree (``mapping``: node id → {message, parent, children}); editing a message
or regenerating an answer adds a branch. The thread the user last saw is rebuilt by walking from
``current_node`` up the ``parent`` links, so abandoned branches are not imported. Hidden nodes
(``metadata.is_visually_hidden_from_conversation`` or weight 0), system and tool messages, tool
calls and non-text content (images, code, browsing results...) are skipped and reported.

Thumbs from ``message_feedback.json`` become imported ratings (up → 5★, down → 1★, any text or
tags → critique). OpenAI does not document this file; entries are read as
``{"id", "conversation_id", "message_id"?, "rating": "thumbsUp"|"thumbsDown", "create_time",
"text"? | "content"?}``: the rated message is ``message_id`` when present, else ``id`` (older exports
key the entry by the message id), and the text is ``text`` or ``content`` (a JSON string or object
with "text" and "tags"). Shards ``conversations-000.json``, ``conversations-001.json``... are read in
order, each streamed one conversation at a time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from minetune.io.importers.base import (
    DEFAULT_LIMITS,
    ImportFormatError,
    ImportLimits,
    Skip,
    clip,
    content_id,
    need,
    timestamp,
)
from minetune.io.importers.jsonstream import iter_array
from minetune.io.importers.sources import Source
from minetune.store.imports import NewAttempt, NewConversation, NewFeedback, NewTurn

FORMAT = "chatgpt"
CONVERSATION_FILE = re.compile(r"(?:^|/)conversations(?:-(\d+))?\.json$")
FEEDBACK_FILE = re.compile(r"(?:^|/)message_feedback\.json$")

LABEL_TITLE = 80  # characters of a title or id shown in a skip report

_UP = {"thumbsup", "up", "positive", "good", "like", "liked", "+1", "1", "true"}
_DOWN = {"thumbsdown", "down", "negative", "bad", "dislike", "disliked", "-1", "0", "false"}


def conversation_members(members: list[str]) -> list[str]:
    """The conversation files of an export, shards in numeric order."""
    hits = []
    for member in members:
        match = CONVERSATION_FILE.search(member)
        if match is not None and not member.startswith("__MACOSX/"):
            folder = member.rsplit("/", 1)[0] if "/" in member else ""
            hits.append((folder, int(match.group(1) or -1), member))
    return [member for _, _, member in sorted(hits)]


def feedback_member(members: list[str]) -> str | None:
    hits = [m for m in members if FEEDBACK_FILE.search(m) and not m.startswith("__MACOSX/")]
    return sorted(hits, key=len)[0] if hits else None


@dataclass
class _Rating:
    conversation_id: str | None
    feedback: NewFeedback
    where: str


def parse(
    source: Source,
    members: list[str],
    feedback_file: str | None,
    skip: Skip,
    *,
    sidecar: Source | None = None,
    limits: ImportLimits = DEFAULT_LIMITS,
) -> Iterator[NewConversation]:
    """Conversations of the export, one at a time, with their thumbs attached."""
    ratings: dict[str, list[_Rating]] = {}
    if feedback_file is not None:
        ratings = _load_feedback(sidecar or source, feedback_file, skip, limits)
    for member in members:
        name = source.label(member)
        with source.open_text(member) as fh:
            for index, raw in enumerate(iter_array(fh, name, max_chars=limits.element_chars), start=1):
                conv = _conversation(raw, f"{name} conversation {index}", ratings, skip)
                if conv is not None:
                    yield conv
    for message_id, entries in ratings.items():
        for entry in entries:
            skip(f"{entry.where} (message {message_id})", "the rated message is not in the export")


def _load_feedback(source: Source, member: str, skip: Skip, limits: ImportLimits) -> dict[str, list[_Rating]]:
    name = source.label(member)
    ratings: dict[str, list[_Rating]] = {}
    with source.open_text(member) as fh:
        for index, entry in enumerate(iter_array(fh, name, max_chars=limits.element_chars), start=1):
            where = f"{name} entry {index}"
            need(entry, dict, where, "feedback entry")
            message_id = entry.get("message_id") or entry.get("messageId") or entry.get("id")
            if not isinstance(message_id, str) or not message_id:
                skip(where, "no message id")
                continue
            stars = _stars(entry.get("rating"))
            if stars is None:
                rating = clip(repr(entry.get("rating")), 40)
                skip(where, f"unknown rating {rating} (expected thumbsUp or thumbsDown)")
                continue
            conversation_id = entry.get("conversation_id")
            feedback = NewFeedback(
                kind="imported",
                stars=stars,
                critique=_feedback_text(entry),
                created_at=timestamp(entry.get("create_time") or entry.get("update_time")),
            )
            conv = conversation_id if isinstance(conversation_id, str) else None
            ratings.setdefault(message_id, []).append(_Rating(conv, feedback, where))
    return ratings


def _stars(rating: Any) -> int | None:
    key = re.sub(r"[\s_\-]", "", str(rating).lower())
    return 5 if key in _UP else 1 if key in _DOWN else None


def _feedback_text(entry: dict[str, Any]) -> str | None:
    text = entry.get("text")
    tags: list[str] = []
    content = entry.get("content")
    if isinstance(content, str) and content.strip():
        try:
            content = json.loads(content)
        except json.JSONDecodeError:
            text = text or content
    if isinstance(content, dict):
        text = text or content.get("text")
        raw_tags = content.get("tags")
        if isinstance(raw_tags, list):
            tags = [t for t in raw_tags if isinstance(t, str) and t]
    if not isinstance(text, str):
        text = None
    text = text.strip() if text else None
    if tags:
        label = "tags: " + ", ".join(tags)
        text = f"{text} ({label})" if text else label
    return text or None


@dataclass
class _Message:
    node_id: str
    role: str
    text: str
    created: Any
    model: str | None


def _conversation(
    raw: Any, where: str, ratings: dict[str, list[_Rating]], skip: Skip
) -> NewConversation | None:
    conv = need(raw, dict, where, "conversation")
    conv_id = conv.get("conversation_id") or conv.get("id")
    if conv_id is not None:
        need(conv_id, str, where, "id")
    title = conv.get("title")
    if title is not None:
        need(title, str, where, "title")
    mapping = need(conv.get("mapping"), dict, where, "mapping")
    # Labels name the conversation in skip reports: bounded, whatever the export holds.
    shown = repr(clip(title, LABEL_TITLE)) if title is not None else "None"
    label = f"conversation {shown} ({clip(conv_id, LABEL_TITLE)})" if conv_id else f"{where} {shown}"
    current = conv.get("current_node")
    chain = _visible_chain(mapping, current, where)
    if chain is None:
        skip(label, "no current_node to rebuild the visible thread from")
        _drop_ratings(mapping, set(), ratings, skip, label)
        return None
    default_model = conv.get("default_model_slug")
    messages: list[_Message] = []
    for node_id in chain:
        msg = _visible_message(node_id, mapping[node_id], f"{where} node {node_id}", label, skip)
        if msg is not None:
            if msg.model is None and msg.role == "assistant" and isinstance(default_model, str):
                msg.model = default_model
            messages.append(msg)
    turns, answered = _turns(messages, label, ratings, skip)
    _drop_ratings(mapping, answered, ratings, skip, label, set(chain))
    if not turns:
        skip(label, "no user message with a text answer on the visible thread")
        return None
    return NewConversation(
        turns,
        external_id=conv_id or content_id(FORMAT, conv),
        title=title or "",
        source=FORMAT,
        created_at=timestamp(conv.get("create_time")),
        label=label,
    )


def _visible_chain(mapping: dict[str, Any], current: Any, where: str) -> list[str] | None:
    """Node ids from the root to ``current_node`` (the thread the user last saw)."""
    if not isinstance(current, str) or current not in mapping:
        return None
    chain: list[str] = []
    seen: set[str] = set()
    node_id: Any = current
    while isinstance(node_id, str) and node_id in mapping:
        if node_id in seen:
            raise ImportFormatError(f"{where}: the parent links form a loop at node {clip(node_id, 80)}.")
        seen.add(node_id)
        chain.append(node_id)
        node = need(mapping[node_id], dict, f"{where} node {node_id}", "node")
        node_id = node.get("parent")
    chain.reverse()
    return chain


def _visible_message(node_id: str, node: Any, where: str, label: str, skip: Skip) -> _Message | None:
    node = need(node, dict, where, "node")
    msg = node.get("message")
    if msg is None:
        return None  # the structural root
    msg = need(msg, dict, where, "message")
    author = need(msg.get("author"), dict, where, "author")
    role = need(author.get("role"), str, where, "author.role")
    metadata = msg.get("metadata") or {}
    need(metadata, dict, where, "metadata")
    content = need(msg.get("content"), dict, where, "content")
    item = f"{label} message {node_id}"
    if metadata.get("is_visually_hidden_from_conversation") is True or msg.get("weight") == 0:
        skip(item, f"hidden {role} message")
        return None
    if role in ("system", "tool"):
        skip(item, f"{role} message")
        return None
    if role not in ("user", "assistant"):
        skip(item, f"message from {role!r}")
        return None
    recipient = msg.get("recipient")
    if role == "assistant" and recipient not in (None, "all"):
        skip(item, f"tool call to {recipient!r}")
        return None
    content_type = content.get("content_type")
    if content_type != "text":
        skip(item, f"non-text content ({content_type})")
        return None
    parts = need(content.get("parts"), list, where, "content.parts")
    texts = [p for p in parts if isinstance(p, str)]
    if len(texts) < len(parts):
        skip(item, f"{len(parts) - len(texts)} non-text part(s) left out")
    text = "\n".join(texts)
    if not text.strip():
        skip(item, f"empty {role} message")
        return None
    slug = metadata.get("model_slug")
    return _Message(node_id, role, text, msg.get("create_time"), slug if isinstance(slug, str) else None)


def _turns(
    messages: list[_Message], label: str, ratings: dict[str, list[_Rating]], skip: Skip
) -> tuple[list[NewTurn], set[str]]:
    """Pair each user message with the answer after it; consecutive assistant texts form one answer."""
    turns: list[NewTurn] = []
    answered: set[str] = set()
    history: list[dict[str, Any]] = []
    user: _Message | None = None
    answer: list[_Message] = []

    def close() -> None:
        nonlocal user, answer
        if user is not None and answer:
            text = "\n\n".join(m.text for m in answer)
            models = [m.model for m in answer if m.model]
            feedback = [r.feedback for m in answer for r in ratings.pop(m.node_id, [])]
            sent = [*history, {"role": "user", "content": user.text}]
            attempt = NewAttempt(
                text,
                sent,
                f"chatgpt:{models[-1]}" if models else "chatgpt",
                created_at=timestamp(answer[-1].created),
                feedback=feedback,
            )
            turns.append(NewTurn(user.text, [attempt], created_at=timestamp(user.created)))
            answered.update(m.node_id for m in answer)
            history.extend([{"role": "user", "content": user.text}, {"role": "assistant", "content": text}])
        elif user is not None:
            skip(f"{label} message {user.node_id}", "user message without a text answer")
        user, answer = None, []

    for msg in messages:
        if msg.role == "user":
            close()
            user = msg
        elif user is None:
            skip(f"{label} message {msg.node_id}", "answer without a user message before it")
        else:
            answer.append(msg)
    close()
    return turns, answered


def _drop_ratings(
    mapping: dict[str, Any],
    answered: set[str],
    ratings: dict[str, list[_Rating]],
    skip: Skip,
    label: str,
    visible: set[str] | None = None,
) -> None:
    """Report the thumbs on this conversation's messages that were not imported, and forget them."""
    if not ratings:
        return
    for node_id in mapping:
        if node_id in answered or node_id not in ratings:
            continue
        on_thread = visible is not None and node_id in visible
        reason = (
            "the rated message was not imported (see its own skip reason)"
            if on_thread
            else "the rated message is on an abandoned branch, not the visible thread"
        )
        for entry in ratings.pop(node_id):
            skip(entry.where, f"{reason}; in {label}")
