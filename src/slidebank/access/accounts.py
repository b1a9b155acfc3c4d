"""Users, sign-in with rate limits, browser sessions and API tokens (all in the catalogue).

Only hashes of secrets are stored: argon2id for passwords, SHA-256 for session and token
secrets (they are 256 random bits, so a slow hash would add nothing but latency on every
request).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from slidebank.access.clock import aware, now
from slidebank.access.passwords import hash_password, needs_rehash, verify_password
from slidebank.access.policy import Scope
from slidebank.catalog.access_tables import ApiToken, FailedSignIn, SignInSession, User
from slidebank.errors import Conflict, InvalidInput, NotFound, SignInRequired

USER_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
TOKEN_PREFIX = "sbk"  # noqa: S105  (a label, not a secret)
TOKEN_PATTERN = re.compile(r"^sbk_([0-9a-f]{12})_([A-Za-z0-9_-]{20,64})$")
MAX_TOKEN_DAYS = 366
# Failed sign-ins tolerated in the window: per account from one address, and per address.
# There is no limit per account alone: that would let anyone lock a user out.
WINDOW = timedelta(minutes=15)
MAX_FAILURES_ACCOUNT_ADDRESS = 5
MAX_FAILURES_ADDRESS = 30


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_user_name(name: str) -> None:
    if not USER_NAME.match(name):
        raise InvalidInput(
            f"user name {name!r}: 2-64 characters, lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )


def add_user(
    session: Session,
    name: str,
    *,
    password: str | None = None,
    is_admin: bool = False,
    display_name: str | None = None,
    email: str | None = None,
) -> User:
    check_user_name(name)
    if session.scalar(select(User.id).where(User.name == name)) is not None:
        raise Conflict(f"user {name!r} exists already")
    user = User(
        name=name,
        display_name=display_name,
        email=email,
        is_admin=is_admin,
        password_hash=hash_password(password) if password is not None else None,
    )
    session.add(user)
    session.flush()
    return user


def user_by_name(session: Session, name: str) -> User:
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise NotFound(f"no user named {name!r}")
    return user


def oidc_user(
    session: Session, issuer: str, subject: str, name_hint: str | None, email: str | None
) -> User:
    """The account of an OpenID Connect identity (matched by issuer and subject), created at
    its first sign-in with a free user name derived from ``name_hint``."""
    user = session.scalar(
        select(User).where(User.oidc_issuer == issuer, User.oidc_subject == subject)
    )
    if user is not None:
        return user
    base = re.sub(r"[^a-z0-9._-]", "-", (name_hint or subject).lower()).strip("-._")[:48] or "user"
    if not base[0].isalnum():
        base = "u" + base
    name, n = base, 1
    while session.scalar(select(User.id).where(User.name == name)) is not None:
        n += 1
        name = f"{base}-{n}"
    user = User(
        name=name, email=email, display_name=name_hint, oidc_issuer=issuer, oidc_subject=subject
    )
    session.add(user)
    session.flush()
    return user


# Sign-in with a password


@dataclass(frozen=True)
class SignInRefused:
    reason: str
    retry_after_s: int | None = None


@dataclass(frozen=True)
class PasswordCheck:
    """What the read-only first step of a sign-in found."""

    user_id: int | None
    stored_hash: str | None  # None: no such account, disabled, or no local password
    refused: SignInRefused | None


def look_up_sign_in(session: Session, name: str, address: str) -> PasswordCheck:
    """Read-only: the limits and the stored hash. The password is checked after this, outside
    any transaction: argon2 takes tens of milliseconds, and on SQLite a write transaction
    would hold every other writer back meanwhile."""
    since = now() - WINDOW
    by_pair = session.scalar(
        select(func.count()).where(
            FailedSignIn.account == name[:64],
            FailedSignIn.address == address[:64],
            FailedSignIn.at >= since,
        )
    )
    by_address = session.scalar(
        select(func.count()).where(FailedSignIn.address == address[:64], FailedSignIn.at >= since)
    )
    if (by_pair or 0) >= MAX_FAILURES_ACCOUNT_ADDRESS or (by_address or 0) >= MAX_FAILURES_ADDRESS:
        limited = SignInRefused("too many failed sign-ins from this address: try again later", 900)
        return PasswordCheck(None, None, limited)
    user = session.scalar(select(User).where(User.name == name))
    if user is None or user.disabled:
        return PasswordCheck(None, None, None)
    return PasswordCheck(user.id, user.password_hash, None)


def password_matches(check: PasswordCheck, password: str) -> bool:
    # Always hashed, also for unknown accounts (against a dummy): equal time either way.
    return verify_password(check.stored_hash, password) and check.user_id is not None


def record_failed_sign_in(session: Session, name: str, address: str) -> None:
    moment = now()
    session.execute(delete(FailedSignIn).where(FailedSignIn.at < moment - 4 * WINDOW))
    session.add(FailedSignIn(account=name[:64], address=address[:64], at=moment))


def rehash_if_needed(session: Session, user: User, password: str) -> None:
    if user.password_hash is not None and needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)


# Browser sessions


@dataclass(frozen=True)
class NewSession:
    secret: str  # the cookie's value; shown once, never stored
    csrf_token: str
    expires_at: datetime


def start_session(session: Session, user: User, hours: float, address: str | None) -> NewSession:
    secret = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    expires = now() + timedelta(hours=hours)
    session.add(
        SignInSession(
            secret_hash=digest(secret),
            user_id=user.id,
            csrf_token=csrf,
            expires_at=expires,
            address=(address or "")[:64] or None,
        )
    )
    session.flush()
    return NewSession(secret, csrf, expires)


def session_by_secret(session: Session, secret: str) -> SignInSession:
    row = session.scalar(select(SignInSession).where(SignInSession.secret_hash == digest(secret)))
    if row is None or row.ended_at is not None or aware(row.expires_at) <= now():
        raise SignInRequired("the session has ended or expired: sign in again")
    if row.user.disabled:
        raise SignInRequired(f"user {row.user.name!r} is disabled")
    return row


def end_session(session: Session, secret: str) -> None:
    row = session.scalar(select(SignInSession).where(SignInSession.secret_hash == digest(secret)))
    if row is not None and row.ended_at is None:
        row.ended_at = now()


# API tokens


@dataclass(frozen=True)
class NewToken:
    token: str  # shown once
    row: ApiToken


def create_token(
    session: Session, user: User, scope: Scope, days: int, label: str | None = None
) -> NewToken:
    if not 1 <= days <= MAX_TOKEN_DAYS:
        raise InvalidInput(f"expires: between 1 and {MAX_TOKEN_DAYS} days, got {days}")
    if scope is Scope.ADMIN and not user.is_admin:
        raise InvalidInput(f"scope: admin tokens are for site administrators; {user.name!r} is not")
    key = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    row = ApiToken(
        key=key,
        secret_hash=digest(secret),
        user_id=user.id,
        label=(label or None) and label[:128],
        scope=str(scope),
        expires_at=now() + timedelta(days=days),
    )
    session.add(row)
    session.flush()
    return NewToken(f"{TOKEN_PREFIX}_{key}_{secret}", row)


def token_by_secret(session: Session, token: str) -> ApiToken:
    """The token's row, or ``SignInRequired`` saying why it is refused."""
    match = TOKEN_PATTERN.match(token)
    if match is None:
        raise SignInRequired("the bearer token is not a Slidebank token")
    key, secret = match.groups()
    row = session.scalar(select(ApiToken).where(ApiToken.key == key))
    if row is None or not hmac.compare_digest(row.secret_hash, digest(secret)):
        raise SignInRequired("the bearer token is unknown")
    if row.revoked_at is not None:
        raise SignInRequired("the bearer token was revoked")
    if aware(row.expires_at) <= now():
        raise SignInRequired("the bearer token has expired")
    if row.user.disabled:
        raise SignInRequired(f"user {row.user.name!r} is disabled")
    return row


def tokens_of(session: Session, user: User) -> list[ApiToken]:
    return list(
        session.scalars(
            select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id.desc())
        )
    )


def revoke_token(session: Session, key: str, owner_id: int | None) -> ApiToken:
    """Revoke token ``key`` of user ``owner_id`` (None: of anyone, for administrators)."""
    row = session.scalar(select(ApiToken).where(ApiToken.key == key))
    if row is None or (owner_id is not None and row.user_id != owner_id):
        raise NotFound(f"no token {key!r}")
    if row.revoked_at is None:
        row.revoked_at = now()
    return row


def token_record(row: ApiToken) -> dict[str, object]:
    expired = aware(row.expires_at) <= now()
    return {
        "key": row.key,
        "label": row.label,
        "scope": row.scope,
        "created_at": aware(row.created_at).isoformat(),
        "expires_at": aware(row.expires_at).isoformat(),
        "revoked_at": aware(row.revoked_at).isoformat() if row.revoked_at else None,
        "active": row.revoked_at is None and not expired,
    }
