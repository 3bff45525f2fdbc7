"""The chat UI in a real headless Chromium (Debian's /usr/bin/chromium through Playwright) against a
real server and loopback fake models: Markdown answers with copy buttons, stop mid-stream,
edit-and-resend branches, search, rename, delete, rating and retry by keyboard, the learning notice,
dark mode, a 390-px phone, and an axe-core scan of every page. Screenshots land in
test-artifacts/screenshots/ (ui-*.png).

axe-core comes from npm into tests/.node (git-ignored); the fixture installs it when missing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from fakes import FakeOpenAI
from minetune.config import Settings
from minetune.errors import NotFoundError
from minetune.server.app import create_app
from minetune.server.markdown import render_markdown
from minetune.store import Store
from serverutil import serve_app
from slowstream import SlowStream
from test_web_browser import ARGS, CHROMIUM, SHOTS
from webchat import WORDS_EMBEDDER, web_settings, word_embedder

ROOT = Path(__file__).resolve().parents[1]
NODE_DIR = ROOT / "tests" / ".node"
AXE = NODE_DIR / "node_modules" / "axe-core" / "axe.min.js"

browser_only = pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("CI"),
    reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium); required in CI",
)


@pytest.fixture(autouse=True)
def words() -> Iterator[str]:
    """The tiny word embedder instead of MiniLM (whose first load takes seconds)."""
    with word_embedder() as name:
        yield name


def ui_settings(fake: FakeOpenAI | None, **overrides: Any) -> Settings:
    overrides.setdefault("embedder", WORDS_EMBEDDER)
    return web_settings(fake, **overrides)


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=15_000)  # a shared 2-core machine can be slow to answer
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@contextmanager
def page_in(browser: Any, **options: Any) -> Iterator[Any]:
    options.setdefault("viewport", {"width": 1280, "height": 900})
    context = browser.new_context(**options)
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        yield page
    finally:
        context.close()


@contextmanager
def server(settings: Settings) -> Iterator[tuple[str, Store]]:
    store = Store.open(settings)
    try:
        with serve_app(create_app(settings)) as url:
            yield url, store
    finally:
        store.close()


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"ui-{name}.png"), full_page=True)


def send(page: Any, message: str) -> None:
    page.fill("#message", message)
    page.keyboard.press("Enter")


@pytest.fixture(scope="session")
def axe_source() -> str:
    """axe.min.js, installed with npm into tests/.node when missing."""
    if not AXE.exists():
        npm = shutil.which("npm")
        if npm is None:
            if os.environ.get("CI"):
                pytest.fail("npm is needed to install axe-core for the accessibility scan")
            pytest.skip("needs npm to install axe-core (npm install --prefix tests/.node axe-core)")
        subprocess.run([npm, "install", "--prefix", str(NODE_DIR), "axe-core"], check=True, timeout=300)
    return AXE.read_text(encoding="utf-8")


def axe_problems(page: Any, axe_source: str) -> list[str]:
    """The serious and critical axe-core violations on the page now, one line each."""
    page.add_script_tag(content=axe_source)
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


# -- the render module (no browser) ---------------------------------------------------------------


def test_markdown_is_rendered_highlighted_and_sanitised() -> None:
    html = render_markdown(
        "**bold** `x`\n\n```python\ndef f():\n    return '<b>'\n```\n\n"
        "<script>alert(1)</script> <img src=x onerror=alert(1)> [a](javascript:alert(1)) [b](https://e.org)"
        "\n\n| n | v |\n|--:|---|\n| 1 | 2 |"
    )
    assert "<strong>bold</strong>" in html and "<code>x</code>" in html
    assert '<span class="k">def</span>' in html  # Pygments tokens
    assert "&lt;b&gt;" in html and "<script" not in html and "<img" not in html
    assert "onerror" not in html.replace("onerror=alert(1)&gt;", "")  # only as escaped text
    assert "javascript:" not in html.split("[a](")[0] and 'href="javascript' not in html
    assert 'href="https://e.org"' in html and "noopener" in html
    assert "<table>" in html and 'style="text-align:right"' in html
    # A half-streamed fence renders as a code block up to the end.
    assert "<pre" in render_markdown("```js\nlet a = 1")


# -- the browser ------------------------------------------------------------------------------------

CODE_ANSWER = "Here is **bold** advice and code:\n\n```python\nprint('hi')\n```\n\nDone."


@browser_only
def test_markdown_copy_buttons_and_keyboard_rating_and_retry(browser: Any, fake_llm: FakeOpenAI) -> None:
    from playwright.sync_api import expect

    fake_llm.queue(CODE_ANSWER, "Second try.", "About dogs: woof.")
    with server(ui_settings(fake_llm)) as (url, store), page_in(browser) as page:
        page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=url)
        page.goto(f"{url}/")
        send(page, "Show me some Python")
        answer = page.locator(".msg.ai.latest")
        expect(answer.locator(".markdown strong")).to_have_text("bold")
        expect(answer.locator("pre.highlight .nb")).to_have_text("print")
        expect(answer.locator(".markdown")).not_to_contain_text("**")
        shot(page, "01-markdown")

        # Copy buttons: the code block, and the whole answer (its Markdown source).
        answer.locator("button.copy-code").click()
        expect(answer.locator("button.copy-code")).to_have_text("Copied")
        assert page.evaluate("navigator.clipboard.readText()") == "print('hi')\n"
        answer.locator("button.copy-answer").click()
        assert page.evaluate("navigator.clipboard.readText()") == CODE_ANSWER

        # Rating by keyboard (focus outside a text field), then retry with "r".
        first_id = int(answer.get_attribute("data-attempt-id") or 0)
        page.locator("#thread-title").click()
        page.keyboard.press("4")
        expect(page.locator(f"#attempt-{first_id} .rating-status")).to_contain_text("Rated 4★")
        assert [(f.kind, f.stars) for f in store.attempt(first_id).feedback] == [("explicit", 4)]
        page.locator("#thread-title").click()
        page.keyboard.press("r")
        expect(page.locator(".msg.ai.latest .markdown")).to_have_text("Second try.")
        expect(page.locator(".turn .msg.ai")).to_have_count(2)
        # Typing digits into the composer types them; it rates nothing.
        page.locator("#message").press("5")
        expect(page.locator("#message")).to_have_value("5")
        assert len(store.attempt(first_id).feedback) == 1
        page.fill("#message", "")


@browser_only
def test_search_rename_and_delete_in_the_sidebar(browser: Any, fake_llm: FakeOpenAI) -> None:
    from playwright.sync_api import expect

    fake_llm.queue(CODE_ANSWER, "About dogs: woof.")
    with server(ui_settings(fake_llm)) as (url, store), page_in(browser) as page:
        page.goto(f"{url}/")
        send(page, "Show me some Python")
        expect(page.locator(".msg.ai.latest .markdown strong")).to_have_text("bold")
        first_id = int(page.locator(".msg.ai.latest").get_attribute("data-attempt-id") or 0)

        # Rename.
        page.locator("#rename").click()
        page.fill("#rename-title", "Python help")
        page.locator("#rename-form button[type=submit]").click()
        expect(page.locator("#thread-title")).to_have_text("Python help")
        expect(page.locator("#conversations a.active .title")).to_have_text("Python help")

        # A second conversation, then search finds each by its words.
        page.locator("#new-conversation").click()
        send(page, "Tell me about dogs")
        expect(page.locator(".msg.ai.latest .markdown")).to_have_text("About dogs: woof.")
        expect(page.locator("#conversations li a")).to_have_count(2)
        page.fill("#search", "woof")
        expect(page.locator("#conversations li a")).to_have_count(1)
        expect(page.locator("#conversations li a .title")).to_have_text("Tell me about dogs")
        page.fill("#search", "python")
        expect(page.locator("#conversations li a .title")).to_have_text("Python help")
        page.fill("#search", "no such words")
        expect(page.locator("#no-conversations")).to_have_text("No conversation matches.")
        shot(page, "02-search")

        # Delete (through forget): gone from the list and from the store.
        page.fill("#search", "")
        page.locator("#conversations a", has_text="Python help").click()
        expect(page.locator("#thread-title")).to_have_text("Python help")
        conv_id = int(page.locator("#chat").get_attribute("data-root") or 0)
        assert conv_id
        page.once("dialog", lambda dialog: dialog.accept())
        page.locator("#delete").click()
        expect(page.locator("#conversations li a")).to_have_count(1)
        expect(page.locator("#conversations li a .title")).to_have_text("Tell me about dogs")
        with pytest.raises(NotFoundError):
            store.conversation_turn_ids(conv_id)
        with pytest.raises(NotFoundError):
            store.attempt(first_id)


@browser_only
def test_stop_mid_stream_keeps_the_partial_answer_rateable(browser: Any) -> None:
    from playwright.sync_api import expect

    with SlowStream(count=400, interval=0.03) as slow:
        settings = ui_settings(None, model=slow.spec)
        with server(settings) as (url, store), page_in(browser) as page:
            page.goto(f"{url}/")
            send(page, "Count slowly")
            pending = page.locator(".msg.ai.pending .text")
            expect(pending).to_contain_text("w5 ")
            expect(page.locator("#stop")).to_be_visible()
            shot(page, "03-streaming")
            page.locator("#stop").click()
            answer = page.locator(".msg.ai.latest[data-attempt-id]")
            expect(answer).to_have_count(1)
            expect(page.locator("#stop")).to_be_hidden()
            attempt_id = int(answer.get_attribute("data-attempt-id") or 0)
            stored = store.attempt(attempt_id)
            assert stored.status == "complete" and stored.extra == {"finish_reason": "stopped"}
            assert stored.response.startswith("w0 w1 w2 w3 w4 w5 ") and len(stored.response) < len(
                slow.text()
            )
            expect(answer.locator(".markdown")).to_have_text(stored.response.strip())
            answer.locator('.star[data-stars="2"]').click()
            expect(answer.locator(".rating-status")).to_contain_text("Rated 2★")
            assert [(f.kind, f.stars) for f in store.attempt(attempt_id).feedback] == [("explicit", 2)]
            shot(page, "04-stopped-and-rated")


@browser_only
def test_edit_and_resend_starts_a_branch_and_keeps_the_old_one(browser: Any, fake_llm: FakeOpenAI) -> None:
    from playwright.sync_api import expect

    fake_llm.queue("Paris.", "About 2.1 million.", "About 12 million.")
    with server(ui_settings(fake_llm)) as (url, store), page_in(browser) as page:
        page.goto(f"{url}/")
        send(page, "Capital of France?")
        expect(page.locator(".msg.ai.latest .markdown")).to_have_text("Paris.")
        send(page, "Population of the city?")
        expect(page.locator(".turn").nth(1).locator(".msg.ai.latest .markdown")).to_have_text(
            "About 2.1 million."
        )
        root = int(page.locator("#chat").get_attribute("data-root") or 0)

        second = page.locator(".turn").nth(1)
        second.locator("button.edit-message").click()
        second.locator("textarea.edit-box").fill("Population of the metro area?")
        second.locator(".edit-form button[type=submit]").click()
        edited = page.locator(".turn").nth(1)
        expect(edited.locator(".msg.ai.latest .markdown")).to_have_text("About 12 million.")
        expect(edited.locator(".msg.user > .text")).to_have_text("Population of the metro area?")
        expect(edited.locator(".branch-pos")).to_have_text("2/2")
        expect(page.locator(".turn").first.locator(".msg.ai .markdown")).to_have_text("Paris.")
        # The model saw the first exchange as history, not the replaced message.
        sent = json.dumps(fake_llm.requests[-1]["messages"])
        assert "Capital of France?" in sent and "Paris." in sent and "Population of the city?" not in sent
        # Still one conversation in the list; the URL names the branch.
        expect(page.locator("#conversations li a")).to_have_count(1)
        expect(page.locator("#conversations a.active")).to_have_attribute("data-conversation-id", str(root))
        assert f"c={root}" not in page.url
        shot(page, "05-branch-2-of-2")

        # The old branch is still there, one click away.
        edited.locator(".branches a.prev").click()
        old = page.locator(".turn").nth(1)
        expect(old.locator(".branch-pos")).to_have_text("1/2")
        expect(old.locator(".msg.user > .text")).to_have_text("Population of the city?")
        expect(old.locator(".msg.ai.latest .markdown")).to_have_text("About 2.1 million.")
        assert f"c={root}" in page.url
        shot(page, "06-branch-1-of-2")
        assert len(store.conversation_turn_ids(root)) == 2


@browser_only
def test_learning_notice_when_a_critique_becomes_a_rule(browser: Any, fake_llm: FakeOpenAI) -> None:
    from playwright.sync_api import expect

    fake_llm.queue("A very long answer about names.")
    fake_llm.reflection_replies.append('{"rule": "Answer with one name only.", "supersedes": []}')
    settings = ui_settings(fake_llm, reoptimize=True)
    with server(settings) as (url, store), page_in(browser) as page:
        page.goto(f"{url}/")
        send(page, "Name for my cat?")
        answer = page.locator(".msg.ai.latest")
        expect(answer.locator(".markdown")).to_have_text("A very long answer about names.")
        before = store.active_version().number
        answer.locator("textarea.critique").fill("too long, answer with one name only")
        answer.locator('.star[data-stars="2"]').click()
        notice = page.locator("#learn-notice")
        expect(notice).to_be_visible(timeout=20_000)
        after = store.active_version().number
        assert after > before and store.lessons()
        expect(notice).to_have_text(f"learned a rule · now v{after}")
        shot(page, "07-learned-notice")


@pytest.mark.slow  # about 15-30 s: ten pages scanned, three browser contexts
@browser_only
def test_dark_mode_phone_diff_and_no_serious_axe_violations_on_any_page(
    browser: Any, fake_llm: FakeOpenAI, axe_source: str
) -> None:
    from playwright.sync_api import expect

    fake_llm.queue(CODE_ANSWER)
    with server(ui_settings(fake_llm)) as (url, store):
        store.change_lessons(
            "default", note="a rule", add=[{"text": "Answer in one sentence.", "origin": "manual"}]
        )
        with page_in(browser, color_scheme="dark") as page:
            page.goto(f"{url}/")
            send(page, "Show me some Python")
            expect(page.locator(".msg.ai.latest pre.highlight")).to_be_visible()
            expect(page.locator("html")).to_have_attribute("data-theme", "dark")
            background = page.evaluate("getComputedStyle(document.body).backgroundColor")
            assert background == "rgb(20, 23, 30)", background
            shot(page, "08-dark-mode")
            assert axe_problems(page, axe_source) == [], "chat in dark mode"
            # The toggle wins over the system setting and is remembered.
            page.locator("#theme-toggle").click()
            expect(page.locator("html")).to_have_attribute("data-theme", "light")
            page.reload()
            expect(page.locator("html")).to_have_attribute("data-theme", "light")
            expect(page.locator("#theme-toggle")).to_have_attribute("aria-pressed", "false")

        conv = store.attempt(store.latest_attempt_id() or 0).turn_id
        pages = [
            "/",
            f"/?c={store.turn(conv).conversation_id}",
            "/dataset",
            "/rules",
            "/versions",
            "/versions/diff?program=default&old=1&new=2",
            "/training",
            "/compare",
            "/metrics",
            "/setup",
        ]
        with page_in(browser) as page:
            problems = {}
            for path in pages:
                page.goto(f"{url}{path}")
                page.wait_for_load_state("networkidle")
                found = axe_problems(page, axe_source)
                if found:
                    problems[path] = found
            assert problems == {}

            # The version diff: one line per diff line, no blank lines in between.
            page.goto(f"{url}/versions/diff?program=default&old=1&new=2")
            spans = page.locator("#diff span").count()
            lines = page.locator("#diff").inner_text().rstrip("\n").split("\n")
            assert spans > 3 and len(lines) == spans, lines
            height = page.locator("#diff span").first.bounding_box()["height"]
            assert page.locator("#diff").bounding_box()["height"] < (spans + 2) * height
            shot(page, "09-version-diff")

        # A 390-px phone: the header is two lines at most (brand, then the pages in one row).
        with page_in(browser, viewport={"width": 390, "height": 844}, is_mobile=True) as phone:
            for path in ["/", "/metrics", "/versions"]:
                phone.goto(f"{url}{path}")
                header = phone.locator("header.top").bounding_box()
                link = phone.locator("header.top nav a").first.bounding_box()
                assert header["height"] < 3 * link["height"] + 24, (path, header, link)
                tops = set(
                    phone.locator("header.top nav a").evaluate_all(
                        "links => links.map(a => Math.round(a.getBoundingClientRect().top))"
                    )
                )
                assert len(tops) == 1, (path, tops)
                width = phone.evaluate("document.documentElement.scrollWidth")
                assert width <= 390, (path, width)
            phone.goto(f"{url}/")
            shot(phone, "10-phone-390")

    # The login page (and the header with a user) of a server that requires tokens.
    from webusers import two_users

    with two_users(ui_settings(None)) as users, page_in(browser) as page:
        page.goto(f"{users.base_url}/login")
        expect(page.locator("input[name=token]")).to_be_visible()
        assert axe_problems(page, axe_source) == [], "login"
        shot(page, "11-login")


# -- the same operations over HTTP (both backends, no browser) -------------------------------------


def test_edit_branches_search_rename_and_delete_over_http(database_url: str, fake_llm: FakeOpenAI) -> None:
    from sqlalchemy import func, select

    from minetune.store.schema import Conversation
    from webchat import done, ndjson
    from webusers import served

    fake_llm.queue("Paris.", "2.1 million.", "Yes: wine.", "12 million.", "Lots.", "Thirteen.")
    with served(ui_settings(fake_llm)) as web:
        http = web.client

        def chat(body: dict[str, Any]) -> dict[str, Any]:
            return done(ndjson(http, "/api/chat", body))

        first = chat({"message": "Capital of France?"})
        root = first["conversation_id"]
        second = chat({"message": "Population of the city?", "conversation_id": root})
        chat({"message": "Anything else?", "conversation_id": root})

        # Edit the second message: a branch that shares the first exchange only.
        edited = chat({"message": "Population of the metro area?", "edit_of": second["turn"]["id"]})
        branch = edited["conversation_id"]
        assert branch != root and edited["turn"]["index"] == second["turn"]["index"]
        sent = json.dumps(fake_llm.last["messages"])
        assert "Capital of France?" in sent and "Paris." in sent
        assert "Population of the city?" not in sent and "Anything else?" not in sent

        view = http.get(f"/api/conversations/{branch}").json()
        assert view["conversation"]["root_id"] == root
        assert [t["user_message"] for t in view["turns"]] == [
            "Capital of France?",
            "Population of the metro area?",
        ]
        assert "branch" not in view["turns"][0]
        assert view["turns"][1]["branch"] == {"conversations": [root, branch], "shown": 1}
        original = http.get(f"/api/conversations/{root}").json()
        assert len(original["turns"]) == 3 and original["turns"][1]["branch"] == {
            "conversations": [root, branch],
            "shown": 0,
        }

        # The branch goes on with its own history; a branch of the branch shares both prefixes.
        more = chat({"message": "And its area?", "conversation_id": branch})
        assert "Population of the metro area?" in json.dumps(fake_llm.last["messages"])
        nested = chat({"message": "And its age?", "edit_of": more["turn"]["id"]})["conversation_id"]
        deep = http.get(f"/api/conversations/{nested}").json()
        assert [t["user_message"] for t in deep["turns"]] == [
            "Capital of France?",
            "Population of the metro area?",
            "And its age?",
        ]
        assert deep["turns"][1]["branch"]["shown"] == 1 and deep["turns"][2]["branch"] == {
            "conversations": [branch, nested],
            "shown": 1,
        }
        assert deep["conversation"]["root_id"] == root

        # One conversation listed; search reaches text in any branch; rename names the tree.
        listed = http.get("/api/conversations").json()["conversations"]
        assert [c["id"] for c in listed] == [root]
        assert [
            c["id"] for c in http.get("/api/conversations", params={"q": "METRO"}).json()["conversations"]
        ] == [root]
        assert http.get("/api/conversations", params={"q": "100%_"}).json()["conversations"] == []
        assert http.get("/api/conversations", params={"q": "a\x00b"}).status_code == 400
        renamed = http.post(f"/api/conversations/{nested}/rename", json={"title": "  Paris   facts "})
        assert renamed.status_code == 200 and renamed.json()["title"] == "Paris facts"
        assert http.get("/api/conversations").json()["conversations"][0]["title"] == "Paris facts"
        assert http.post(f"/api/conversations/{root}/rename", json={"title": " "}).status_code == 400

        # A failed edit leaves no empty branch behind.
        with web.store.db.transaction() as s:
            before = s.scalar(select(func.count()).select_from(Conversation))
        fake_llm.fail_next(500, "upstream down")
        with http.stream(
            "POST", "/api/chat", json={"message": "x?", "edit_of": first["turn"]["id"]}
        ) as reply:
            reply.read()
            assert reply.status_code >= 400
        with web.store.db.transaction() as s:
            assert s.scalar(select(func.count()).select_from(Conversation)) == before

        # Delete any member: the whole tree is forgotten.
        deleted = http.delete(f"/api/conversations/{branch}")
        assert deleted.status_code == 200, deleted.text
        assert sorted(deleted.json()["deleted"]) == sorted([root, branch, nested])
        assert http.get("/api/conversations").json()["conversations"] == []
        assert http.get(f"/api/conversations/{root}").status_code == 404
        assert http.delete(f"/api/conversations/{root}").status_code == 404


def test_stream_snapshots_are_rendered_html_and_stop_keeps_the_text_so_far(fake_llm: FakeOpenAI) -> None:
    import threading

    import httpx

    from webchat import done, ndjson
    from webusers import served

    fake_llm.queue("Some **bold** words and `code` here, streamed in several pieces for the test.")
    with served(ui_settings(fake_llm)) as web:
        events = ndjson(web.client, "/api/chat", {"message": "Say it in Markdown"})
        assert events[0]["type"] == "start" and events[0]["stream"]
        snapshots = [e["html"] for e in events if e["type"] == "delta" and "html" in e]
        assert snapshots and snapshots[0].startswith("<p>")
        attempt = done(events)["turn"]["attempts"][0]
        assert "<strong>bold</strong>" in attempt["html"] and "<code>code</code>" in attempt["html"]
        assert http_status(web.client.post("/api/streams/no-such-token/stop")) == 404
        learning = web.client.get("/api/programs/default/learning").json()
        assert learning == {
            "program": "default",
            "version": 1,
            "note": learning["note"],
            "rules": 0,
            "learning": False,
        }
        assert web.client.get("/api/programs/nope/learning").status_code == 404

    with SlowStream(count=500, interval=0.02) as slow, served(ui_settings(None, model=slow.spec)) as web:
        seen: list[dict[str, Any]] = []
        with web.client.stream("POST", "/api/chat", json={"message": "Count"}) as reply:
            lines = reply.iter_lines()
            for line in lines:
                seen.append(json.loads(line))
                if sum(e["type"] == "delta" for e in seen) >= 5:
                    break
            token = seen[0]["stream"]
            with httpx.Client(base_url=web.base_url, headers={"Accept": "application/json"}) as other:
                stopper = threading.Thread(target=lambda: other.post(f"/api/streams/{token}/stop"))
                stopper.start()
                seen += [json.loads(line) for line in lines if line.strip()]
                stopper.join()
        result = done(seen)
        stored = web.store.attempt(result["attempt_id"])
        assert stored.status == "complete" and stored.extra == {"finish_reason": "stopped"}
        assert 0 < len(stored.response) < len(slow.text()) and slow.text().startswith(stored.response)
        rated = web.client.post(f"/api/attempts/{stored.id}/rate", json={"stars": 3})
        assert rated.status_code == 200 and rated.json()["stars"] == 3


def http_status(response: Any) -> int:
    return int(response.status_code)
