"""Operators: argon2 passwords, sessions with idle and absolute ends, sign-in limits, roles."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tollgate.cli import app
from tollgate.clock import FrozenClock
from tollgate.config import load_settings
from tollgate.db.migrate import upgrade
from tollgate.db.unit_of_work import Database
from tollgate.domain.errors import Conflict, InvalidRequest
from tollgate.domain.operators import may
from tollgate.services.operators import (
    NotAllowed,
    SignInRefused,
    TooManyAttempts,
    console_session,
    create_operator,
    list_operators,
    sign_in,
    sign_out,
    sign_out_everywhere,
)

PASSWORD = "correct horse battery"
START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def settings(db: Database):  # type: ignore[no-untyped-def]
    return load_settings(TOLLGATE_ENV="test", TOLLGATE_DATABASE_URL=db.url)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


def _sign_in(db, clock, settings, name="ada", password=PASSWORD, address="10.0.0.1"):  # type: ignore[no-untyped-def]
    return sign_in(
        db=db, clock=clock, settings=settings, name=name, password=password, address=address
    )


def test_password_is_stored_as_argon2_and_signs_in(db: Database, clock, settings) -> None:  # type: ignore[no-untyped-def]
    create_operator(db=db, clock=clock, name="Ada", role="support", password=PASSWORD)
    with db.engine.connect() as connection:
        stored = connection.exec_driver_sql("SELECT password_hash FROM operators").scalar_one()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    signed = _sign_in(db, clock, settings)
    session = console_session(db=db, clock=clock, settings=settings, token=signed.token)
    assert session is not None and session.operator == "ada" and session.role == "support"
    with db.engine.connect() as connection:
        key = connection.exec_driver_sql("SELECT id FROM operator_sessions").scalar_one()
    assert key != signed.token  # only its hash is kept


def test_bad_operator_input_is_refused(db: Database, clock) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidRequest, match="role"):
        create_operator(db=db, clock=clock, name="ada", role="root", password=PASSWORD)
    with pytest.raises(InvalidRequest, match="12 characters"):
        create_operator(db=db, clock=clock, name="ada", role="admin", password="short")
    with pytest.raises(InvalidRequest, match="name"):
        create_operator(db=db, clock=clock, name="a b", role="admin", password=PASSWORD)
    create_operator(db=db, clock=clock, name="ada", role="admin", password=PASSWORD)
    with pytest.raises(Conflict):
        create_operator(db=db, clock=clock, name="ada", role="admin", password=PASSWORD)
    assert [o.id for o in list_operators(db=db)] == ["ada"]


def test_wrong_password_and_unknown_name_get_one_answer(db: Database, clock, settings) -> None:  # type: ignore[no-untyped-def]
    create_operator(db=db, clock=clock, name="ada", role="admin", password=PASSWORD)
    with pytest.raises(SignInRefused) as wrong:
        _sign_in(db, clock, settings, password="not the password")
    with pytest.raises(SignInRefused) as unknown:
        _sign_in(db, clock, settings, name="bob")
    assert str(wrong.value) == str(unknown.value)


def test_sessions_end_when_idle_and_at_their_absolute_end(db: Database, clock, settings) -> None:  # type: ignore[no-untyped-def]
    create_operator(db=db, clock=clock, name="ada", role="admin", password=PASSWORD)
    token = _sign_in(db, clock, settings).token
    clock.advance(timedelta(minutes=29))
    assert console_session(db=db, clock=clock, settings=settings, token=token) is not None
    clock.advance(timedelta(minutes=31))  # 31 idle minutes since the last view
    assert console_session(db=db, clock=clock, settings=settings, token=token) is None

    token = _sign_in(db, clock, settings).token
    for _ in range(12 * 4):  # active every 15 minutes for 12 hours
        clock.advance(timedelta(minutes=15))
        alive = console_session(db=db, clock=clock, settings=settings, token=token)
    assert alive is None  # the absolute end (12 hours) came


def test_sign_out_and_sign_out_everywhere(db: Database, clock, settings) -> None:  # type: ignore[no-untyped-def]
    create_operator(db=db, clock=clock, name="ada", role="admin", password=PASSWORD)
    first, second, third = (_sign_in(db, clock, settings).token for _ in range(3))
    sign_out(db=db, token=first)
    assert console_session(db=db, clock=clock, settings=settings, token=first) is None
    assert console_session(db=db, clock=clock, settings=settings, token=second) is not None
    assert sign_out_everywhere(db=db, clock=clock, operator="ada") == 2
    for token in (second, third):
        assert console_session(db=db, clock=clock, settings=settings, token=token) is None


def test_sign_in_is_limited_per_account_and_per_address(db: Database, clock, settings) -> None:  # type: ignore[no-untyped-def]
    create_operator(db=db, clock=clock, name="ada", role="admin", password=PASSWORD)
    for _ in range(5):
        with pytest.raises(SignInRefused):
            _sign_in(db, clock, settings, password="guess guess guess", address="10.0.0.9")
    # The account is locked for 15 minutes, even with the right password from elsewhere.
    with pytest.raises(TooManyAttempts):
        _sign_in(db, clock, settings, address="10.0.0.2")
    clock.advance(timedelta(minutes=16))
    assert _sign_in(db, clock, settings, address="10.0.0.2").operator == "ada"
    # One address trying many names is stopped too.
    for number in range(20):
        with pytest.raises(SignInRefused):
            _sign_in(db, clock, settings, name=f"user{number}", address="10.6.6.6")
    with pytest.raises(TooManyAttempts):
        _sign_in(db, clock, settings, address="10.6.6.6")


def test_roles_decide_in_one_place() -> None:
    assert may("readonly", "view") and not may("readonly", "act_on_customers")
    assert may("support", "act_on_customers") and not may("support", "administer")
    assert may("admin", "administer") and may("admin", "view")
    assert not may("root", "view")


def test_a_session_refuses_what_its_role_may_not(db: Database, clock, settings) -> None:  # type: ignore[no-untyped-def]
    create_operator(db=db, clock=clock, name="rita", role="readonly", password=PASSWORD)
    session = console_session(
        db=db, clock=clock, settings=settings, token=_sign_in(db, clock, settings, "rita").token
    )
    assert session is not None
    session.require("view")
    with pytest.raises(NotAllowed):
        session.require("act_on_customers")


def test_cli_creates_an_operator_with_a_prompted_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("TOLLGATE_ENV", "test")
    monkeypatch.setenv("TOLLGATE_DATABASE_URL", url)
    upgrade(url)
    runner = CliRunner()
    made = runner.invoke(
        app, ["operators", "create", "ada", "--role", "admin"], input=f"{PASSWORD}\n{PASSWORD}\n"
    )
    assert made.exit_code == 0, made.output
    assert "created operator 'ada' (admin)" in made.output
    assert PASSWORD not in made.output
    listed = runner.invoke(app, ["operators", "list"])
    assert "ada" in listed.output and "admin" in listed.output
    bad = runner.invoke(app, ["operators", "create", "bob", "--role", "root"])
    assert bad.exit_code == 2 and "--role" in bad.output
    short = runner.invoke(
        app, ["operators", "create", "bob", "--role", "support"], input="short\nshort\n"
    )
    assert short.exit_code == 2 and "12 characters" in short.output


def test_ended_sessions_and_old_tries_are_pruned(db: Database, clock, settings) -> None:  # type: ignore[no-untyped-def]
    from tollgate.services.operators import prune_sign_ins

    create_operator(db=db, clock=clock, name="ada", role="admin", password=PASSWORD)
    _sign_in(db, clock, settings)
    with pytest.raises(SignInRefused):
        _sign_in(db, clock, settings, password="wrong wrong wrong")
    assert prune_sign_ins(db=db, clock=clock, settings=settings) == 0
    clock.advance(timedelta(days=2))
    assert prune_sign_ins(db=db, clock=clock, settings=settings) == 3  # a session, two tries
