"""Which API key goes to which base URL: a key is sent only to the base URLs it is scoped to.

For a request to base URL ``B`` the key is, first match wins:

1. ``[keys]`` in ``config.toml`` maps ``B`` to the *name* of an environment variable (never a key
   value): ``"https://openrouter.ai/api/v1" = "OPENROUTER_API_KEY"``. A mapped URL gets that
   variable or nothing. Mapping a URL to ``"OPENAI_API_KEY"`` is how that key goes elsewhere.
2. ``OPENAI_API_KEY`` when ``B`` is OpenAI's own base URL (``https://api.openai.com/v1``) or the
   ``OPENAI_BASE_URL`` / ``openai_base_url`` the user set.
3. ``MINETUNE_API_KEY`` when ``B`` is the base URL of a model the user configured — ``--model``,
   ``MINETUNE_MODEL``, ``model`` or ``reflection_model`` in config.toml — or the hosted
   fine-tuning base URL the user set (``MINETUNE_FINETUNE_BASE_URL``; ``[finetune] base_url``
   for the fine-tuning calls themselves).
4. The system keyring: service ``minetune``, user name ``B`` (``minetune key set B``).

Any other URL — such as one a program version brought in from an imported bundle — gets no key.
URLs are compared after normalising: scheme and host lower-cased, default ports and trailing
slashes dropped, user info and query ignored. Key values are never stored by minetune, never put
in a repr and never logged; errors name only where a key comes from.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from minetune.config import OPENAI_BASE_URL, Settings

log = logging.getLogger(__name__)

KEYRING_SERVICE = "minetune"
OPENAI_KEY_ENV = "OPENAI_API_KEY"
MINETUNE_KEY_ENV = "MINETUNE_API_KEY"
FINETUNE_URL_ENV = "MINETUNE_FINETUNE_BASE_URL"


@dataclass(frozen=True)
class ApiKey:
    """A key and where it came from (``source`` is safe to show; ``value`` never is)."""

    value: str = field(repr=False)
    source: str


def scope_of(url: str) -> str:
    """``url`` normalised for comparing key scopes: ``scheme://host[:port]/path`` without a
    trailing slash, default port, user info, query or fragment; scheme and host lower-cased."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    default = {"http": 80, "https": 443}.get(scheme)
    netloc = host if port in (None, default) else f"{host}:{port}"
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}"


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def _spec_urls(spec: str | None) -> list[str]:
    """The base URLs an ``openai-compatible:``/``vllm:`` spec talks to (vLLM's with ``/v1``)."""
    if not spec:
        return []
    from minetune.errors import ModelError
    from minetune.models.spec import parse_spec

    try:
        parsed = parse_spec(spec)
    except ModelError:
        return []
    if parsed.base_url is None:
        return []
    urls = [parsed.base_url]
    if parsed.backend == "vllm" and not parsed.base_url.rstrip("/").endswith("/v1"):
        urls.append(parsed.base_url.rstrip("/") + "/v1")
    return urls


def openai_scopes(settings: Settings) -> set[str]:
    """Where ``OPENAI_API_KEY`` may go: OpenAI's base URL and the OpenAI base URL the user set."""
    return {scope_of(OPENAI_BASE_URL), scope_of(settings.openai_base_url)}


def configured_scopes(settings: Settings, also: Iterable[str] = ()) -> set[str]:
    """Where ``MINETUNE_API_KEY`` may go: the base URLs of the models the user configured, the
    ``MINETUNE_FINETUNE_BASE_URL`` they set (its fine-tuned models are served there), and ``also``
    (URLs the caller knows the user set, e.g. ``[finetune] base_url``)."""
    urls = [*_spec_urls(settings.model), *_spec_urls(settings.reflection_model), *also]
    finetune = _env(FINETUNE_URL_ENV)
    if finetune:
        urls.append(finetune if urlsplit(finetune).path.strip("/") else finetune.rstrip("/") + "/v1")
    return {scope_of(u) for u in urls if u}


def mapped_env(settings: Settings, base_url: str) -> str | None:
    """The environment variable ``[keys]`` in config.toml names for ``base_url``, if any."""
    scope = scope_of(base_url)
    for url, name in settings.keys:
        if scope_of(url) == scope:
            return name
    return None


def keyring_key(base_url: str) -> str | None:
    """The key stored in the system keyring for ``base_url`` (None when there is none, or no
    keyring is usable: a keyring failure never stops a request)."""
    try:
        import keyring
        from keyring.errors import KeyringError

        return keyring.get_password(KEYRING_SERVICE, scope_of(base_url)) or None
    except ImportError:
        return None
    except KeyringError as exc:
        log.debug("No keyring answer for a base URL: %s", type(exc).__name__)
        return None
    except Exception as exc:  # a broken backend (D-Bus, locked store) is no reason to fail
        log.debug("The keyring failed: %s", type(exc).__name__)
        return None


def set_keyring_key(base_url: str, value: str) -> str:
    """Store ``value`` in the system keyring for ``base_url``; the normalised URL it is under."""
    import keyring

    scope = scope_of(base_url)
    keyring.set_password(KEYRING_SERVICE, scope, value)
    return scope


def delete_keyring_key(base_url: str) -> bool:
    """Remove the keyring entry for ``base_url``; False when there was none."""
    import keyring
    from keyring.errors import PasswordDeleteError

    try:
        keyring.delete_password(KEYRING_SERVICE, scope_of(base_url))
    except PasswordDeleteError:
        return False
    return True


def key_for(settings: Settings, base_url: str, *, also: Iterable[str] = ()) -> ApiKey | None:
    """The key scoped to ``base_url`` (see the module docstring), or None: no key is sent."""
    scope = scope_of(base_url)
    mapped = mapped_env(settings, base_url)
    if mapped is not None:
        value = _env(mapped)
        return ApiKey(value, f"{mapped} (config.toml [keys])") if value else None
    if scope in openai_scopes(settings):
        value = _env(OPENAI_KEY_ENV)
        if value:
            return ApiKey(value, OPENAI_KEY_ENV)
    if scope in configured_scopes(settings, also):
        value = _env(MINETUNE_KEY_ENV)
        if value:
            return ApiKey(value, MINETUNE_KEY_ENV)
    value = keyring_key(base_url)
    return ApiKey(value, "the system keyring") if value else None


def key_help(settings: Settings, base_url: str, *, also: Iterable[str] = ()) -> str:
    """How to give ``base_url`` a key (for errors when a server refuses or wants one)."""
    scope = scope_of(base_url)
    mapped = mapped_env(settings, base_url)
    if mapped is not None:
        return f"set {mapped} (config.toml [keys] maps {scope} to it) to a valid key"
    if scope in openai_scopes(settings):
        return f"set {OPENAI_KEY_ENV} to a valid key"
    if scope in configured_scopes(settings, also):
        return f"set {MINETUNE_KEY_ENV} to a valid key for this server"
    return (
        f"keys go only to the base URLs they are scoped to: map this one in config.toml "
        f'([keys] "{scope}" = "ENV_VAR_NAME") or store its key with `minetune key set {scope}`'
    )


def describe(settings: Settings, base_url: str, *, also: Iterable[str] = ()) -> str:
    """Where the key for ``base_url`` comes from, in words (never the key)."""
    key = key_for(settings, base_url, also=also)
    if key is not None:
        return f"{scope_of(base_url)}: key from {key.source}"
    return f"{scope_of(base_url)}: no key ({key_help(settings, base_url, also=also)})"
