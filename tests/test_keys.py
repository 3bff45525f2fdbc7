"""Keys scoped to where they belong (issue 11, item 5), over real HTTP on 127.0.0.1: the loopback
fake records every request's headers, so each test shows which key reached which base URL.

- ``OPENAI_API_KEY`` goes only to OpenAI's base URL (or the OPENAI_BASE_URL the user set), unless
  config.toml's ``[keys]`` maps another URL to it;
- ``MINETUNE_API_KEY`` goes only to the base URL of the model the user configured;
- ``[keys]`` names environment variables per base URL (a key value there is refused);
- the system keyring (a fake backend, never the real one) holds keys per base URL;
- a model spec from an imported bundle gets no local key.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest
from click.testing import CliRunner
from keyring.backend import KeyringBackend
from keyring.errors import PasswordDeleteError

from fake_finetune import FakeFineTune
from fakes import FakeOpenAI
from minetune.cli import app
from minetune.config import load_settings
from minetune.errors import ConfigError, ModelError
from minetune.io.bundle import export_bundle, import_bundle
from minetune.learn.dspy_bridge import _lm_args
from minetune.models import keys, resolve_model
from minetune.models.detect import describe_detection
from minetune.store import Store
from minetune.train import hosted
from test_datasets import chain_turns

MESSAGES = [{"role": "user", "content": "hi"}]
OPENAI_KEY = "sk-openai-secret-0001"
LOCAL_KEY = "mk-local-secret-0002"
MAPPED_KEY = "or-mapped-secret-0003"
KEYRING_KEY = "kr-keyring-secret-0004"


class FakeKeyring(KeyringBackend):
    """An in-memory keyring backend (tests never touch the system keyring)."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.entries: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.entries.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.entries[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        if self.entries.pop((service, username), None) is None:
            raise PasswordDeleteError(username)


@pytest.fixture
def fake_keyring() -> Iterator[FakeKeyring]:
    before = keyring.get_keyring()
    backend = FakeKeyring()
    keyring.set_keyring(backend)
    try:
        yield backend
    finally:
        keyring.set_keyring(before)


@pytest.fixture
def other_llm() -> Iterator[FakeOpenAI]:
    """A second loopback server: "somewhere else" a key must not reach."""
    with FakeOpenAI() as server:
        yield server


def auth(fake: FakeOpenAI) -> str | None:
    """The Authorization header of the fake's latest chat request."""
    return fake.headers[-1].get("authorization")


def spec_for(fake: FakeOpenAI) -> str:
    return f"openai-compatible:m@{fake.base_url}"


def write_config(text: str) -> None:
    home = load_settings().home
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(text, encoding="utf-8")


# -- OPENAI_API_KEY ------------------------------------------------------------------------------


