"""``serve`` (web app and learning proxy) and the ``user`` group (users and tokens)."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from minetune.cli.common import _settings, err, model_option, out


@click.command()
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to bind (non-loopback needs tokens)."
)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port to bind.")
@click.option("--auth/--no-auth", "auth", default=None,
              help="Require tokens (default: when any token exists or the host is not loopback; "
              "--no-auth is refused on a non-loopback host).")
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="NAME",
              help="Also answer requests for this Host name (repeatable; loopback names always).")
@click.option("--allowed-origin", "allowed_origins", multiple=True, metavar="ORIGIN",
              help="Also accept posts and CORS preflights from ORIGIN, e.g. https://app.lan (repeatable).")
@click.option("--log-format", type=click.Choice(["text", "json"]), envvar="MINETUNE_LOG_FORMAT",
              default="text", show_default=True,
              help="json: one JSON object per line on stderr (with every request: method, path, status).")
@model_option
@click.pass_context
def serve(
    ctx: click.Context,
    host: str,
    port: int,
    auth: bool | None,
    allowed_hosts: tuple[str, ...],
    allowed_origins: tuple[str, ...],
    log_format: str,
    model: str | None,
) -> None:
    """Serve the web app and the OpenAI-compatible learning proxy.

    \b
    Web UI:  http://127.0.0.1:8000/
    Proxy:   base_url=http://127.0.0.1:8000/v1, model="minetune/<program>"
    Rate:    POST /v1/feedback {"response_id": ..., "stars": 1-5, "critique": "..."}
    """
    import uvicorn

    from minetune.server.app import create_app

    settings = _settings(ctx, model)
    server_app = create_app(
        settings,
        host=host,
        require_auth=auth,
        warm_up=True,
        allowed_hosts=allowed_hosts,
        allowed_origins=allowed_origins,
    )
    state = server_app.state.minetune
    if state.auth_mode is None:
        mode = "tokens required" if state.auth_required else "single local user until `minetune user add`"
    else:
        mode = "tokens required" if state.auth_mode else "single local user, no login"
    err.print(f"minetune serving on http://{host}:{port}/ ({mode}); proxy at /v1", highlight=False)
    hint = " (add the names clients use with --allowed-host)" if host in ("0.0.0.0", "::") else ""
    err.print(f"Answering Host names: {server_app.state.guards.describe_hosts()}{hint}", highlight=False)
    if log_format == "json":
        from minetune.server.jsonlog import uvicorn_log_config

        uvicorn.run(server_app, host=host, port=port, log_config=uvicorn_log_config())
    else:
        uvicorn.run(server_app, host=host, port=port, log_level="warning")


@click.group("user")
def user_app() -> None:
    """Users of a shared server and their tokens (stored hashed; shown once)."""


def _database(ctx: click.Context) -> Any:
    from minetune.store.db import Database, open_engine

    return Database(open_engine(_settings(ctx).resolved_database_url))


@user_app.command("add")
@click.argument("name")
@click.option("--label", default="", help="A note on what the token is for.")
@click.option(
    "--keep-local",
    is_flag=True,
    help="First user only: leave the programs made before tokens with the hidden 'local' user.",
)
@click.pass_context
def user_add(ctx: click.Context, name: str, label: str, keep_local: bool) -> None:
    """Create user NAME (if new) and print a new token for it. From then on a running server asks
    every request for a token (no restart needed). The first user added takes over the programs
    made before tokens existed, unless --keep-local."""
    from rich.markup import escape

    from minetune.store.users import adoptable_programs, issue_token

    db = _database(ctx)
    try:
        adoptable = adoptable_programs(db, name)
        token = issue_token(db, name, label, adopt_local=not keep_local)
    finally:
        db.close()
    if adoptable and not keep_local:
        err.print(
            f"{escape(name)} now owns the {adoptable} program(s) made before tokens existed "
            "(the single-user data).",
            highlight=False,
        )
    elif adoptable:
        err.print(
            f"The {adoptable} program(s) made before tokens stay with the hidden user 'local' "
            "(`minetune user add local` gives a token for them).",
            highlight=False,
        )
    err.print(f"New token for {escape(name)} (shown once; keep it secret):", highlight=False)
    click.echo(token)


@user_app.command("list")
@click.pass_context
def user_list(ctx: click.Context) -> None:
    """List users and how many tokens each has."""
    from minetune.store.users import list_users

    db = _database(ctx)
    try:
        users = list_users(db)
    finally:
        db.close()
    table = Table("user", "tokens", "created")
    for info in users:
        table.add_row(info.name, str(info.tokens), info.created_at.strftime("%Y-%m-%d %H:%M"))
    out.print(table)


@user_app.command("revoke")
@click.argument("name")
@click.pass_context
def user_revoke(ctx: click.Context, name: str) -> None:
    """Delete every token of NAME (its data stays)."""
    from rich.markup import escape

    from minetune.store.users import any_tokens, revoke_tokens

    db = _database(ctx)
    try:
        count = revoke_tokens(db, name)
        remaining = 1 if any_tokens(db) else 0
    finally:
        db.close()
    out.print(
        f"Revoked {count} token(s) of {escape(name)}; a running server refuses them from now on.",
        highlight=False,
    )
    if remaining == 0:
        out.print(
            "No tokens remain: a server on 127.0.0.1 started without --auth answers without a token again.",
            highlight=False,
        )
