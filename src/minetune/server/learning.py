"""How the server learns after feedback: the same :class:`minetune.app.exchange.Learning` as every
interface, with critiques distilled by the program's model and the work run as ``learn`` jobs of
the one job runner (:mod:`minetune.app.jobs`): after the response has been written, one at a time
per program in every process sharing the database."""

from __future__ import annotations

from collections.abc import Callable

from minetune.app import jobs
from minetune.app.exchange import Learning
from minetune.errors import MinetuneError
from minetune.models.base import ChatModel
from minetune.server.state import ServerState
from minetune.store import Store


def server_learning(state: ServerState) -> Learning:
    """The server's learning: background jobs, serialised per (user, program)."""

    def reflector(store: Store, program: str) -> ChatModel | None:
        try:
            spec = state.settings.reflection_model or store.active_version(program).model_spec
            return state.model(spec, store, program)
        except MinetuneError:
            return None  # no model to distil critiques with: demos are still updated

    def background(store: Store, program: str, work: Callable[[], object]) -> None:
        jobs.submit_learning(store, state.settings, program, work)

    return Learning(state.settings, reflector, background)
