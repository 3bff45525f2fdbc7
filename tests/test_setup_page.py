"""/setup tests a model spec with one tiny request over real HTTP (the loopback fake) and shows the
answer, or a clear error for a spec that cannot answer; the form needs its CSRF token."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from fakes import FakeOpenAI
from webchat import done, fake_spec, ndjson, web_settings
from webusers import csrf_token, served

HTML = {"Accept": "text/html"}


def test_setup_test_button_sends_one_tiny_request_and_shows_the_answer(fake_llm: FakeOpenAI) -> None:
    fake_llm.queue("ready")
    with served(web_settings(None)) as web:
        token = csrf_token(web.client, "/setup")
        before = len(fake_llm.requests)
        page = web.client.post(
            "/setup/test", data={"spec": fake_spec(fake_llm), "csrf_token": token}, headers=HTML
        )
        assert page.status_code == 200
        assert "answered in" in page.text and "ready" in page.text
        assert len(fake_llm.requests) == before + 1
        sent = fake_llm.requests[-1]
        assert sent["messages"] == [{"role": "user", "content": "Reply with the single word: ready"}]

        unreachable = "openai-compatible:none@http://127.0.0.1:9/v1"
        page = web.client.post("/setup/test", data={"spec": unreachable, "csrf_token": token}, headers=HTML)
        assert page.status_code == 200 and "did not answer" in page.text

        bad = web.client.post("/setup/test", data={"spec": "nonsense:", "csrf_token": token}, headers=HTML)
        assert "did not answer" in bad.text

        forged = web.client.post("/setup/test", data={"spec": fake_spec(fake_llm)}, headers=HTML)
        assert forged.status_code == 403
        assert len(fake_llm.requests) == before + 1  # neither the error cases nor the forged post reached it


def test_use_this_model_makes_a_new_version_of_the_program(fake_llm: FakeOpenAI) -> None:
    with served(web_settings(None)) as web:
        token = csrf_token(web.client, "/setup")
        web.store.create_program("support", "You help.", None)
        before = web.store.active_version("support").number
        spec = fake_spec(fake_llm)
        page = web.client.post(
            "/setup/use", data={"spec": spec, "program": "support", "csrf_token": token}, headers=HTML
        )
        assert page.status_code == 200 and "support now answers with" in page.text
        active = web.store.active_version("support")
        assert active.model_spec == spec and active.number == before + 1
        bad = web.client.post(
            "/setup/use", data={"spec": "nonsense:", "program": "support", "csrf_token": token}, headers=HTML
        )
        assert bad.status_code == 400
        assert web.store.active_version("support").number == before + 1


def test_save_as_default_model_writes_config_and_the_next_chat_uses_it(tmp_path: Path) -> None:
    """config.toml keeps its other keys and comments, is 0600, never gets a key; a program
    without a model of its own answers with the new default at once; the form needs CSRF."""
    from minetune.config import load_settings

    home = Path(os.environ["MINETUNE_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    config = home / "config.toml"
    with FakeOpenAI() as old, FakeOpenAI() as new:
        config.write_text(
            f'# my settings\nmodel = "{fake_spec(old)}"\nretry_limit = 3  # keep\n\n[continual]\nstars = 5\n'
        )
        old.queue("from the old default")
        new.queue("from the new default")
        with served(web_settings(None)) as web:
            first = done(ndjson(web.client, "/api/chat", {"message": "before"}))
            assert "from the old default" in json.dumps(first) and len(old.requests) == 1
            token = csrf_token(web.client, "/setup")
            forged = web.client.post("/setup/default", data={"spec": fake_spec(new)}, headers=HTML)
            assert forged.status_code == 403 and fake_spec(old) in config.read_text()
            page = web.client.post(
                "/setup/default", data={"spec": fake_spec(new), "csrf_token": token}, headers=HTML
            )
            assert page.status_code == 200 and "as the default model" in page.text
            text = config.read_text()
            assert f'model = "{fake_spec(new)}"' in text and fake_spec(old) not in text
            assert "# my settings" in text and "retry_limit = 3  # keep" in text and "[continual]" in text
            assert stat.S_IMODE(config.stat().st_mode) == 0o600
            reread = load_settings()
            assert (reread.model, reread.retry_limit, reread.continual.stars) == (fake_spec(new), 3, 5)
            second = done(ndjson(web.client, "/api/chat", {"message": "after"}))
            assert "from the new default" in json.dumps(second)
            assert (len(old.requests), len(new.requests)) == (1, 1)

            keyed = "openai-compatible:x@http://user:secret@127.0.0.1:9/v1"
            refused = web.client.post(
                "/setup/default", data={"spec": keyed, "csrf_token": token}, headers=HTML
            )
            assert refused.status_code == 400 and "secret" not in config.read_text()
            bad = web.client.post(
                "/setup/default", data={"spec": "nonsense:", "csrf_token": token}, headers=HTML
            )
            assert bad.status_code == 400 and f'model = "{fake_spec(new)}"' in config.read_text()


def test_local_model_folders_are_offered(tmp_path: Path) -> None:
    root = tmp_path / "models"
    (root / "tiny").mkdir(parents=True)
    (root / "tiny" / "config.json").write_text("{}")
    (root / "not-a-model").mkdir()
    with served(web_settings(None, model_roots=(root,))) as web:
        page = web.client.get("/setup", headers=HTML).text
        assert f"hf:{root / 'tiny'}" in page and "not-a-model" not in page
