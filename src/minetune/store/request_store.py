"""One request's view of a user's store: the program row and its active version are read once.

Handling one proxy request asks for the program and its active version several times (rendering,
the demo index key, the demo policy); each ask was a transaction of its own. A
:class:`RequestStore` reads both in one transaction the first time and answers from memory for
the rest of the request. Versions are immutable, so the only staleness is an activation that
lands while the request is being prepared: the request then uses the version that was active
when it started, as if it had come a moment earlier. Everything else reads the store as usual.
"""

from __future__ import annotations

from minetune.store import DEFAULT_PROGRAM
from minetune.store.repo import Store
from minetune.store.schema import Program, ProgramVersion


class RequestStore(Store):
    """A :class:`Store` for one request (same database and user; not shared across requests)."""

    def __init__(self, store: Store) -> None:  # no super().__init__: the user is known already
        self.db = store.db
        self.user_name = store.user_name
        self.user_id = store.user_id
        self._programs: dict[str, Program] = {}
        self._versions: dict[str, ProgramVersion] = {}

    def active_version(self, program: str = DEFAULT_PROGRAM) -> ProgramVersion:
        version = self._versions.get(program)
        if version is None:
            with self.db.transaction() as s:
                row = self.program_row(s, program)
                found = s.get(ProgramVersion, row.active_version_id)
                assert found is not None
                self._programs[program], self._versions[program] = row, found
                version = found
        return version

    def program(self, name: str = DEFAULT_PROGRAM) -> Program:
        if name not in self._programs:
            self.active_version(name)
        return self._programs[name]
