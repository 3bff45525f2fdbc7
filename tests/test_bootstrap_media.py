"""`minetune bootstrap` from a chat screenshot (rendered by Chromium, read by a loopback fake vision
model) and from a small website served on 127.0.0.1 (same-site pages only), plus bad inputs."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from fakes import FakeOpenAI
from minetune.cli import app
from minetune.config import load_settings
from minetune.store import Store
from minetune.store.schema import Attempt, Conversation, Turn

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

CHAT_HTML = """<!doctype html><html><body style="font: 18px sans-serif; width: 420px">
<div style="text-align:left"><b>Sam</b><p>are you coming to the gig tonight?</p></div>
<div style="text-align:right"><b>Jo</b><p>obviously!! wouldn't miss it for the world</p></div>
<div style="text-align:left"><b>Sam</b><p>bring earplugs, it gets loud</p></div>
<div style="text-align:right"><b>Jo</b><p>earplugs are for quitters lol</p></div>
</body></html>"""

# What the fake vision model "reads" from the screenshot.
TRANSCRIPT = (
    "Sam: are you coming to the gig tonight?\n"
    "Jo: obviously!! wouldn't miss it for the world\n"
    "Sam: bring earplugs, it gets loud\n"
    "Jo: earplugs are for quitters lol\n"
)

PAGES = {
    "index.html": ("Acme Roasters", "Hello from Acme", "We roast every bean by hand in small batches."),
    "beans.html": ("Our beans", "Who grows our beans", "Three family farms in Huila grow our beans."),
    "visit.html": ("Visit", "Opening hours", "Open daily from seven, with free refills for your own mug."),
}


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """The console entry point in a subprocess, so user errors are rendered as the user sees them."""
    return subprocess.run(
        [sys.executable, "-m", "minetune.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "40"},
        timeout=120,
    )


def open_store() -> Store:
    return Store.open(load_settings())


def counts() -> dict[str, int]:
    store = open_store()
    try:
        return store.row_counts()
    finally:
        store.close()


def active_instructions() -> str:
    store = open_store()
    try:
        return store.active_version("default").instructions
    finally:
        store.close()


def stored_replies() -> dict[str, list[str]]:
    """Bootstrap conversation title -> the persona replies stored in it, in order."""
    store = open_store()
    try:
        with store.db.transaction() as s:
            rows = s.execute(
                select(Conversation.title, Attempt.response)
                .join(Turn, Turn.conversation_id == Conversation.id)
                .join(Attempt, Attempt.turn_id == Turn.id)
                .where(Conversation.source == "bootstrap")
                .order_by(Conversation.id, Turn.id)
            ).all()
        replies: dict[str, list[str]] = {}
        for title, response in rows:
            replies.setdefault(title or "", []).append(response)
        return replies
    finally:
        store.close()


class Site:
    """Static files served on 127.0.0.1 in a thread; ``paths`` records every requested path."""

    def __init__(self, root: Path) -> None:
        self.paths: list[str] = []
        seen = self.paths

        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                seen.append(self.path)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sites(tmp_path: Path) -> Iterator[tuple[Site, Site]]:
    """A three-page site linking to itself and to a page on a second (off-site) server."""
    off_root = tmp_path / "offsite"
    off_root.mkdir()
    (off_root / "elsewhere.html").write_text("<html><body><p>Never fetch me.</p></body></html>")
    offsite = Site(off_root)
    root = tmp_path / "site"
    root.mkdir()
    nav = " ".join(f'<a href="/{name}">{title}</a>' for name, (title, _, _) in PAGES.items())
    for name, (title, heading, text) in PAGES.items():
        (root / name).write_text(
            f"<!doctype html><html><head><title>{title}</title></head><body><nav>{nav} "
            f'<a href="{offsite.url}/elsewhere.html">Partner</a></nav>'
            f"<main><article><h1>{heading}</h1><p>{text}</p></article></main></body></html>",
            encoding="utf-8",
        )
    site = Site(root)
    try:
        yield site, offsite
    finally:
        site.close()
        offsite.close()


def screenshot(path: Path) -> bytes:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 480, "height": 360})
            page.set_content(CHAT_HTML)
            data: bytes = page.screenshot(type="png")
        finally:
            browser.close()
    path.write_bytes(data)
    return data


def image_parts(body: dict[str, Any]) -> list[dict[str, Any]]:
    content = body["messages"][-1]["content"]
    return [p for p in content if p.get("type") == "image_url"] if isinstance(content, list) else []


@pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("CI"),
    reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium); required in CI",
)
def test_bootstrap_from_a_chromium_screenshot(
    database_url: str, fake_llm: FakeOpenAI, tmp_path: Path
) -> None:
    png = screenshot(tmp_path / "chat.png")
    assert png.startswith(b"\x89PNG")
    fake_llm.responder = lambda body: TRANSCRIPT if image_parts(body) else "not JSON"
    spec = f"openai-compatible:vision@{fake_llm.base_url}"

    result = cli("bootstrap", str(tmp_path / "chat.png"), "--no-llm", "--vision-model", spec)
    assert result.exit_code == 0, result.output
    assert "Bootstrapped default v2 from 1 sample(s): 2 pairs" in " ".join(result.output.split())

    # One vision request, carrying exactly the screenshot's bytes as a data: URL.
    assert len(fake_llm.requests) == 1
    parts = image_parts(fake_llm.last)
    assert len(parts) == 1
    url = parts[0]["image_url"]["url"]
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix) and base64.b64decode(url[len(prefix) :]) == png
    assert fake_llm.last["model"] == "vision"

    instructions = active_instructions()
    assert "Speak as Jo." in instructions
    assert "are you coming to the gig tonight?" in instructions
    assert "earplugs are for quitters lol" in instructions
    assert stored_replies() == {
        "Bootstrap: chat.png": ["obviously!! wouldn't miss it for the world", "earplugs are for quitters lol"]
    }


def test_bootstrap_from_a_local_website(database_url: str, sites: tuple[Site, Site]) -> None:
    site, offsite = sites
    result = cli("bootstrap", f"{site.url}/index.html", "--no-llm", "--assistant-name", "Acme")
    assert result.exit_code == 0, result.output
    assert "from 3 sample(s): 3 pairs" in " ".join(result.output.split())

    assert sorted(site.paths) == ["/beans.html", "/index.html", "/visit.html"]
    assert offsite.paths == []  # the off-site link was never followed

    instructions = active_instructions()
    assert "Speak as Acme." in instructions
    for _, heading, text in PAGES.values():
        assert heading in instructions and text in instructions
    replies = stored_replies()
    assert replies == {f"Bootstrap: {site.url}/{name}": [text] for name, (_, _, text) in PAGES.items()}


def test_max_pages_limits_the_crawl(database_url: str, sites: tuple[Site, Site]) -> None:
    site, _ = sites
    result = cli("bootstrap", f"{site.url}/index.html", "--no-llm", "--max-pages", "2")
    assert result.exit_code == 0, result.output
    assert len(site.paths) == 2 and site.paths[0] == "/index.html"
    assert len(stored_replies()) == 2


def test_bad_inputs_give_one_line_and_store_nothing(
    database_url: str, sites: tuple[Site, Site], fake_llm: FakeOpenAI, tmp_path: Path
) -> None:
    site, _ = sites
    sample = Path(__file__).parent / "data" / "persona" / "timmy.txt"
    assert run("bootstrap", str(sample), "--no-llm").returncode == 0
    before, instructions = counts(), active_instructions()

    missing = run("bootstrap", str(sample), f"{site.url}/missing.html", "--no-llm")
    assert missing.returncode == 1
    assert missing.stderr.strip().count("\n") == 0 and "Traceback" not in missing.stderr
    assert "HTTP 404" in missing.stderr

    fake_png = tmp_path / "notes.png"
    fake_png.write_text("Sam: this is text, not a picture\nJo: right\n", encoding="utf-8")
    spec = f"openai-compatible:vision@{fake_llm.base_url}"
    bad_image = run("bootstrap", str(fake_png), "--no-llm", "--vision-model", spec)
    assert bad_image.returncode == 1
    assert bad_image.stderr.strip().count("\n") == 0 and "Traceback" not in bad_image.stderr
    assert "notes.png is not a PNG, JPEG or WebP image" in " ".join(bad_image.stderr.split())
    assert fake_llm.requests == []  # rejected before any model call

    assert counts() == before and active_instructions() == instructions