def test_openai_key_never_goes_to_another_base_url(
    fake_llm: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    spec = spec_for(fake_llm)
    # Not to an arbitrary URL, not even to the model the user configured, not to a vLLM server.
    resolve_model(load_settings(), spec).complete(MESSAGES)
    resolve_model(load_settings(model=spec), spec).complete(MESSAGES)
    resolve_model(load_settings(), f"vllm:m@{fake_llm.base_url}").complete(MESSAGES)
    assert [h.get("authorization") for h in fake_llm.headers] == [None, None, None]
    assert _lm_args(spec, load_settings())[1]["api_key"] == "unused"  # nor through DSPy


def test_openai_key_goes_to_the_openai_base_url_the_user_set(
    fake_llm: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_llm.base_url + "/")  # normalised: trailing slash
    resolve_model(load_settings(), "openai:gpt-4o-mini").complete(MESSAGES)
    assert auth(fake_llm) == f"Bearer {OPENAI_KEY}"
    resolve_model(load_settings(), spec_for(fake_llm)).complete(MESSAGES)  # same URL, same scope
    assert auth(fake_llm) == f"Bearer {OPENAI_KEY}"
    assert keys.key_for(load_settings(), "https://API.openai.com:443/v1/") is not None
    assert keys.key_for(load_settings(), "http://api.openai.com/v1") is None  # not over plain http


def test_openai_spec_without_its_key_says_which_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINETUNE_API_KEY", LOCAL_KEY)  # not scoped to OpenAI
    with pytest.raises(ModelError, match="needs an API key: set OPENAI_API_KEY"):
        resolve_model(load_settings(), "openai:gpt-4o-mini")


# -- MINETUNE_API_KEY ----------------------------------------------------------------------------


def test_minetune_key_goes_only_to_the_configured_model(
    fake_llm: FakeOpenAI, other_llm: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINETUNE_API_KEY", LOCAL_KEY)
    monkeypatch.setenv("MINETUNE_MODEL", spec_for(fake_llm))
    settings = load_settings()
    resolve_model(settings).complete(MESSAGES)
    assert auth(fake_llm) == f"Bearer {LOCAL_KEY}"
    resolve_model(settings, spec_for(other_llm)).complete(MESSAGES)
    assert auth(other_llm) is None
    with pytest.raises(ModelError) as info:  # a refusal says how to scope a key, never shows one
        other_llm.fail_next(401, "bad key")
        resolve_model(settings, spec_for(other_llm)).complete(MESSAGES)
    assert "[keys]" in str(info.value) and "minetune key set" in str(info.value)
    assert LOCAL_KEY not in str(info.value)


def test_minetune_key_goes_to_the_fine_tuning_url_set_where_its_models_are_served(
    fake_llm: FakeOpenAI, other_llm: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINETUNE_API_KEY", LOCAL_KEY)
    monkeypatch.setenv("MINETUNE_FINETUNE_BASE_URL", fake_llm.url)  # bare http://host:port means .../v1
    settings = load_settings()
    resolve_model(settings, f"openai-compatible:ft:m:1@{fake_llm.base_url}").complete(MESSAGES)
    assert auth(fake_llm) == f"Bearer {LOCAL_KEY}"
    resolve_model(settings, spec_for(other_llm)).complete(MESSAGES)
    assert auth(other_llm) is None


# -- [keys] in config.toml -----------------------------------------------------------------------


def test_keys_table_maps_a_base_url_to_an_environment_variable(
    fake_llm: FakeOpenAI, other_llm: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(
        f'[keys]\n"{fake_llm.base_url}" = "MY_SERVER_KEY"\n"{other_llm.base_url}" = "OPENAI_API_KEY"\n'
    )
    monkeypatch.setenv("MY_SERVER_KEY", MAPPED_KEY)
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("MINETUNE_API_KEY", LOCAL_KEY)
    settings = load_settings(model=spec_for(fake_llm))
    resolve_model(settings, spec_for(fake_llm)).complete(MESSAGES)
    assert auth(fake_llm) == f"Bearer {MAPPED_KEY}"  # the mapping wins over MINETUNE_API_KEY
    resolve_model(settings, spec_for(other_llm)).complete(MESSAGES)
    assert auth(other_llm) == f"Bearer {OPENAI_KEY}"  # OPENAI_API_KEY where the user mapped it

    # A mapped URL gets its variable or nothing: no fallback to another key.
    monkeypatch.delenv("MY_SERVER_KEY")
    resolve_model(settings, spec_for(fake_llm)).complete(MESSAGES)
    assert auth(fake_llm) is None
    assert keys.key_help(settings, fake_llm.base_url).startswith("set MY_SERVER_KEY")
    lines = "\n".join(describe_detection(settings))
    assert "no key (set MY_SERVER_KEY" in lines and "key from OPENAI_API_KEY" in lines
    assert OPENAI_KEY not in lines and LOCAL_KEY not in lines


@pytest.mark.parametrize(
    "table",
    [
        '"http://127.0.0.1:8080/v1" = "sk-live-abc123-secret"',
        '"http://127.0.0.1:8080/v1" = 5',
        '"ftp://x" = "K"',
    ],
)
def test_keys_table_refuses_values_that_are_not_variable_names(table: str) -> None:
    write_config(f"[keys]\n{table}\n")
    with pytest.raises(ConfigError, match=r"\[keys\]") as info:
        load_settings()
    assert "sk-live-abc123-secret" not in str(info.value)


# -- the system keyring --------------------------------------------------------------------------


def test_keyring_key_goes_only_to_its_base_url(
    fake_llm: FakeOpenAI, other_llm: FakeOpenAI, fake_keyring: FakeKeyring
) -> None:
    keys.set_keyring_key(fake_llm.base_url + "/", KEYRING_KEY)
    assert fake_keyring.entries == {("minetune", fake_llm.base_url): KEYRING_KEY}
    settings = load_settings()
    resolve_model(settings, spec_for(fake_llm)).complete(MESSAGES)
    assert auth(fake_llm) == f"Bearer {KEYRING_KEY}"
    resolve_model(settings, spec_for(other_llm)).complete(MESSAGES)
    assert auth(other_llm) is None
    assert keys.describe(settings, fake_llm.base_url).endswith("key from the system keyring")


def test_key_commands_store_in_the_keyring_and_never_print_the_key(
    fake_llm: FakeOpenAI, fake_keyring: FakeKeyring
) -> None:
    runner = CliRunner()
    stored = runner.invoke(app, ["key", "set", fake_llm.base_url, "--stdin"], input=KEYRING_KEY + "\n")
    assert stored.exit_code == 0, stored.output
    assert fake_keyring.entries[("minetune", fake_llm.base_url)] == KEYRING_KEY
    shown = runner.invoke(app, ["key", "show", fake_llm.base_url])
    assert shown.exit_code == 0 and "key from the system keyring" in shown.output
    assert KEYRING_KEY not in stored.output + shown.output
    resolve_model(load_settings(), spec_for(fake_llm)).complete(MESSAGES)
    assert auth(fake_llm) == f"Bearer {KEYRING_KEY}"
    deleted = runner.invoke(app, ["key", "delete", fake_llm.base_url])
    assert deleted.exit_code == 0 and fake_keyring.entries == {}
    again = runner.invoke(app, ["key", "delete", fake_llm.base_url])
    assert again.exit_code != 0
    empty = runner.invoke(app, ["key", "set", fake_llm.base_url, "--stdin"], input="\n")
    assert empty.exit_code != 0 and fake_keyring.entries == {}


def test_a_broken_keyring_means_no_key_not_a_failure(
    fake_llm: FakeOpenAI, fake_keyring: FakeKeyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(service: str, username: str) -> str | None:
        raise RuntimeError("D-Bus is not running")

    monkeypatch.setattr(fake_keyring, "get_password", broken)
    resolve_model(load_settings(), spec_for(fake_llm)).complete(MESSAGES)
    assert auth(fake_llm) is None


# -- hosted fine-tuning ---------------------------------------------------------------------------


def test_a_hosted_job_is_followed_only_with_its_own_providers_key(
    ft: FakeFineTune, other_llm: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store.open(load_settings())
    store.create_program("writer", "You write crisp prose.")
    chain_turns(store, "writer", 12)
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    config = hosted.load_config(load_settings())
    job = hosted.start(store, "writer", method="sft", model="gpt-4.1-mini", config=config)
    assert job is not None and set(ft.auth_headers) == {f"Bearer {ft.api_key}"}  # MINETUNE_API_KEY (conftest)
    sent = len(ft.auth_headers)

    # The user moves to another provider: the old job's provider no longer gets MINETUNE_API_KEY.
    monkeypatch.setenv("MINETUNE_FINETUNE_BASE_URL", other_llm.base_url)
    with pytest.raises(hosted.FineTuneError, match="No API key for hosted fine-tuning") as info:
        hosted.refresh(store, job.id, hosted.load_config(load_settings()))
    assert "[keys]" in str(info.value) and ft.api_key not in str(info.value)
    assert len(ft.auth_headers) == sent  # nothing was sent there

    # Mapped explicitly, it gets the key the user named.
    write_config(f'[keys]\n"{ft.base_url}" = "OLD_PROVIDER_KEY"\n')
    monkeypatch.setenv("OLD_PROVIDER_KEY", ft.api_key)
    assert hosted.refresh(store, job.id, hosted.load_config(load_settings())).status
    assert ft.auth_headers[sent:] and set(ft.auth_headers[sent:]) == {f"Bearer {ft.api_key}"}
    store.close()


# -- imported bundles ----------------------------------------------------------------------------


def test_a_bundles_model_spec_gets_no_local_key(
    fake_llm: FakeOpenAI,
    other_llm: FakeOpenAI,
    fake_keyring: FakeKeyring,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Someone else's machine: a program whose model is a server of theirs.
    theirs = load_settings(home=tmp_path / "theirs")
    store = Store.open(theirs)
    store.create_program("gift", "You help.", spec_for(other_llm))
    bundle = tmp_path / "gift.zip"
    export_bundle(store, "gift", bundle, settings=theirs)
    store.close()

    # Here: every kind of local key is set, for the user's own model.
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("MINETUNE_API_KEY", LOCAL_KEY)
    monkeypatch.setenv("MINETUNE_MODEL", spec_for(fake_llm))
    keys.set_keyring_key(fake_llm.base_url, KEYRING_KEY)
    settings = load_settings()
    mine = Store.open(settings)
    try:
        import_bundle(mine, bundle, settings=settings)
        spec = mine.active_version("gift").model_spec
        assert spec == spec_for(other_llm)  # the foreign base URL is kept...
        resolve_model(settings, spec).complete(MESSAGES)
        assert other_llm.headers and auth(other_llm) is None  # ...and gets no key
        resolve_model(settings).complete(MESSAGES)
        assert auth(fake_llm) == f"Bearer {LOCAL_KEY}"  # the user's own model still gets its key
    finally:
        mine.close()


def test_api_key_repr_hides_the_value() -> None:
    key = keys.ApiKey(OPENAI_KEY, "OPENAI_API_KEY")
    assert OPENAI_KEY not in repr(key) and "OPENAI_API_KEY" in repr(key)
