"""Users and their bearer tokens. Tokens are random; only their SHA-256 is kept at rest."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, exists, func, select
from sqlalchemy.orm import Session

from minetune.errors import MinetuneError
from minetune.store.db import Database
from minetune.store.repo import DEFAULT_USER
from minetune.store.schema import ApiToken, Program, User
from minetune.store.text import check_name

TOKEN_PREFIX = "mt_"


@dataclass(frozen=True)
class UserInfo:
    name: str
    tokens: int
    created_at: datetime


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 200 or any(c.isspace() for c in name):
        raise MinetuneError(f"Invalid user name {name!r}: use 1-200 characters without spaces.")
    return check_name(name, "A user name")


def adoptable_programs(db: Database, user: str) -> int:
    """How many programs of the single-user install (the hidden ``local`` user) a new ``user`` would
    adopt: non-zero only for the first user added (no token exists, ``user`` is new)."""
    with db.transaction() as s:
        return _adoptable(s, user.strip())


def _adoptable(s: Session, user: str) -> int:
    if user == DEFAULT_USER or s.scalar(select(exists().where(ApiToken.id.is_not(None)))):
        return 0
    if s.scalar(select(User.id).where(User.name == user)) is not None:
        return 0
    local_id = s.scalar(select(User.id).where(User.name == DEFAULT_USER))
    if local_id is None:
        return 0
    return int(s.scalar(select(func.count(Program.id)).where(Program.user_id == local_id)) or 0)


def issue_token(db: Database, user: str, label: str = "", *, adopt_local: bool = False) -> str:
    """Create ``user`` if needed and return a new token for it (shown once, stored hashed).

    With ``adopt_local`` the first user added takes over the single-user data: the hidden
    ``local`` user is renamed ``user`` (see :func:`adoptable_programs`), in the same transaction."""
    user = _check_name(user)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with db.transaction() as s:
        if adopt_local and _adoptable(s, user):
            local = s.scalars(select(User).where(User.name == DEFAULT_USER)).one()
            local.name = user
            s.flush()
        user_id = s.scalar(select(User.id).where(User.name == user))
        if user_id is None:
            row = User(name=user)
            s.add(row)
            s.flush()
            user_id = row.id
        s.add(ApiToken(user_id=user_id, token_hash=hash_token(token), label=label))
    return token


def user_for_token(db: Database, token: str) -> str | None:
    """The name of the user owning ``token``, or None for an unknown token."""
    if not token:
        return None
    with db.transaction() as s:
        return s.scalar(
            select(User.name).join(ApiToken, ApiToken.user_id == User.id).where(
                ApiToken.token_hash == hash_token(token)
            )
        )


def any_tokens(db: Database) -> bool:
    """Whether any token exists; once one does, the server asks every request for one."""
    with db.transaction() as s:
        return bool(s.scalar(select(exists().where(ApiToken.id.is_not(None)))))


def revoke_tokens(db: Database, user: str) -> int:
    """Delete every token of ``user``; returns how many were deleted. Their data stays."""
    with db.transaction() as s:
        user_id = s.scalar(select(User.id).where(User.name == user))
        if user_id is None:
            raise MinetuneError(f"No user named {user!r}.")
        result = s.execute(delete(ApiToken).where(ApiToken.user_id == user_id))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


def list_users(db: Database) -> list[UserInfo]:
    with db.transaction() as s:
        rows = s.execute(
            select(User.name, func.count(ApiToken.id), User.created_at)
            .outerjoin(ApiToken, ApiToken.user_id == User.id)
            .group_by(User.id)
            .order_by(User.name)
        ).all()
    return [UserInfo(name, count, created) for name, count, created in rows]
