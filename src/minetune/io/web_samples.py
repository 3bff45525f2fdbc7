"""A website as persona (brand voice) samples: same-site pages, main text by trafilatura.

:func:`fetch_site` starts at a URL and follows links breadth-first, only to pages on the same
site (scheme, host and port), until ``max_pages`` HTML pages have been read; each response is
capped at ``max_page_bytes`` and every request at ``timeout`` seconds. :func:`page_transcript`
turns a page's main text (trafilatura, Markdown output) into ``Name: message`` lines the persona
bootstrap reads: each heading (or the page title) is what a visitor asks, and the paragraphs under
it are the site's reply in its own words.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urldefrag, urljoin, urlsplit

import httpx

from minetune.errors import MinetuneError

DEFAULT_MAX_PAGES = 10
MAX_PAGE_BYTES = 2 * 1024 * 1024
TIMEOUT_S = 10.0
VISITOR = "Visitor"


class WebSampleError(MinetuneError):
    """A website cannot be used as a sample."""


@dataclass(frozen=True)
class WebPage:
    """One fetched page: its URL, title and main text (Markdown, from trafilatura)."""

    url: str
    title: str
    text: str


@dataclass
class SiteSamples:
    """The pages read from one site, and the pages skipped (one line each)."""

    start_url: str
    pages: list[WebPage]
    warnings: list[str] = field(default_factory=list)


def is_url(value: str) -> bool:
    """Whether ``value`` is an http(s) URL with a host."""
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _site(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


class _LinksAndTitle(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            href = dict(attrs).get("href")
            if href:
                self.links.append(href)
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data


def _get(client: httpx.Client, url: str, max_bytes: int) -> tuple[str, str]:
    """(final URL, HTML text) of ``url``; WebSampleError with a one-line reason otherwise."""
    try:
        with client.stream("GET", url) as response:
            if response.status_code != 200:
                raise WebSampleError(f"{url} answered HTTP {response.status_code}.")
            kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if kind not in ("text/html", "application/xhtml+xml"):
                raise WebSampleError(f"{url} is not an HTML page ({kind or 'no content type'}).")
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise WebSampleError(f"{url} is larger than {max_bytes // 1024} KiB.")
            encoding = response.encoding or "utf-8"
            return str(response.url), bytes(body).decode(encoding, errors="replace")
    except httpx.TimeoutException:
        raise WebSampleError(f"{url} did not answer in time.") from None
    except httpx.HTTPError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WebSampleError(f"Cannot fetch {url}: {reason[:160]}.") from None


def main_text(html: str, url: str) -> str:
    """The main text of a page as Markdown (trafilatura), '' when it finds none."""
    try:
        import trafilatura
    except ImportError:
        raise WebSampleError(
            "Reading websites needs trafilatura: pip install 'minetune[web]' (or pip install trafilatura)."
        ) from None
    # Precision first: a voice sample wants the site's own prose, not its menus and footers.
    for precision in (True, False):
        text = trafilatura.extract(
            html, url=url, output_format="markdown", include_comments=False, favor_precision=precision
        )
        if text and text.strip():
            return text.strip()
    return ""


def fetch_site(
    url: str,
    *,
    max_pages: int = DEFAULT_MAX_PAGES,
    max_page_bytes: int = MAX_PAGE_BYTES,
    timeout: float = TIMEOUT_S,
    transport: httpx.BaseTransport | None = None,
) -> SiteSamples:
    """Up to ``max_pages`` pages of the site at ``url``, breadth-first over same-site links.

    The first page must load (else :class:`WebSampleError`); a later page that fails or is not HTML
    is skipped with a warning. Pages without main text are skipped; when no page has any, that is
    an error too.
    """
    if not is_url(url):
        raise WebSampleError(f"{url!r} is not an http(s) URL.")
    if max_pages < 1:
        raise WebSampleError("--max-pages must be at least 1.")
    site = _site(url)
    start = urldefrag(url).url
    queue: deque[str] = deque([start])
    seen = {start}
    pages: list[WebPage] = []
    warnings: list[str] = []
    fetched = 0
    with httpx.Client(
        timeout=timeout, follow_redirects=True, transport=transport, headers={"User-Agent": "minetune"}
    ) as client:
        while queue and fetched < max_pages:
            current = queue.popleft()
            try:
                final_url, html = _get(client, current, max_page_bytes)
                if _site(final_url) != site:
                    raise WebSampleError(f"{current} redirects off the site to {final_url}.")
            except WebSampleError as exc:
                if fetched == 0 and not pages:
                    raise
                warnings.append(f"skipped: {exc}")
                continue
            fetched += 1
            parser = _LinksAndTitle()
            parser.feed(html)
            for href in parser.links:
                link = urldefrag(urljoin(final_url, href)).url
                if is_url(link) and _site(link) == site and link not in seen:
                    seen.add(link)
                    queue.append(link)
            text = main_text(html, final_url)
            title = " ".join(parser.title.split())
            if text:
                pages.append(WebPage(url=final_url, title=title, text=text))
            else:
                warnings.append(f"skipped: {final_url} has no main text.")
    if not pages:
        raise WebSampleError(f"No page of {url} has any main text to learn from.")
    return SiteSamples(start_url=url, pages=pages, warnings=warnings)


_HEADING = re.compile(r"^#{1,6}\s+(.*)$")


def page_transcript(page: WebPage, speaker: str) -> str:
    """The page as ``Visitor: <heading>`` / ``<speaker>: <paragraphs>`` lines.

    Each Markdown heading (the page title for text before the first heading) opens an exchange;
    the paragraphs (lines) under it, joined, are ``speaker``'s reply. Sections without paragraphs
    are left out.
    """
    sections: list[tuple[str, list[str]]] = [(page.title or page.url, [])]
    for line in page.text.split("\n"):
        block = " ".join(line.split())
        if not block:
            continue
        if found := _HEADING.match(block):
            sections.append((found.group(1).strip(), []))
        else:
            sections[-1][1].append(block.lstrip("-*> ").strip())
    lines: list[str] = []
    for title, paragraphs in sections:
        body = "\n".join(p for p in paragraphs if p)
        if body:
            lines += [f"{VISITOR}: {title}", f"{speaker}: {body}", ""]
    return "\n".join(lines)


def site_speaker(url: str) -> str:
    """A speaker name for a site: its host without ``www.`` (``acme.example``); ``Site`` for an IP address."""
    host = (urlsplit(url).hostname or "").lower().removeprefix("www.")
    return host if re.fullmatch(r"[a-z][a-z0-9.-]*", host) else "Site"
