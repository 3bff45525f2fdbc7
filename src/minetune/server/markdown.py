"""Answers as safe HTML: Markdown rendered by markdown-it-py (CommonMark plus tables and
strikethrough), code blocks highlighted by Pygments, and the result sanitised by nh3 so that only
an allow-list of tags and attributes ever reaches the page (raw HTML in an answer is escaped by
the parser and would be stripped by the sanitiser anyway).

The libraries are imported on first use, so the server starts without them loaded.
"""

from __future__ import annotations

import functools
import html
from typing import Any

# Tags and attributes the rendered Markdown may contain; everything else is removed by nh3.
ALLOWED_TAGS = {
    "p", "br", "hr", "strong", "em", "del", "s", "code", "pre", "span", "div", "blockquote",
    "ul", "ol", "li", "a", "h1", "h2", "h3", "h4", "h5", "h6",
    "table", "thead", "tbody", "tr", "th", "td", "img",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title"},
    "code": {"class"},
    "span": {"class"},
    "div": {"class"},
    "pre": {"class", "data-lang"},
    "ol": {"start"},
    "th": {"style"},
    "td": {"style"},
}
URL_SCHEMES = {"http", "https", "mailto"}


def _highlight(code: str, lang: str, _attrs: str) -> str:
    """A Pygments-highlighted ``<pre>`` for a fenced block (plain, escaped code for an unknown
    language); markdown-it uses it as the whole block when it starts with ``<pre``."""
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import get_lexer_by_name
    from pygments.util import ClassNotFound

    language = lang.strip().split()[0].lower() if lang.strip() else ""
    try:
        lexer = get_lexer_by_name(language) if language else None
    except ClassNotFound:
        lexer = None
    label = f' data-lang="{html.escape(language)}"' if language else ""
    if lexer is None:
        return f'<pre class="code"{label}><code>{html.escape(code)}</code></pre>'
    body = highlight(code, lexer, HtmlFormatter(nowrap=True))
    code_class = f"language-{html.escape(language)}"
    return f'<pre class="code highlight"{label}><code class="{code_class}">{body}</code></pre>'


@functools.cache
def _parser() -> Any:
    from markdown_it import MarkdownIt

    # html=False: raw HTML in the text is shown as text, never passed through.
    return MarkdownIt("commonmark", {"html": False, "linkify": False, "highlight": _highlight}).enable(
        ["table", "strikethrough"]
    )


def sanitize(fragment: str) -> str:
    """``fragment`` with only the allowed tags, attributes and URL schemes left; links get
    ``rel="noopener noreferrer nofollow"``."""
    import nh3

    return str(
        nh3.clean(
            fragment,
            tags=ALLOWED_TAGS,
            attributes=ALLOWED_ATTRIBUTES,
            url_schemes=URL_SCHEMES,
            link_rel="noopener noreferrer nofollow",
            filter_style_properties={"text-align"},  # table column alignment only
        )
    )


def render_markdown(text: str) -> str:
    """Sanitised HTML for the Markdown ``text`` of an answer (also for a half-streamed one: an
    unclosed code fence renders as a code block up to the end)."""
    return sanitize(_parser().render(text))
