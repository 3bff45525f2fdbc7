"""The store on SQLite and PostgreSQL: schema, migrations, versions, feedback, stats, isolation."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from minetune.config import load_settings
from minetune.errors import NotFoundError, StoreError
from minetune.store import Store
from minetune.store.db import HEAD_REVISION, MIGRATIONS_DIR


@pytest.fixture
def store(database_url: str) -> Store:
    s = Store.open(load_settings(database_url=database_url))
    yield s
    s.close()


def _attempt(store: Store, turn_id: int, response: str = "hi") -> int:
    return store.add_attempt(
        turn_id,
        version_id=None,
        model_spec="fake",
        messages=[{"role": "user", "content": "q"}],
        response=response,
        latency_ms=1.0,
        prompt_tokens=3,
        completion_tokens=1,
    ).id


def test_migrations_match_the_schema(store: Store) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.config import Config
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from minetune.store.schema import Base

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert ScriptDirectory.from_config(cfg).get_current_head() == HEAD_REVISION
    with store.db.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == HEAD_REVISION
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_default_program_exists_implicitly(store: Store) -> None:
    assert [p.name for p in store.programs()] == ["default"]
    assert store.active_version().number == 1


def test_versions_are_immutable_and_pointer_moves(store: Store) -> None:
    store.create_program("timmy", "You are Little Timmy.", "ollama:llama3.2")
    v2 = store.add_version("timmy", instructions="You are Little Timmy, sarcastic.", note="edit")
    assert (v2.number, v2.model_spec) == (2, "ollama:llama3.2")
    assert store.active_version("timmy").id == v2.id
    assert store.rollback("timmy").number == 1
    assert store.activate("timmy", 2).number == 2
    with pytest.raises(NotFoundError):
        store.activate("timmy", 9)
    with pytest.raises(StoreError, match="already exists"):
        store.create_program("timmy")
    # Editing a stored version in place is refused.
    from minetune.store.schema import ProgramVersion

    with pytest.raises(ValueError, match="immutable"), store.db.transaction() as s:
        s.get(ProgramVersion, v2.id).instructions = "changed"
    assert store.version("timmy", 2).instructions == "You are Little Timmy, sarcastic."


def test_feedback_is_validated_and_scores_turns(store: Store) -> None:
    conv = store.start_conversation()
    turn = store.add_turn(conv.id, "q")
    first, second = _attempt(store, turn.id, "long"), _attempt(store, turn.id, "short")
    store.add_feedback(first, "explicit", 2, "too long")
    for bad in (0, 6, -1):
        with pytest.raises(StoreError, match="1 to 5"):
            store.add_feedback(first, "explicit", bad)
    with pytest.raises(StoreError, match="kind"):
        store.add_feedback(first, "thumbs", 3)
    store.add_feedback(second, "explicit", 5)
    loaded = store.turn(turn.id)
    assert [a.number for a in loaded.attempts] == [1, 2]
    assert loaded.attempts_to_5 == 2 and loaded.score == 0.5
    assert [(f.stars, f.critique) for f in loaded.attempts[0].feedback] == [(2, "too long")]
    stats = store.stats()
    assert stats["turns"] == 1 and stats["attempts"] == 2
    assert stats["ratings"] == {"1": 0, "2": 1, "3": 0, "4": 0, "5": 1}
    assert stats["mean_stars"] == 3.5 and stats["mean_attempts_to_5"] == 2.0


def test_database_check_constraint_rejects_bad_stars(store: Store) -> None:
    """Even a write that bypasses the repository cannot store 6 stars."""
    conv = store.start_conversation()
    attempt = _attempt(store, store.add_turn(conv.id, "q").id)
    with pytest.raises(Exception), store.db.transaction() as s:  # noqa: B017 - driver-specific class
        s.execute(
            text(
                "INSERT INTO feedback (attempt_id, kind, stars, created_at) "
                "VALUES (:a, 'explicit', 6, CURRENT_TIMESTAMP)"
            ),
            {"a": attempt},
        )
    assert store.row_counts()["feedback"] == 0


def test_feedback_is_durable_before_return(store: Store, database_url: str) -> None:
    conv = store.start_conversation()
    attempt = _attempt(store, store.add_turn(conv.id, "q").id)
    store.add_feedback(attempt, "explicit", 4, "nice")
    other = Store.open(load_settings(database_url=database_url))  # a separate connection pool
    assert other.stats()["ratings"]["4"] == 1
    other.close()


def test_praise_counts_unless_rated_explicitly(store: Store) -> None:
    conv = store.start_conversation()
    turn = store.add_turn(conv.id, "q")
    a = _attempt(store, turn.id)
    store.add_feedback(a, "explicit", 3)
    store.add_feedback(a, "praise", None, text="perfect")
    assert store.stats()["ratings"]["3"] == 1
    assert store.stats()["captures"] == 1


def test_users_never_see_each_other(database_url: str) -> None:
    settings = load_settings(database_url=database_url)
    alice, bob = Store.open(settings, user="alice"), Store.open(settings, user="bob")
    conv = alice.start_conversation()
    turn = alice.add_turn(conv.id, "secret")
    attempt = _attempt(alice, turn.id)
    alice.add_feedback(attempt, "explicit", 5)
    for call in (
        lambda: bob.turn(turn.id),
        lambda: bob.attempt(attempt),
        lambda: bob.add_feedback(attempt, "explicit", 1),
        lambda: bob.add_turn(conv.id, "x"),
        lambda: bob.delete_conversation(conv.id),
    ):
        with pytest.raises(NotFoundError):
            call()
    assert bob.stats()["turns"] == 0 and alice.stats()["turns"] == 1
    assert bob.latest_attempt_id() is None
    alice.close(), bob.close()


def test_not_a_database_file_is_refused_untouched(tmp_path: Path) -> None:
    bogus = tmp_path / "minetune.db"
    bogus.write_bytes(b"this is not a database\n" * 10)
    before = bogus.read_bytes()
    with pytest.raises(StoreError, match="not a database"):
        Store.open(load_settings(home=tmp_path))
    assert bogus.read_bytes() == before


def test_foreign_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "minetune.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
        conn.execute("INSERT INTO notes VALUES ('keep me')")
    with pytest.raises(StoreError, match="did not create"):
        Store.open(load_settings(home=tmp_path))
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT body FROM notes").fetchall() == [("keep me",)]


def test_sqlite_uses_wal_and_full_sync(tmp_path: Path) -> None:
    store = Store.open(load_settings(home=tmp_path))
    with store.db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    store.close()


def test_unreachable_postgres_is_one_clear_error() -> None:
    settings = load_settings(database_url="postgresql://nobody:secret@127.0.0.1:9/none")
    with pytest.raises(StoreError, match="Cannot connect") as info:
        Store.open(settings)
    assert "secret" not in str(info.value)


def test_ids_are_never_reused_after_a_delete(store: Store) -> None:
    conv = store.start_conversation()
    turn = store.add_turn(conv.id, "q")
    attempt = _attempt(store, turn.id)
    first = store.add_feedback(attempt, "explicit", 5).id
    store.delete_turn(turn.id)
    turn2 = store.add_turn(conv.id, "q2")
    attempt2 = _attempt(store, turn2.id)
    assert turn2.id > turn.id and attempt2 > attempt
    assert store.add_feedback(attempt2, "explicit", 5).id > first


def test_upgrade_from_the_first_schema_keeps_data(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config

    from minetune.store.db import make_engine

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001_initial")
        conn.execute(text("INSERT INTO users (id, name, created_at) VALUES (1, 'local', CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO programs (id, user_id, name, description, created_at) "
                          "VALUES (1, 1, 'default', '', CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO program_versions (id, program_id, number, instructions, lessons, "
                          "demo_policy, note, created_at) VALUES (1, 1, 1, 'Be kind.', '[]', '{}', '', "
                          "CURRENT_TIMESTAMP)"))
        conn.execute(text("UPDATE programs SET active_version_id = 1"))
    engine.dispose()
    store = Store.open(load_settings(database_url=url))
    version = store.active_version()
    assert version.instructions == "Be kind." and version.sources == {}
    store.close()


def test_feedback_commits_are_synced_and_answers_commit_in_wal_without_a_sync() -> None:
    """SQLite: every transaction is FULL (synced before commit returns) unless it says
    ``durable=False`` (the proxy's answer writes), and the level never leaks to the next one."""
    store = Store.open(load_settings())
    try:
        levels = []
        for durable in (True, False, True):
            with store.db.transaction(durable=durable) as s:
                levels.append(s.execute(text("PRAGMA synchronous")).scalar())
        assert levels == [2, 1, 2]  # FULL, NORMAL, FULL
    finally:
        store.close()
