"""Operators of the console: create them, sign them in and out, and tell who a cookie is."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, RowMapping
from sqlalchemy.exc import IntegrityError

from tollgate.clock import Clock
from tollgate.config import Settings
from tollgate.db.queries import operators as queries
from tollgate.db.queries.audit import record_audit
from tollgate.db.unit_of_work import Database
from tollgate.domain.errors import Conflict, InvalidRequest, NotFound, TollgateError
from tollgate.domain.operators import (
    Action,
    admin_problem,
    may,
    name_problem,
    password_problem,
    role_problem,
)

# A failed try counts against its account and address for this long.
ATTEMPT_WINDOW = timedelta(minutes=15)
# Writing last_seen_at on every page view would make each view a write; a minute is precise
# enough for a 30-minute idle limit.
_TOUCH_EVERY = timedelta(minutes=1)
_HASHER = PasswordHasher()
# Verified against when the name is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))


class SignInRefused(TollgateError):
    """The name or password is wrong (which one is not said)."""

    type = "authentication_error"


class TooManyAttempts(TollgateError):
    """Too many failed sign-ins for this account or from this address; wait and retry."""

    type = "rate_limit_error"
    status = 429


class NotAllowed(TollgateError):
    """The operator's role does not allow the action."""

    type = "permission_error"
    status = 403


@dataclass(frozen=True)
class OperatorView:
    id: str
    role: str
    created_at: datetime


@dataclass(frozen=True)
class SignedIn:
    """A new session: `token` goes in the cookie and is never stored (only its SHA-256 is)."""

    token: str
    operator: str
    role: str
    expires_at: datetime


@dataclass(frozen=True)
class ConsoleSession:
    """Who a session cookie belongs to."""

    id: str
    operator: str
    role: str
    csrf_secret: str
    expires_at: datetime

    @property
    def actor(self) -> str:
        """How audit rows name this operator."""
        return f"operator:{self.operator}"

    def may(self, action: Action) -> bool:
        return may(self.role, action)

    def require(self, action: Action) -> None:
        """Raise NotAllowed unless the operator's role allows `action`."""
        if not self.may(action):
            raise NotAllowed(f"your role '{self.role}' may not do this")


def session_key(token: str) -> str:
    # Tokens are 256-bit random strings, so a fast hash is as strong as a slow one here.
    return hashlib.sha256(token.encode()).hexdigest()


def create_operator(
    *, db: Database, clock: Clock, name: str, role: str, password: str, actor: str = "cli"
) -> OperatorView:
    """Make an operator with `role`; the password is kept as an argon2id hash only."""
    name = name.strip().lower()
    for problem, param in (
        (name_problem(name), "name"),
        (role_problem(role), "role"),
        (password_problem(password), "password"),
    ):
        if problem:
            raise InvalidRequest(problem, param=param)
    now = clock.now()
    row = {
        "id": name,
        "role": role,
        "password_hash": _HASHER.hash(password),
        "created_at": now,
        "updated_at": now,
    }
    try:
        with db.write_connection() as connection:
            queries.insert_operator(connection, row)
            _audit(connection, now, actor, name, "created", after={"role": role})
    except IntegrityError:
        raise Conflict(f"an operator named {name!r} exists", param="name") from None
    return OperatorView(id=name, role=role, created_at=now)


@dataclass(frozen=True)
class AddedOperator:
    """An operator made from the console, with the password it signs in with (shown once)."""

    operator: OperatorView
    password: str


def add_operator(*, db: Database, clock: Clock, name: str, role: str, actor: str) -> AddedOperator:
    """Make an operator with a new random password, for the admin to hand over once; the
    operator changes it on the Operators page."""
    password = secrets.token_urlsafe(15)  # 20 characters, 120 bits
    made = create_operator(db=db, clock=clock, name=name, role=role, password=password, actor=actor)
    return AddedOperator(made, password)


