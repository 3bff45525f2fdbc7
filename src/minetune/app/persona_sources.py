"""Persona bootstrap from any mix of sample files, conversation screenshots and websites.

Each source is read before anything is stored: text/PDF files are checked first (cheap), then
every screenshot goes to the vision model (:mod:`minetune.io.image_samples`) and every website is
crawled (:mod:`minetune.io.web_samples`); only then does :func:`minetune.learn.persona.bootstrap`
extract pairs and write the conversations and the new version — so a bad input changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from minetune.io.image_samples import is_image_path, read_image, transcribe_screenshot
from minetune.io.web_samples import DEFAULT_MAX_PAGES, fetch_site, is_url, page_transcript, site_speaker
from minetune.learn.persona import BootstrapReport, bootstrap, read_sample

if TYPE_CHECKING:
    from minetune.config import Settings
    from minetune.store import Store


def bootstrap_from_sources(
    store: Store,
    settings: Settings,
    program: str,
    sources: Sequence[str | Path],
    *,
    model: str | None = None,
    use_llm: bool = True,
    vision_model: str | None = None,
    assistant_name: str | None = None,
    max_pages: int = DEFAULT_MAX_PAGES,
) -> BootstrapReport:
    """Bootstrap ``program``'s persona from ``sources``: files, image files, or http(s) URLs.

    ``model`` (default: the program's model, else the configured one) extracts pairs and describes
    the voice unless ``use_llm`` is false; ``vision_model`` (default: the same model) transcribes
    screenshots, also without ``use_llm``. A website's pages are read as exchanges between a
    visitor and ``assistant_name`` (default: the site's host name). Fetch warnings join the report's.
    """
    from minetune.models import resolve_model

    files = [Path(s) for s in sources if not _is_url(s) and not is_image_path(s)]
    images = [Path(s) for s in sources if not _is_url(s) and is_image_path(s)]
    urls = [str(s) for s in sources if _is_url(s)]
    for path in files:
        read_sample(path)  # a bad file or image fails before any model call or download
    for path in images:
        read_image(path)
    default_spec = model or store.active_version(program).model_spec
    chat_model = resolve_model(settings, default_spec) if use_llm else None

    texts: list[tuple[str, str]] = []
    if images:
        reader = resolve_model(settings, vision_model or default_spec)
        texts += [(path.name, transcribe_screenshot(path, reader)) for path in images]
    warnings: list[str] = []
    persona = assistant_name.strip() if assistant_name and assistant_name.strip() else None
    for url in urls:
        site = fetch_site(url, max_pages=max_pages)
        warnings += [f"{url}: {w}" for w in site.warnings]
        speaker = persona or site_speaker(url)
        transcripts = [(page.url, page_transcript(page, speaker)) for page in site.pages]
        texts += [(name, text) for name, text in transcripts if text]

    report = bootstrap(store, program, files, chat_model, assistant_name=assistant_name, texts=texts)
    report.warnings = warnings + report.warnings
    return report


def _is_url(source: str | Path) -> bool:
    return isinstance(source, str) and is_url(source)
