"""Private files (issue 11, item 6): the home 0700 and its files 0600 whatever the umask (existing
installs fixed on open), adapters under a per-user folder, web training only from model folders
under the configured roots (one refusal whatever the path), control characters refused in names
and rules, and jobs a crash left running marked interrupted when ``minetune serve`` starts."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from minetune.config import load_settings
from minetune.errors import MinetuneError, StoreError
from minetune.files import private_home, user_folder
from minetune.io.bundle import export_bundle, import_bundle
from minetune.store import Store
from minetune.store import adapters as adapters_db
from minetune.store import jobs as jobs_db
from minetune.store.browse import conversation_turns
from minetune.store.db import Database, open_engine
from minetune.store.users import issue_token
from minetune.train.base import BaseModel, job_dir
from test_bundle_adapters import fake_adapter_dir
from test_datasets import chain_turns
from test_jobs import claimed_job, spawn
from test_streams_interrupted import _server_process
from webusers import TwoUsers, error, rows_unchanged, two_users

SRC = str(Path(__file__).parent.parent / "src")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def modes(root: Path) -> dict[str, int]:
    """Every folder and file under ``root`` (links not followed) and its permission bits."""
    found = {".": mode(root)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            found[str(path.relative_to(root))] = mode(path)
    return found


def assert_private(root: Path) -> None:
    for name, bits in modes(root).items():
        path = root / name
        wanted = 0o700 if path.is_dir() and not path.is_symlink() else 0o600
        if not path.is_symlink():
            assert bits == wanted, f"{name}: {oct(bits)}"


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The usual umask 022 (world-readable files by default) for the test's duration."""
    before = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(before)


# -- modes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_a_new_home_is_private_whatever_the_umask(umask: int) -> None:
    before = os.umask(umask)
    try:
        settings = load_settings()
        store = Store.open(settings)
        store.change_lessons("default", add=[{"text": "Be brief."}])  # writes: -wal and -shm exist now
        names = {p.name for p in settings.home.iterdir()}
        assert {"minetune.db", "minetune.db-wal", "minetune.db-shm"} <= names
        assert mode(settings.home) == 0o700
        for name in ("minetune.db", "minetune.db-wal", "minetune.db-shm"):
            assert mode(settings.home / name) == 0o600, name
        store.close()
    finally:
        os.umask(before)


def _old_install(home: Path) -> Path:
    """A home as minetune left it under umask 022 before: 0755 folders, 0644 files, plus a link
    to a file elsewhere and a folder that is not minetune's."""
    Store.open(load_settings(home=home)).close()
    outside = home.parent / "elsewhere.txt"
    outside.write_text("not minetune's")
    (home / "config.toml").write_text("retry_limit = 4\n")
    adapter = fake_adapter_dir(home / "adapters" / "p" / "3", rank=2)
    (home / "adapters" / "p" / ".jobs" / "9" / "checkpoints").mkdir(parents=True)
    (home / "adapters" / "link").symlink_to(outside)
    (home / "notes").mkdir()
    (home / "notes" / "todo.txt").write_text("mine")
    for path in [home, *home.rglob("*"), outside]:
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)
    assert mode(home / "minetune.db") == 0o644 and mode(adapter / "adapter_config.json") == 0o644
    return outside


@pytest.mark.parametrize("opener", ["Store.open", "load_settings"])
def test_an_existing_install_is_fixed_on_open(tmp_path: Path, opener: str) -> None:
    home = tmp_path / "old-home"
    outside = _old_install(home)
    if opener == "Store.open":
        Store.open(load_settings(home=home)).close()
    else:
        load_settings(home=home)
    assert mode(home) == 0o700
    for name in ("minetune.db", "config.toml"):
        assert mode(home / name) == 0o600, name
    assert_private(home / "adapters")
    assert mode(home / "adapters" / "p" / ".jobs" / "9" / "checkpoints") == 0o700
    assert mode(outside) == 0o644  # a link is never followed
    assert mode(home / "notes") == 0o755  # not minetune's folder (the 0700 home closes it anyway)


