"""Browser acceptance test: a real Chromium (Debian's /usr/bin/chromium through Playwright) drives
the web UI against a real server and the loopback fake model. Screenshots of every step land in
test-artifacts/screenshots/."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fakes import FakeOpenAI
from minetune.errors import NotFoundError
from minetune.server.app import create_app
from minetune.store import Store
from serverutil import serve_app
from webchat import web_settings, word_embedder

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("CI"),
    reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium); required in CI",
)


@pytest.fixture
def browser_page() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(20_000)
        try:
            yield page
        finally:
            context.close()
            browser.close()


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def stars_points(page: Any) -> list[dict[str, Any]]:
    return list(json.loads(page.locator("#chart-stars").get_attribute("data-points")))


def test_chat_rate_retry_metrics_and_forget_in_a_real_browser(
    browser_page: Any, fake_llm: FakeOpenAI
) -> None:
    from playwright.sync_api import expect

    page = browser_page
    long_answer = "Cats have many names. Some people like Whiskers, others like Tom, Felix, Luna or Mittens."
    fake_llm.queue(long_answer, "Try Luna.", "Call him Rex.", "Glad it helped!")
    with word_embedder() as embedder:
        settings = web_settings(fake_llm, reoptimize=True, embedder=embedder)
        store = Store.open(settings)
        app = create_app(settings)
        try:
            with serve_app(app) as url:
                # 1. Chat: the answer streams into the page.
                page.goto(f"{url}/")
                expect(page.locator("#message")).to_be_focused()
                shot(page, "01-chat-empty")
                page.fill("#message", "What is a good name for my cat?")
                page.keyboard.press("Enter")
                answer = page.locator(".msg.ai.latest .text")
                expect(answer).to_have_text(long_answer)
                expect(page.locator("#conversations a.active")).to_have_text(
                    "What is a good name for my cat?"
                )
                assert fake_llm.requests[0]["stream"] is True
                shot(page, "02-streamed-answer")

                # 2. Rate 2 with a critique.
                first = page.locator(".msg.ai.latest")
                first_id = int(first.get_attribute("data-attempt-id") or 0)
                first.locator("textarea.critique").fill("too long, just one name")
                first.locator('.star[data-stars="2"]').click()
                expect(page.locator(f"#attempt-{first_id} .rating-status")).to_contain_text("Rated 2★")
                expect(page.locator(f"#attempt-{first_id}")).to_have_attribute("data-stars", "2")
                shot(page, "03-rated-2-with-critique")

                metrics = page.context.new_page()
                metrics.goto(f"{url}/metrics")
                before = stars_points(metrics)
                assert [p["value"] for p in before] == [2]
                shot(metrics, "04-metrics-before")

                # 3. Retry: the model's second request carries the critique.
                page.locator(f"#attempt-{first_id} button.retry").click()
                expect(page.locator(".turn .msg.ai")).to_have_count(2)
                expect(page.locator(".msg.ai.latest .text")).to_have_text("Try Luna.")
                retry_request = json.dumps(fake_llm.requests[1]["messages"])
                assert "too long, just one name" in retry_request and "rated 2/5" in retry_request
                shot(page, "05-retried")

                # 4. Rate 5: shown in the page, stored in the database, kept across a reload.
                second = page.locator(".msg.ai.latest")
                second_id = int(second.get_attribute("data-attempt-id") or 0)
                second.locator('.star[data-stars="5"]').click()
                expect(page.locator(f"#attempt-{second_id} .rating-status")).to_contain_text("Rated 5★")
                assert [(f.kind, f.stars) for f in store.attempt(second_id).feedback] == [("explicit", 5)]
                turn_id = store.attempt(second_id).turn_id
                assert store.turn(turn_id).attempts_to_5 == 2
                page.reload()
                expect(page.locator(f"#attempt-{second_id}")).to_have_attribute("data-stars", "5")
                expect(page.locator(f"#attempt-{second_id} .rating")).to_have_attribute(
                    "aria-label", "5 stars"
                )
                expect(page.locator(f"#attempt-{first_id}")).to_have_attribute("data-stars", "2")

                # "Why this answer" for the retry.
                page.locator(f"#attempt-{second_id} details.why summary").click()
                expect(page.locator(f"#attempt-{second_id} .why-body")).to_contain_text("Version: v1")
                expect(page.locator(f"#attempt-{second_id} .why-body")).to_contain_text(
                    "too long, just one name"
                )
                shot(page, "06-rated-5-and-why")

                # 5. The metrics plot changed.
                metrics.reload()
                after = stars_points(metrics)
                assert after != before and [p["value"] for p in after] == [2, 5]
                expect(metrics.locator("#chart-stars circle.point")).to_have_count(2)
                expect(metrics.locator('#chart-attempts circle.point[data-value="2"]')).to_have_count(1)
                shot(metrics, "07-metrics-after")

                # 6. Praise in a new conversation marks the previous answer 5 stars.
                page.locator("#new-conversation").click()
                page.fill("#message", "Name a dog")
                page.keyboard.press("Enter")
                expect(page.locator(".msg.ai.latest .text")).to_have_text("Call him Rex.")
                page.fill("#message", "perfect, thanks!")
                page.keyboard.press("Enter")
                expect(page.locator(".praise-note")).to_contain_text("marked 5★")
                praised = page.locator(".turn").first.locator(".msg.ai.latest")
                expect(praised).to_have_attribute("data-stars", "5")
                shot(page, "08-praise")

                # 7. Forget the first turn on the dataset page: gone from the page and the database.
                page.goto(f"{url}/dataset")
                row = page.locator(f"#turn-{turn_id}")
                expect(row).to_contain_text("What is a good name for my cat?")
                shot(page, "09-dataset")
                page.once("dialog", lambda dialog: dialog.accept())
                row.locator('button[data-action="forget"]').click()
                expect(row).to_have_count(0)
                with pytest.raises(NotFoundError):
                    store.turn(turn_id)
                page.reload()
                expect(page.locator(f"#turn-{turn_id}")).to_have_count(0)
                expect(page.locator("table.dataset")).to_contain_text("Name a dog")
                shot(page, "10-dataset-forgotten")
        finally:
            store.close()
