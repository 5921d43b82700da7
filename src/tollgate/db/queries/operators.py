"""Operators, their sign-in sessions and sign-in tries."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, delete, func, insert, select, update

from tollgate.db.tables import OPERATOR_SESSIONS, OPERATORS, SIGN_IN_ATTEMPTS


def operator(connection: Connection, operator_id: str) -> RowMapping | None:
    row = connection.execute(select(OPERATORS).where(OPERATORS.c.id == operator_id)).first()
    return row._mapping if row is not None else None


def all_operators(connection: Connection) -> list[RowMapping]:
    rows = connection.execute(select(OPERATORS).order_by(OPERATORS.c.id))
    return [row._mapping for row in rows]


def insert_operator(connection: Connection, row: Mapping[str, Any]) -> None:
    connection.execute(insert(OPERATORS).values(**row))


def set_operator(connection: Connection, operator_id: str, **values: Any) -> int:
    done = connection.execute(
        update(OPERATORS).where(OPERATORS.c.id == operator_id).values(**values)
    )
    return int(done.rowcount or 0)


def insert_session(connection: Connection, row: Mapping[str, Any]) -> None:
    connection.execute(insert(OPERATOR_SESSIONS).values(**row))


def session_with_operator(connection: Connection, session_id: str) -> RowMapping | None:
    """Return the session and its operator's role in one read, or None."""
    row = connection.execute(
        select(OPERATOR_SESSIONS, OPERATORS.c.role)
        .join(OPERATORS, OPERATORS.c.id == OPERATOR_SESSIONS.c.operator_id)
        .where(OPERATOR_SESSIONS.c.id == session_id)
    ).first()
    return row._mapping if row is not None else None


def touch_session(connection: Connection, session_id: str, now: datetime) -> None:
    connection.execute(
        update(OPERATOR_SESSIONS)
        .where(OPERATOR_SESSIONS.c.id == session_id)
        .values(last_seen_at=now)
    )


def delete_session(connection: Connection, session_id: str) -> None:
    connection.execute(delete(OPERATOR_SESSIONS).where(OPERATOR_SESSIONS.c.id == session_id))


def delete_sessions_of(connection: Connection, operator_id: str) -> int:
    done = connection.execute(
        delete(OPERATOR_SESSIONS).where(OPERATOR_SESSIONS.c.operator_id == operator_id)
    )
    return int(done.rowcount or 0)


def delete_sessions_ended(connection: Connection, now: datetime, idle_since: datetime) -> int:
    done = connection.execute(
        delete(OPERATOR_SESSIONS).where(
            (OPERATOR_SESSIONS.c.expires_at <= now)
            | (OPERATOR_SESSIONS.c.last_seen_at < idle_since)
        )
    )
    return int(done.rowcount or 0)


def record_attempt(
    connection: Connection, *, account: str, address: str, succeeded: bool, at: datetime
) -> None:
    connection.execute(
        insert(SIGN_IN_ATTEMPTS).values(
            account=account, address=address, succeeded=succeeded, at=at
        )
    )


def failures_since(
    connection: Connection, *, account: str, address: str, since: datetime
) -> tuple[int, int]:
    """Return the failed tries since `since` for the account and from the address."""
    failed = SIGN_IN_ATTEMPTS.c.succeeded.is_(False)
    recent = SIGN_IN_ATTEMPTS.c.at >= since
    by_account = connection.execute(
        select(func.count()).where(SIGN_IN_ATTEMPTS.c.account == account, failed, recent)
    ).scalar_one()
    by_address = connection.execute(
        select(func.count()).where(SIGN_IN_ATTEMPTS.c.address == address, failed, recent)
    ).scalar_one()
    return int(by_account), int(by_address)


def delete_attempts_before(connection: Connection, before: datetime) -> int:
    done = connection.execute(delete(SIGN_IN_ATTEMPTS).where(SIGN_IN_ATTEMPTS.c.at < before))
    return int(done.rowcount or 0)


def lock_admins(connection: Connection) -> list[str]:
    """Return the admins' names, their rows locked (FOR UPDATE on PostgreSQL; SQLite's write
    transaction holds the whole database), so two changes of admins take turns."""
    query = (
        select(OPERATORS.c.id).where(OPERATORS.c.role == "admin").order_by(OPERATORS.c.id)
    ).with_for_update()
    return list(connection.execute(query).scalars())


def delete_operator(connection: Connection, operator_id: str) -> int:
    """Delete an operator and its sessions; return 1 if it existed."""
    delete_sessions_of(connection, operator_id)
    done = connection.execute(delete(OPERATORS).where(OPERATORS.c.id == operator_id))
    return int(done.rowcount or 0)


def sessions_by_operator(
    connection: Connection, now: datetime, idle_since: datetime
) -> dict[str, tuple[int, datetime]]:
    """Return each operator's live sessions: how many, and when one was last seen."""
    s = OPERATOR_SESSIONS.c
    query = (
        select(s.operator_id, func.count(), func.max(s.last_seen_at))
        .where(s.expires_at > now, s.last_seen_at > idle_since)
        .group_by(s.operator_id)
    )
    return {str(name): (int(count), seen) for name, count, seen in connection.execute(query)}