def test_the_command_line_creates_private_files(tmp_path: Path) -> None:
    home = tmp_path / "cli-home"
    env = dict(os.environ, MINETUNE_HOME=str(home), PYTHONPATH=SRC)

    def run(*args: str) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "minetune.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            preexec_fn=lambda: os.umask(0o022),
            timeout=120,
        )
        assert done.returncode == 0, done.stderr

    run("lessons", "add", "Be brief.")
    run("export", "--format", "capture-md", "--out", str(home / "captures.md"))
    run("export", "--format", "capture-md", "--out", str(tmp_path / "elsewhere.md"))
    assert mode(home) == 0o700
    assert_private(home)
    assert mode(tmp_path / "elsewhere.md") == 0o600  # whatever minetune writes is private


# -- adapters per user ---------------------------------------------------------------------------


def test_adapters_live_under_a_per_user_folder_and_old_paths_keep_working(
    tmp_path: Path, open_umask: None
) -> None:
    settings = load_settings()
    local = Store.open(settings)
    # An adapter from before per-user folders: the record's absolute path still loads.
    old = fake_adapter_dir(settings.home / "adapters" / "p" / "1", rank=2)
    local.create_program("p", "x", "hf:./base")
    adapters_db.publish_adapter(
        local, "p", place=lambda i: str(old), serve_spec=BaseModel("./base").spec, method="sft",
        base_model="./base",
    )
    bundle = tmp_path / "p.zip"
    export_bundle(local, "p", bundle, with_adapters=True, settings=settings)
    ((record, _),) = adapters_db.list_adapters(local, "p")
    assert Path(record.path) == old.resolve() and (old / "adapter_config.json").is_file()

    alice = Store(local.db, "alice")
    import_bundle(alice, bundle, settings=settings, name="gift")
    ((mine, _),) = adapters_db.list_adapters(alice, "gift")
    folder = Path(mine.path)
    assert folder.parent == settings.home / "adapters" / "alice" / "gift"
    assert_private(settings.home / "adapters" / "alice")
    assert not (settings.home / "adapters" / "local" / "gift").exists()

    # Job folders: under the user's folder; one an older version left is still found.
    assert job_dir(settings, "p", "alice", 5) == settings.home / "adapters" / "alice" / "p" / ".jobs" / "5"
    legacy = settings.home / "adapters" / "p" / ".jobs" / "6"
    legacy.mkdir(parents=True)
    assert job_dir(settings, "p", "alice", 6) == legacy
    local.close()


def test_user_folders_are_distinct_per_user_name() -> None:
    names = ["alice", "a/b", "a_b", "a:b", "..", "ünï", "x" * 150]
    folders = [user_folder(n) for n in names]
    assert len(set(folders)) == len(names) and folders[0] == "alice"
    assert all("/" not in f and f not in (".", "..") for f in folders)


# -- web training roots --------------------------------------------------------------------------


@pytest.fixture
def web(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TwoUsers]:
    monkeypatch.setenv("MINETUNE_MODEL_ROOTS", str(tmp_path / "models"))
    with two_users() as users:
        yield users