def set_operator_role(
    *, db: Database, clock: Clock, name: str, role: str, actor: str
) -> OperatorView:
    """Give an operator another role, from its next request on; the last admin keeps its role."""
    problem = role_problem(role)
    if problem:
        raise InvalidRequest(problem, param="role")
    now = clock.now()
    with db.write_connection() as connection:
        found = _changing(connection, name, role)
        if found["role"] != role:
            queries.set_operator(connection, name, role=role, updated_at=now)
            _audit(
                connection,
                now,
                actor,
                name,
                "role_changed",
                before={"role": found["role"]},
                after={"role": role},
            )
    return OperatorView(id=name, role=role, created_at=found["created_at"])


def remove_operator(*, db: Database, clock: Clock, name: str, actor: str) -> None:
    """Delete an operator and end its sessions; nobody removes themselves or the last admin."""
    if actor == f"operator:{name}":
        raise InvalidRequest("you cannot remove yourself; another admin can", param="name")
    now = clock.now()
    with db.write_connection() as connection:
        found = _changing(connection, name, None)
        queries.delete_operator(connection, name)
        _audit(connection, now, actor, name, "removed", before={"role": found["role"]})


def _changing(connection: Connection, name: str, role: str | None) -> RowMapping:
    """Return the operator about to get `role` (None: removed), behind the admins' lock;
    NotFound when there is none, Conflict when it would leave no admin."""
    admins = queries.lock_admins(connection)
    found = queries.operator(connection, name)
    if found is None:
        raise NotFound(f"no operator {name!r}", param="name")
    problem = admin_problem(admins, name, role)
    if problem:
        raise Conflict(problem, param="role" if role else "name")
    return found


