"""``minetune key``: API keys per base URL in the system keyring, and where a URL's key comes from.

Keys are read from a hidden prompt (or standard input with ``--stdin``) and never printed.
"""

from __future__ import annotations

import sys

import click

from minetune.cli.common import _settings, out
from minetune.errors import ConfigError

BASE_URL_HELP = "The base URL exactly as in model specs, e.g. https://openrouter.ai/api/v1."


@click.group("key")
def key_app() -> None:
    """API keys per base URL: each key goes only to the base URL it is stored for.

    Sources, first match wins: [keys] in config.toml ("BASE_URL" = "ENV_VAR_NAME"); OPENAI_API_KEY
    for OpenAI's base URL (or OPENAI_BASE_URL); MINETUNE_API_KEY for the configured model's base
    URL; the system keyring (`minetune key set BASE_URL`).
    """


def _checked(base_url: str) -> str:
    if not base_url.strip().lower().startswith(("http://", "https://")):
        raise ConfigError(f"{base_url!r} is not an http(s) base URL. {BASE_URL_HELP}")
    return base_url.strip()


@key_app.command("set")
@click.argument("base_url")
@click.option("--stdin", "from_stdin", is_flag=True, help="Read the key from standard input.")
def key_set(base_url: str, from_stdin: bool) -> None:
    """Store the key for BASE_URL in the system keyring."""
    from minetune.models.keys import set_keyring_key

    url = _checked(base_url)
    if from_stdin:
        value = sys.stdin.readline().strip()
    else:
        value = str(click.prompt(f"API key for {url}", hide_input=True, default="", show_default=False))
    if not value.strip():
        raise ConfigError("No key given; nothing was stored.")
    scope = set_keyring_key(url, value.strip())
    out.print(f"stored the key for {scope} in the system keyring", highlight=False)


@key_app.command("delete")
@click.argument("base_url")
def key_delete(base_url: str) -> None:
    """Remove the keyring entry for BASE_URL."""
    from minetune.models.keys import delete_keyring_key, scope_of

    url = _checked(base_url)
    if not delete_keyring_key(url):
        raise ConfigError(f"The system keyring has no key for {scope_of(url)}.")
    out.print(f"deleted the key for {scope_of(url)}", highlight=False)


@key_app.command("show")
@click.argument("base_url")
@click.pass_context
def key_show(ctx: click.Context, base_url: str) -> None:
    """Say where the key for BASE_URL would come from (never the key itself)."""
    from minetune.models.keys import describe

    out.print(describe(_settings(ctx), _checked(base_url)), highlight=False)
