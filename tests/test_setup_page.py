"""/setup tests a model spec with one tiny request over real HTTP (the loopback fake) and shows the
answer, or a clear error for a spec that cannot answer; the form needs its CSRF token."""

from __future__ import annotations

from fakes import FakeOpenAI
from webchat import fake_spec, web_settings
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
