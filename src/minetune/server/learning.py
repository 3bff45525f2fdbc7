"""How the server learns after feedback: the same :class:`minetune.app.exchange.Learning` as every
interface, with critiques distilled by the program's model and the work run in the background,
one job at a time per program, after the response has been written."""

from __future__ import annotations

import threading
from collections.abc import Callable

from minetune.app.exchange import Learning
from minetune.errors import MinetuneError
from minetune.models.base import ChatModel
from minetune.server.state import ServerState
from minetune.store import Store

_LOCKS: dict[tuple[int, int, str], threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def server_learning(state: ServerState) -> Learning:
    """The server's learning: background, serialised per (user, program)."""

    def reflector(store: Store, program: str) -> ChatModel | None:
        try:
            spec = state.settings.reflection_model or store.active_version(program).model_spec
            return state.model(spec, store, program)
        except MinetuneError:
            return None  # no model to distil critiques with: demos are still updated

    def background(store: Store, program: str, work: Callable[[], object]) -> None:
        key = (id(store.db), store.user_id, program)
        with _LOCKS_GUARD:
            lock = _LOCKS.setdefault(key, threading.Lock())

        def serialised() -> None:
            with lock:  # versions are numbered in order; one learning job at a time per program
                work()

        state.submit(serialised)

    return Learning(state.settings, reflector, background)
