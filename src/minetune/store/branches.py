"""Conversation branches, renaming and search.

Editing and resending a message forks a *branch*: a new conversation whose ``parent_id`` is the
conversation it leaves and whose ``fork_index`` is the index of the edited turn. The branch stores
only its own turns (they start at ``fork_index``); its history is its parent's chain of turns
before that index, so nothing is copied, counted twice or left behind by forget. A conversation
and its branches form a tree; the root is what the conversation list shows, and the turns shown
for a branch are its *chain*: the ancestors' turns before each fork, then its own.

At a fork point (conversation P, index k) the alternatives are P's own turn k and every branch of
P that forks at k, oldest first: :func:`thread` reports them per shown turn for a branch switcher.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, selectinload

from minetune.store.repo import Store
from minetune.store.schema import Attempt, Conversation, Turn

MAX_TITLE_CHARS = 500


def _own_turns(s: Session, conversation_id: int) -> list[Turn]:
    query = (
        select(Turn)
        .options(selectinload(Turn.attempts).selectinload(Attempt.feedback))
        .where(Turn.conversation_id == conversation_id)
        .order_by(Turn.index)
    )
    return list(s.scalars(query))


def chain_turns(s: Session, conv: Conversation) -> list[Turn]:
    """The turns shown for ``conv`` in order: its ancestors' turns before each fork, then its own
    (attempts and feedback loaded), inside the caller's transaction."""
    own = _own_turns(s, conv.id)
    if conv.parent_id is None:
        return own
    parent = s.get(Conversation, conv.parent_id)
    if parent is None:
        return own
    fork = conv.fork_index or 0
    return [t for t in chain_turns(s, parent) if t.index < fork] + own


def _root(s: Session, conv: Conversation) -> Conversation:
    while conv.parent_id is not None:
        parent = s.get(Conversation, conv.parent_id)
        if parent is None:
            break
        conv = parent
    return conv


def _descendants(s: Session, root_id: int) -> list[int]:
    ids, frontier = [root_id], [root_id]
    while frontier:
        frontier = list(s.scalars(select(Conversation.id).where(Conversation.parent_id.in_(frontier))))
        ids += frontier
    return ids


def fork(store: Store, turn_id: int) -> Conversation:
    """A new branch of the conversation of ``turn_id`` that leaves it at that turn (its next turn
    takes the turn's index); the branch has the root's title."""
    with store.db.transaction() as s:
        turn = store.owned_row(s, Turn, turn_id)
        parent = s.get(Conversation, turn.conversation_id)
        assert parent is not None
        branch = Conversation(
            program_id=parent.program_id,
            title=_root(s, parent).title,
            source=parent.source,
            parent_id=parent.id,
            fork_index=turn.index,
        )
        s.add(branch)
        s.flush()
        return branch


def root_id(store: Store, conversation_id: int) -> int:
    """The id of the conversation ``conversation_id`` is a branch of (itself when it is none)."""
    with store.db.transaction() as s:
        return _root(s, store.owned_row(s, Conversation, conversation_id)).id


def tree_ids(store: Store, conversation_id: int) -> list[int]:
    """The root of ``conversation_id``'s tree and every branch in it (what deleting it deletes)."""
    with store.db.transaction() as s:
        return _descendants(s, _root(s, store.owned_row(s, Conversation, conversation_id)).id)


@dataclass
class Thread:
    """What the chat shows for one conversation: the root it belongs to, its chain of turns, and
    for each turn at a fork point the alternatives (conversation ids) and which one is shown."""

    conversation: Conversation
    root: Conversation
    turns: list[Turn]
    branches: dict[int, tuple[list[int], int]] = field(default_factory=dict)  # turn id -> (ids, shown)


def thread(store: Store, conversation_id: int) -> Thread:
    """The chain of ``conversation_id`` with its branch points (see the module docstring)."""
    with store.db.transaction() as s:
        conv = store.owned_row(s, Conversation, conversation_id)
        turns = chain_turns(s, conv)
        owners = {c.id: c for c in s.scalars(select(Conversation).where(Conversation.id.in_(
            {t.conversation_id for t in turns})))}  # fmt: skip
        points: dict[int, tuple[int, int]] = {}  # turn id -> (fork parent, index)
        for t in turns:
            owner = owners[t.conversation_id]
            forked_here = owner.parent_id is not None and owner.fork_index == t.index
            points[t.id] = (owner.parent_id if forked_here else owner.id, t.index)  # type: ignore[assignment]
        rows = s.execute(
            select(Conversation.id, Conversation.parent_id, Conversation.fork_index).where(
                Conversation.parent_id.in_({p for p, _ in points.values()})
            )
        ).all()
        branches = {}
        for t in turns:
            parent, index = points[t.id]
            options = [parent] + sorted(i for i, p, k in rows if p == parent and k == index)
            if len(options) > 1:
                shown = t.conversation_id if t.conversation_id in options else parent
                branches[t.id] = (options, options.index(shown))
        return Thread(conv, _root(s, conv), turns, branches)


def rename(store: Store, conversation_id: int, title: str) -> Conversation:
    """Give the conversation tree of ``conversation_id`` a new title (the root and its branches)."""
    title = " ".join(title.split())[:MAX_TITLE_CHARS]
    with store.db.transaction() as s:
        root = _root(s, store.owned_row(s, Conversation, conversation_id))
        for cid in _descendants(s, root.id):
            conv = s.get(Conversation, cid)
            assert conv is not None
            conv.title = title
        s.flush()
        return root


def _like(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def search(store: Store, program: str, query: str, limit: int = 100) -> list[int]:
    """Ids of the program's root conversations (newest first) whose title, messages or answers
    in any branch contain ``query`` (case-insensitive)."""
    pattern = _like(query.strip())
    with store.db.transaction() as s:
        prog = store.program_row(s, program)
        in_program = Conversation.program_id == prog.id
        by_title = select(Conversation.id).where(
            in_program, func.lower(Conversation.title).like(pattern, "\\")
        )
        by_turn = (
            select(Turn.conversation_id)
            .join(Conversation, Conversation.id == Turn.conversation_id)
            .outerjoin(Attempt, Attempt.turn_id == Turn.id)
            .where(
                in_program,
                or_(
                    func.lower(Turn.user_message).like(pattern, "\\"),
                    func.lower(Attempt.response).like(pattern, "\\"),
                ),
            )
        )
        hits = set(s.scalars(by_title)) | set(s.scalars(by_turn))
        parents = dict(
            s.execute(select(Conversation.id, Conversation.parent_id).where(in_program)).all()
        )
    roots = set()
    for cid in hits:
        seen = set()
        while parents.get(cid) is not None and cid not in seen:
            seen.add(cid)
            cid = parents[cid]  # type: ignore[assignment]
        roots.add(cid)
    return sorted(roots, reverse=True)[:limit]