def _audit(
    connection: Connection,
    now: datetime,
    actor: str,
    name: str,
    action: str,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """Audit a change of operators (a role, never a password), as console_actions audits an
    action on a customer: before and after by keyword, so they cannot be swapped."""
    record_audit(
        connection,
        actor=actor,
        object_type="operator",
        object_id=name,
        action=action,
        before=before,
        after=after,
        now=now,
    )


def list_operators(*, db: Database) -> list[OperatorView]:
    with db.engine.connect() as connection:
        rows = queries.all_operators(connection)
    return [OperatorView(id=r["id"], role=r["role"], created_at=r["created_at"]) for r in rows]


@dataclass(frozen=True)
class OperatorSummary:
    """An operator as the Operators page lists it: its live sessions and when one was seen."""

    id: str
    role: str
    created_at: datetime
    sessions: int
    last_seen_at: datetime | None


def operators_with_sessions(
    *, db: Database, clock: Clock, settings: Settings
) -> list[OperatorSummary]:
    """Return every operator with its live sessions (neither idle nor past their end)."""
    now = clock.now()
    idle_since = now - timedelta(minutes=settings.console_idle_minutes)
    with db.engine.connect() as connection:
        rows = queries.all_operators(connection)
        live = queries.sessions_by_operator(connection, now, idle_since)
    return [
        OperatorSummary(
            id=r["id"],
            role=r["role"],
            created_at=r["created_at"],
            sessions=live.get(r["id"], (0, None))[0],
            last_seen_at=live.get(r["id"], (0, None))[1],
        )
        for r in rows
    ]


def set_operator_password(*, db: Database, clock: Clock, name: str, password: str) -> None:
    """Change an operator's password and end every session it has."""
    problem = password_problem(password)
    if problem:
        raise InvalidRequest(problem, param="password")
    now = clock.now()
    with db.write_connection() as connection:
        changed = queries.set_operator(
            connection, name, password_hash=_HASHER.hash(password), updated_at=now
        )
        if not changed:
            raise NotFound(f"no operator {name!r}", param="name")
        queries.delete_sessions_of(connection, name)
        _audit(connection, now, f"operator:{name}", name, "password_changed")


def change_own_password(
    *, db: Database, clock: Clock, name: str, current: str, new: str, repeated: str
) -> None:
    """Change the signed-in operator's password, the current one given first; every session of
    theirs ends, this one too."""
    with db.engine.connect() as connection:
        found = queries.operator(connection, name)
    if found is None or not _verify(found["password_hash"], current):
        raise InvalidRequest("the current password is wrong", param="current_password")
    if new != repeated:
        raise InvalidRequest("the new passwords differ", param="new_password")
    set_operator_password(db=db, clock=clock, name=name, password=new)


def sign_in(
    *, db: Database, clock: Clock, settings: Settings, name: str, password: str, address: str
) -> SignedIn:
    """Check the name and password and open a session; tries are limited per account and
    per address (TooManyAttempts), and a wrong name or password is one answer (SignInRefused)."""
    account = name.strip().lower()[:64]
    address = address[:64]
    now = clock.now()
    with db.engine.connect() as connection:
        by_account, by_address = queries.failures_since(
            connection, account=account, address=address, since=now - ATTEMPT_WINDOW
        )
        found = queries.operator(connection, account)
    if (
        by_account >= settings.sign_in_failures_per_account
        or by_address >= settings.sign_in_failures_per_address
    ):
        raise TooManyAttempts("too many failed sign-ins; wait 15 minutes and try again")
    ok = _verify(found["password_hash"] if found else _DUMMY_HASH, password) and found is not None
    token = secrets.token_urlsafe(32)
    expires_at = now + timedelta(hours=settings.console_session_hours)
    with db.write_connection() as connection:
        queries.record_attempt(connection, account=account, address=address, succeeded=ok, at=now)
        if ok:
            queries.insert_session(
                connection,
                {
                    "id": session_key(token),
                    "operator_id": account,
                    "csrf_secret": secrets.token_hex(32),
                    "created_at": now,
                    "last_seen_at": now,
                    "expires_at": expires_at,
                    "address": address,
                },
            )
    if not ok or found is None:
        raise SignInRefused("the name or password is wrong")
    return SignedIn(token=token, operator=account, role=found["role"], expires_at=expires_at)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def console_session(
    *, db: Database, clock: Clock, settings: Settings, token: str | None
) -> ConsoleSession | None:
    """Return the live session the cookie `token` names, or None (unknown, idle or expired)."""
    if not token:
        return None
    key = session_key(token)
    now = clock.now()
    with db.engine.connect() as connection:
        row = queries.session_with_operator(connection, key)
    if row is None:
        return None
    idle_limit = timedelta(minutes=settings.console_idle_minutes)
    if row["expires_at"] <= now or row["last_seen_at"] + idle_limit <= now:
        with db.write_connection() as connection:
            queries.delete_session(connection, key)
        return None
    if now - row["last_seen_at"] >= _TOUCH_EVERY:
        with db.write_connection() as connection:
            queries.touch_session(connection, key, now)
    return ConsoleSession(
        id=key,
        operator=row["operator_id"],
        role=row["role"],
        csrf_secret=row["csrf_secret"],
        expires_at=row["expires_at"],
    )


def sign_out(*, db: Database, token: str) -> None:
    """End the session the cookie `token` names."""
    with db.write_connection() as connection:
        queries.delete_session(connection, session_key(token))


def sign_out_everywhere(*, db: Database, clock: Clock, operator: str, actor: str = "cli") -> int:
    """End every session of `operator`; return how many there were (NotFound for a name no
    operator has: a typo is told, not taken as nothing to end)."""
    with db.write_connection() as connection:
        if queries.operator(connection, operator) is None:
            raise NotFound(f"no operator {operator!r}", param="name")
        ended = queries.delete_sessions_of(connection, operator)
        _audit(connection, clock.now(), actor, operator, "signed_out", after={"sessions": ended})
        return ended


def prune_sign_ins(*, db: Database, clock: Clock, settings: Settings) -> int:
    """Delete sessions that ended and sign-in tries older than a day; return how many."""
    now = clock.now()
    idle_since = now - timedelta(minutes=settings.console_idle_minutes)
    with db.write_connection() as connection:
        ended = queries.delete_sessions_ended(connection, now, idle_since)
        return ended + queries.delete_attempts_before(connection, now - timedelta(days=1))
