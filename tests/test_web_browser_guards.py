"""The guards in a real Chromium: the web app's own forms (login, add a rule) work with their CSRF
tokens, and a hostile page on another localhost port — same site, so the browser sends the login
cookie — cannot post a form that stores anything."""

from __future__ import annotations

import re
from typing import Any

from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from fakes import FakeOpenAI
from minetune.store.users import issue_token
from serverutil import serve_app
from test_web_browser import browser_page, pytestmark, shot  # noqa: F401  (fixture and skip mark)
from webusers import two_users

ATTACK = """<!doctype html><title>attack</title>
<form id="f" method="post" action="{target}/rules/add"><input name="text" value="Planted by a form."></form>
<script>document.getElementById("f").submit();</script>"""


def _attacker(target: str) -> Starlette:
    async def page(_request: Any) -> HTMLResponse:
        return HTMLResponse(ATTACK.format(target=target))

    return Starlette(routes=[Route("/", page)])


def test_forms_work_and_another_port_cannot_post(browser_page: Any, fake_llm: FakeOpenAI) -> None:  # noqa: F811
    from playwright.sync_api import expect

    page = browser_page
    with two_users() as web:
        token = issue_token(web.store_a.db, "alice")
        page.goto(f"{web.base_url}/login")
        page.fill('input[name="token"]', token)
        page.click('button[type="submit"]')
        page.wait_for_url(f"{web.base_url}/")
        page.goto(f"{web.base_url}/rules")
        page.fill('textarea[name="text"]', "Answer in British English.")
        page.click("text=Add rule")
        expect(page.locator("#active-rules")).to_contain_text("Answer in British English.")
        shot(page, "guards-1-rule-added")
        before = web.store_a.row_counts()

        with serve_app(_attacker(web.base_url)) as evil:
            assert evil.rsplit(":", 1)[1] != web.base_url.rsplit(":", 1)[1]
            page.goto(f"{evil}/")
            page.wait_for_url(re.compile(re.escape(web.base_url) + "/"))  # the form went to minetune
            expect(page.locator("body")).to_contain_text("Cross-origin request refused")
            shot(page, "guards-2-cross-port-form-refused")
        assert web.store_a.row_counts() == before
        assert [lesson.text for lesson in web.store_a.lessons()] == ["Answer in British English."]
