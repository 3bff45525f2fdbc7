"""Conversations as the chat shows them: the thread of a conversation or branch, editing a message
into a new branch, renaming, searching and deleting (which is :func:`minetune.app.forget.forget`
of the whole tree, so every copy of the text goes too).

Branches (:mod:`minetune.store.branches`): editing and resending message *k* of a conversation
forks a branch that shares the turns before *k* and holds the edited message and what follows;
the original stays as it was, and the chat offers a switcher between them at turn *k*.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from minetune.config import Settings
from minetune.errors import MinetuneError
from minetune.store import Store, branches, browse
from minetune.store.branches import MAX_TITLE_CHARS, Thread
from minetune.store.browse import ConversationSummary
from minetune.store.text import has_controls

if TYPE_CHECKING:
    from minetune.app.forget import ForgetReport

MAX_QUERY_CHARS = 200


def thread(store: Store, conversation_id: int) -> Thread:
    """What the chat shows for a conversation or branch (see :class:`Thread`)."""
    return branches.thread(store, conversation_id)


def fork(store: Store, turn_id: int) -> int:
    """A new branch leaving the conversation of ``turn_id`` at that turn; its id. The next message
    sent to it takes the turn's place, with the turns before it as history."""
    return branches.fork(store, turn_id).id


def discard_fork(store: Store, settings: Settings, conversation_id: int) -> None:
    """Forget a branch that never got an answer (the model failed), so no empty branch is left."""
    from minetune.app.forget import forget  # erasure's imports stay out of server start-up

    if not store.conversation_turn_ids(conversation_id):
        forget(store, settings, conversations=[conversation_id])


def rename(store: Store, conversation_id: int, title: str) -> str:
    """Retitle a conversation (with its branches); the title stored."""
    if not title.strip():
        raise MinetuneError("The title is empty; type a name for the conversation.")
    if len(title) > MAX_TITLE_CHARS:
        raise MinetuneError(f"The title is {len(title):,} characters; the limit is {MAX_TITLE_CHARS}.")
    return branches.rename(store, conversation_id, title).title


def search(store: Store, program: str, query: str) -> list[ConversationSummary]:
    """The program's conversations whose title, messages or answers (in any branch) contain
    ``query``, newest first; every conversation for an empty query."""
    if len(query) > MAX_QUERY_CHARS:
        raise MinetuneError(f"The search is {len(query):,} characters; the limit is {MAX_QUERY_CHARS}.")
    if has_controls(query):
        raise MinetuneError("The search contains control characters; type words to look for.")
    if not query.strip():
        return browse.conversations(store, program)
    return browse.conversations(store, program, ids=branches.search(store, program, query))


def delete(store: Store, settings: Settings, conversation_id: int) -> ForgetReport:
    """Forget a conversation and every branch of it, as ``minetune forget --conversation`` does
    (its text is removed from later prompts, lessons, demos and adapters' lineage too)."""
    from minetune.app.forget import forget

    return forget(store, settings, conversations=branches.tree_ids(store, conversation_id))