def test_web_training_refuses_model_folders_outside_the_roots_alike(web: TwoUsers, tmp_path: Path) -> None:
    chain_turns(web.store_a, "default", 12)  # enough to get past the data checks to the base model
    roots = tmp_path / "models"
    roots.mkdir()
    secret = tmp_path / "secret-model"  # a real model folder, but outside the roots
    secret.mkdir()
    (secret / "config.json").write_text("{}")
    (roots / "sneaky").symlink_to(secret)  # a link inside the roots that leads outside
    bases = [
        f"hf:{secret}",
        f"hf:{tmp_path / 'no' / 'such' / 'folder'}",
        f"hf:{tmp_path}",  # exists, holds no config.json
        f"hf:{roots / 'sneaky'}",
        f"hf:{roots}/../secret-model",
        "hf:/root/.ssh",
        "hf:/etc",
        "hf:some-org/some-model",  # a hub id is no folder under the roots either
    ]
    messages = set()
    with rows_unchanged(web.store_a):
        for base in bases:
            response = web.a.post("/training/local", data={"method": "sft", "base": base})
            assert response.status_code == 400, (base, response.text)
            name = base.removeprefix("hf:")
            messages.add(error(response).replace(repr(name), "NAME"))
    assert len(messages) == 1, messages  # the same words whether the path exists or not
    (message,) = messages
    assert "not a model folder under the configured model roots" in message
    assert str(tmp_path) not in message  # the roots themselves are not shown either


# -- control characters --------------------------------------------------------------------------


def test_control_characters_are_refused_in_names_and_rules(database_url: str) -> None:
    store = Store.open(load_settings())
    store.program("default")  # created on first use
    before = store.row_counts()
    for name in ("bad\x00name", "esc\x1b[31m", "two\nlines", "bell\x07"):
        with pytest.raises(StoreError, match="A program name may not contain control characters"):
            store.create_program(name)
    for text in ("nul\x00byte", "esc\x1b[2J", "del\x7f", "c1\x85inside"):
        with pytest.raises(StoreError, match="A rule may not contain control characters"):
            store.change_lessons("default", add=[{"text": text}])
    (added,) = store.change_lessons("default", add=[{"text": "Be brief."}])[1]
    with pytest.raises(StoreError, match="control characters"):
        store.change_lessons("default", edit={added.id: "Be\x00brief."})
    with pytest.raises(MinetuneError, match="A user name may not contain control characters"):
        issue_token(store.db, "eve\x00")
    with pytest.raises(StoreError, match="A user name may not contain control characters"):
        Store(store.db, "mallory\x00")
    with pytest.raises(MinetuneError, match="No program named"):
        store.active_version("de\x00fault")  # a lookup with NUL is a plain not-found, on PostgreSQL too
    after = store.row_counts()
    assert {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)} == {
        "lessons": 1,
        "program_versions": 1,
    }
    # A rule may span lines; a title derived from a message keeps to one line, without controls.
    store.change_lessons("default", add=[{"text": "Answer in two parts:\n1. the fact\n\t2. the reason"}])
    conv = store.start_conversation("default", title="first\x00 line\nsecond\x1b line")
    assert conversation_turns(store, conv.id)[0].title == "first line second line"
    store.close()


def test_a_rule_with_nul_over_http_is_refused_and_nothing_is_stored(web: TwoUsers) -> None:
    with rows_unchanged(web.store_a):
        response = web.a.post("/rules/add", data={"text": "Be brief.\x00 Ignore the rest."})
        assert 400 <= response.status_code < 500, response.text
    assert web.store_a.lessons() == []


# -- crash recovery at start-up ------------------------------------------------------------------


def test_minetune_serve_marks_jobs_a_crash_left_running_interrupted(
    database_url: str, tmp_path: Path
) -> None:
    store = Store(Database(open_engine(database_url)))
    store.create_program("p")
    proc = spawn(database_url, "hold", "p")
    job_id = claimed_job(proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert jobs_db.get(store, job_id).status == "running"
    env = dict(os.environ, MINETUNE_HOME=str(tmp_path / "serve-home"), PYTHONPATH=SRC)
    with _server_process(env):
        record = jobs_db.get(store, job_id)
    assert record.status == "interrupted" and record.error == jobs_db.INTERRUPTED
    assert record.finished_at is not None
    store.close()


def test_private_home_creates_missing_folders_private(tmp_path: Path, open_umask: None) -> None:
    home = private_home(tmp_path / "a" / "b")
    assert mode(home) == 0o700 and mode(tmp_path / "a") == 0o700  # created folders are private
